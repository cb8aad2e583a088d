"""The background job dashboard (django-rq) is read-only: every control that would change Redis is refused."""

import django_rq
import pytest
from django.urls import reverse
from django_rq.urls import get_admin_urlpatterns

from portal.roles import Role

# Values for every parameter a django-rq dashboard URL takes; queue 1 is "writeback" (queues are numbered by name).
_ARGUMENTS = {
    "queue_index": 1,
    "result_id": "r",
    "key": "k",
    "scheduler_index": 0,
    "connection_index": 0,
    "scheduler_name": "s",
    "cron_job_name": "c",
}


@pytest.fixture
def writeback_queue():
    queue = django_rq.get_queue("writeback", commit_mode="auto")
    queue.empty()
    yield queue
    queue.empty()


def _dashboard_urls(job_id: str) -> list[str]:
    urls = []
    for pattern in get_admin_urlpatterns():
        names = pattern.pattern.converters.keys()
        kwargs = {name: job_id if name == "job_id" else _ARGUMENTS[name] for name in names}
        urls.append(reverse(f"django_rq:{pattern.name}", kwargs=kwargs))
    return urls


@pytest.mark.django_db
def test_every_post_to_the_job_dashboard_is_refused_and_changes_nothing(client, make_user, writeback_queue):
    job = writeback_queue.enqueue("builtins.print", "never run")
    client.force_login(make_user("root", Role.ADMIN))
    urls = _dashboard_urls(job.id)
    # The controls the issue named are among them: empty, requeue-all, delete, stop, enqueue and the bulk actions.
    for control in ("empty/", "requeue-all/", "delete/", "stop/", "enqueue/", "requeue/", "actions/1/"):
        assert any(url.endswith(control) for url in urls), control
    for url in urls:
        # The bulk-action form's own fields, so a view that looked at them would act if it were reached.
        response = client.post(url, {"action": "delete", "job_ids": [job.id], "_selected_action": [job.id]})
        assert response.status_code == 403, url
        assert "dashboard is read-only" in response.content.decode(), url
    assert writeback_queue.job_ids == [job.id]
    assert writeback_queue.fetch_job(job.id).get_status() == "queued"


@pytest.mark.django_db
def test_the_refusal_comes_before_django_rqs_own_checks_but_after_the_role_check(client, make_user, writeback_queue):
    job = writeback_queue.enqueue("builtins.print", "never run")
    url = reverse("django_rq:clear", kwargs={"queue_index": 1})
    response = client.post(url)
    assert response.status_code == 302 and response.url.startswith("/login/")
    client.force_login(make_user("audrey", Role.AUDITOR))
    assert client.post(url).status_code == 403
    assert writeback_queue.job_ids == [job.id]


@pytest.mark.django_db
def test_reading_the_dashboard_still_works(client, make_user, writeback_queue):
    job = writeback_queue.enqueue("builtins.print", "never run")
    client.force_login(make_user("root", Role.ADMIN))
    for name, kwargs in [
        ("home", {}),
        ("jobs", {"queue_index": 1}),
        ("job_detail", {"queue_index": 1, "job_id": job.id}),
    ]:
        assert client.get(reverse(f"django_rq:{name}", kwargs=kwargs)).status_code == 200, name


@pytest.mark.django_db
def test_the_job_dashboard_says_what_it_is_and_leads_back_to_the_portal(client, make_user):
    client.force_login(make_user("root", Role.ADMIN))
    html = client.get("/jobs/").content.decode()
    assert "Background jobs: a read-only view of the work queues" in html
    assert '<a class="back-to-portal" href="/">Back to the portal</a>' in html and "portal/jobs" in html
    assert "Django administration" not in html
