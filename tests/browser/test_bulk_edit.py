"""Browser journey of a bulk edit: help desk uploads a CSV with a bad line (reported by number, nothing to confirm),
uploads the corrected file, reads the preview, confirms with a reason and watches the batch's progress bar update by
polling, then pauses it. Each page is kept at 1,280 and 390 pixels wide."""

import django_rq
import pytest

from portal.roles import Role
from soa import jobs
from soa.choices import Authority, BatchState
from soa.models import ChangeBatch
from tests.soa.test_change_requests import accepted_domains_known_now
from tests.soa.test_wave_support import DOMAIN, SALES, make_mailbox
from writeback.jobs.change_batches import change_batch_job

pytestmark = pytest.mark.browser


@pytest.fixture
def tenant(transactional_db, settings):
    settings.CHANGE_APPLY_ENABLED = False  # the requests wait; the journey is the batch's, not the apply job's
    accepted_domains_known_now()
    yield {
        "ann": make_mailbox("Ann Archer", SALES, authority=Authority.CLOUD),
        "bob": make_mailbox("Bob Baker", SALES, authority=Authority.CLOUD),
    }
    django_rq.get_queue(jobs.QUEUE).empty()  # the batch's queued step: no worker here runs it


def _narrow(page, screenshot, label):
    page.set_viewport_size({"width": 390, "height": 844})
    screenshot(f"{label}-390")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"{label} is {width} px wide at 390"
    page.set_viewport_size({"width": 1280, "height": 800})


def test_helpdesk_uploads_previews_confirms_and_watches_a_bulk_edit(
    live_server, page, screenshot, make_user, sign_in, tenant, tmp_path
):
    make_user("helen", Role.HELPDESK, scopes=(SALES,))
    sign_in("helen")
    page.goto(f"{live_server.url}/bulk-edits/")
    screenshot("upload")
    _narrow(page, screenshot, "upload")

    bad = tmp_path / "edits.csv"
    bad.write_text(
        "mailbox,operation,attribute,value\n"
        f"ann.archer@{DOMAIN},add-alias,,ann.bulk@{DOMAIN}\n"
        f"nobody@{DOMAIN},hide,,\n"
        f"bob.baker@{DOMAIN},set,CustomAttribute3,Sales EMEA\n"
    )
    page.set_input_files("#id_file", str(bad))
    page.get_by_test_id("bulk-preview").click()
    problems = page.get_by_test_id("bulk-problems")
    problems.wait_for()
    assert "3" in problems.inner_text() and "unknown mailbox" in problems.inner_text()
    assert page.get_by_test_id("bulk-confirm").count() == 0
    screenshot("preview-with-problems")
    _narrow(page, screenshot, "preview-with-problems")

    page.goto(f"{live_server.url}/bulk-edits/")
    good = tmp_path / "edits-fixed.csv"
    good.write_text("\n".join(line for line in bad.read_text().splitlines() if "nobody" not in line) + "\n")
    page.set_input_files("#id_file", str(good))
    page.get_by_test_id("bulk-preview").click()
    page.get_by_test_id("bulk-lines").wait_for()
    assert "2 good lines for 2 mailboxes" in page.get_by_test_id("bulk-summary").inner_text()
    screenshot("preview")
    _narrow(page, screenshot, "preview")
    page.get_by_label("Reason for these changes (required)").fill("ticket 5150: sales reorganisation")
    page.get_by_test_id("bulk-confirm").click()
    page.get_by_test_id("batch-progress").wait_for()
    batch = ChangeBatch.objects.get()
    assert page.get_by_test_id("batch-created").inner_text() == "0"

    change_batch_job(batch.pk)  # the worker's step; the page learns of it by polling
    # A function, not a bare expression: Playwright evals an expression, which the page's CSP refuses.
    page.wait_for_function("() => document.querySelector('[data-testid=batch-created]').innerText === '2'")
    assert page.get_by_test_id("batch-state").inner_text() == "Running"
    screenshot("progress")
    _narrow(page, screenshot, "progress")
    page.get_by_test_id("batch-pause").click()
    page.get_by_test_id("batch-resume").wait_for()
    assert ChangeBatch.objects.get().state == BatchState.PAUSED
    screenshot("paused")
