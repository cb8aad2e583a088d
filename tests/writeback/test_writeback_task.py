"""Writeback tasks against a private slapd, the test database and Redis: the job brings AD to the cloud's values
with a minimal modify, writes nothing when AD already agrees, lets a newer request supersede a queued one, retries
through a directory outage, fails permanently with the directory's message (and can be retried), and reports a
direct AD edit as drift before writing the cloud's value over it. Jobs are run here, explicitly, one delivery at a
time (writeback_task_job, as a worker would), so retries are driven by the test rather than by the clock.
"""

import datetime as dt
import uuid

import django_rq
import ldap3
import pytest
from django.utils import timezone
from django.utils.module_loading import import_string

from portal.audit import verify_chain
from portal.models import AuditEvent
from portal.roles import Role
from soa import jobs
from soa.models import Mailbox
from tests.writeback.writeback_support import MOERA_DOMAIN, cloud_mailbox, start_directory
from writeback.jobs import writeback as job
from writeback.jobs.lifecycle import WRITEBACK_RETRY, complete
from writeback.jobs.sweep import sweep_job
from writeback.models import DriftFinding, WritebackTask
from writeback.tasks import WritebackError, writeback_task_request, writeback_task_retry

pytestmark = pytest.mark.django_db(transaction=True)

State = WritebackTask.State
WATCHED = ("proxyAddresses", "mail", "extensionAttribute3", "extensionAttribute4", "msExchExtensionCustomAttribute2",
           "msExchHideFromAddressLists", "displayName", "mailNickname", "userPrincipalName", "department")  # fmt: skip


@pytest.fixture(scope="module")
def ad(tmp_path_factory):
    directory = start_directory(tmp_path_factory.mktemp("writeback-slapd"))
    yield directory
    directory.stop()


@pytest.fixture(autouse=True)
def _stack(ad, settings):
    if not ad.instance.is_running():
        ad.start()  # a test that stopped it failed before starting it again
    ad.point_settings(settings)
    queue = django_rq.get_queue(jobs.WRITEBACK_QUEUE)
    queue.empty()
    for job_id in queue.scheduled_job_registry.get_job_ids():
        queue.scheduled_job_registry.remove(job_id, delete_job=True)
    yield
    queue.empty()


def modifies() -> int:
    return job.directory_client().requests["modify"]


def request(mailbox: Mailbox, source: str = "manual", **values) -> WritebackTask:
    """The cloud edited (the portal's picture of it updated, as the apply job does after its re-read), then the
    writeback of the cloud's values requested."""
    mailbox.refresh_from_db()
    desired = {**mailbox.exo_values, **values}
    Mailbox.objects.filter(pk=mailbox.pk).update(exo_values=desired)
    return writeback_task_request(mailbox_id=mailbox.pk, desired=desired, source=source)


def events(action: str, task: WritebackTask) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action, object_id=str(task.pk), object_type="writeback.writebacktask"))


def test_the_job_name_resolves_to_the_function_a_worker_runs():
    assert import_string(jobs.WRITEBACK_TASK_JOB) is job.writeback_task_job


def test_a_task_brings_ad_to_the_cloud_values_with_one_minimal_modify_and_leaves_the_rest(ad):
    mailbox = cloud_mailbox()
    alias = f"smtp:help-{uuid.uuid4().hex[:6]}@corp.example.com"
    before = ad.read(mailbox.ad_guid, *WATCHED)
    sent = modifies()
    task = request(
        mailbox, EmailAddresses=[*mailbox.exo_values["EmailAddresses"], alias], CustomAttribute3="CC-42",
        ExtensionCustomAttribute2=["blue", "green"], HiddenFromAddressListsEnabled=True,
        DisplayName="Renamed in the cloud", UserPrincipalName="someone.else@corp.example.com", Alias="renamed",
    )  # fmt: skip
    assert "DisplayName" not in task.desired  # identity attributes are never written back

    assert job.writeback_task_job(task.pk) == State.DONE
    after = ad.read(mailbox.ad_guid, *WATCHED)
    assert sorted(after["proxyAddresses"]) == sorted([*before["proxyAddresses"], alias])
    assert not any(MOERA_DOMAIN in value for value in after["proxyAddresses"])  # never the MOERA
    assert after["extensionAttribute3"] == ["CC-42"]
    assert sorted(after["msExchExtensionCustomAttribute2"]) == ["blue", "green"]
    # Identity attributes, Alias (not written back) and, without the opt-in, hide-from-address-lists are untouched.
    for name in ("displayName", "userPrincipalName", "mailNickname", "department", "mail", "extensionAttribute4",
                 "msExchHideFromAddressLists"):  # fmt: skip
        assert after[name] == before[name], name
    assert modifies() - sent == 1
    task.refresh_from_db()
    assert task.attempts == 1 and task.error == "" and task.finished_at is not None
    assert task.applied == {
        "proxyAddresses": [["MODIFY_ADD", [alias]]],
        "extensionAttribute3": [["MODIFY_REPLACE", ["CC-42"]]],
        "msExchExtensionCustomAttribute2": [["MODIFY_ADD", ["blue", "green"]]],
    }
    assert task.observed["extensionAttribute3"] is None and task.read_back["extensionAttribute3"] == "CC-42"
    assert "msExchHideFromAddressLists" not in task.applied and "displayName" not in task.observed
    mailbox.refresh_from_db()
    assert mailbox.ad_values["CustomAttribute3"] == "CC-42" and alias in mailbox.ad_values["EmailAddresses"]
    assert "CustomAttribute3" not in mailbox.drift
    trail = AuditEvent.objects.filter(object_id=str(task.pk), object_type="writeback.writebacktask").order_by("id")
    assert [e.action.rpartition(".")[2] for e in trail] == ["requested", "started", "completed"]
    assert events("writeback.task.completed", task)[0].after["applied"] == task.applied
    assert not DriftFinding.objects.filter(mailbox=mailbox).exists()
    assert verify_chain()[1] is None


def test_hide_from_address_lists_is_written_back_only_with_its_opt_in(ad, settings):
    mailbox = cloud_mailbox()
    settings.WRITEBACK_HIDE_FROM_ADDRESS_LISTS = False
    before = ad.read(mailbox.ad_guid, "msExchHideFromAddressLists")["msExchHideFromAddressLists"]
    assert before in ([], ["FALSE"])  # some sandbox users carry an explicit FALSE
    job.writeback_task_job(request(mailbox, HiddenFromAddressListsEnabled=True).pk)
    assert ad.read(mailbox.ad_guid, "msExchHideFromAddressLists")["msExchHideFromAddressLists"] == before

    settings.WRITEBACK_HIDE_FROM_ADDRESS_LISTS = True
    task = request(mailbox, HiddenFromAddressListsEnabled=True)
    assert job.writeback_task_job(task.pk) == State.DONE
    assert ad.read(mailbox.ad_guid, "msExchHideFromAddressLists")["msExchHideFromAddressLists"] == ["TRUE"]
    assert WritebackTask.objects.get(pk=task.pk).applied == {"msExchHideFromAddressLists": [["MODIFY_REPLACE", [True]]]}


def test_running_it_twice_writes_nothing_the_second_time(ad):
    mailbox = cloud_mailbox()
    first = request(mailbox, CustomAttribute3="twice")
    assert job.writeback_task_job(first.pk) == State.DONE
    assert job.writeback_task_job(first.pk) is None  # a second delivery of the same job finds it ended
    sent = modifies()
    mailbox.refresh_from_db()
    again = request(mailbox, CustomAttribute3="twice")
    assert job.writeback_task_job(again.pk) == State.DONE
    assert modifies() == sent
    again.refresh_from_db()
    assert again.applied == {} and again.read_back["extensionAttribute3"] == "twice"
    assert ad.read(mailbox.ad_guid, "extensionAttribute3")["extensionAttribute3"] == ["twice"]


def test_a_newer_request_supersedes_a_queued_one_and_only_the_newer_values_are_written(ad):
    mailbox = cloud_mailbox()
    older = request(mailbox, CustomAttribute3="older", ExtensionCustomAttribute2=["old"])
    newer = request(mailbox, CustomAttribute3="newer", ExtensionCustomAttribute2=["new"])
    older.refresh_from_db()
    assert older.state == State.SUPERSEDED and older.superseded_by_id == newer.pk
    (event,) = events("writeback.task.superseded", older)
    assert event.before["state"] == State.QUEUED and event.after["superseded_by"] == newer.pk
    sent = modifies()

    # The superseded task's job does not write it; its batch takes the newer task, which is due.
    assert job.writeback_task_job(older.pk) is None
    assert WritebackTask.objects.get(pk=newer.pk).state == State.DONE
    assert WritebackTask.objects.get(pk=older.pk).attempts == 0
    assert job.writeback_task_job(newer.pk) is None  # the newer task's own job finds it ended
    assert modifies() - sent == 1
    values = ad.read(mailbox.ad_guid, "extensionAttribute3", "msExchExtensionCustomAttribute2")
    assert values == {"extensionAttribute3": ["newer"], "msExchExtensionCustomAttribute2": ["new"]}


def test_a_request_made_while_a_task_runs_waits_for_it_and_runs_after(ad):
    mailbox = cloud_mailbox()
    running = job.claim(request(mailbox, CustomAttribute3="first").pk)
    waiting = request(mailbox, CustomAttribute3="second")
    assert job.writeback_task_job(waiting.pk) is None  # not while the first one writes the same entry
    assert WritebackTask.objects.get(pk=waiting.pk).state == State.QUEUED

    queue = django_rq.get_queue(jobs.WRITEBACK_QUEUE)
    queue.empty()
    complete(job.WRITEBACK, running)  # the first ends, and queues the one that waited
    assert [queued.args for queued in queue.jobs] == [(waiting.pk,)]
    assert job.writeback_task_job(waiting.pk) == State.DONE
    assert ad.read(mailbox.ad_guid, "extensionAttribute3")["extensionAttribute3"] == ["second"]


def test_the_directory_stopped_during_a_writeback_releases_the_task_and_it_completes_when_it_is_back(ad, monkeypatch):
    mailbox = cloud_mailbox()
    alias = "smtp:outage@corp.example.com"
    task = request(mailbox, EmailAddresses=[*mailbox.exo_values["EmailAddresses"], alias], CustomAttribute3="outage")
    real_plan = job.ad_desired
    stopped = []

    def stop_after_the_read(desired, observed):
        if not stopped:  # the read has just succeeded; the directory goes away before the modify
            ad.stop()
            stopped.append(True)
        return real_plan(desired, observed)

    monkeypatch.setattr(job, "ad_desired", stop_after_the_read)
    assert job.writeback_task_job(task.pk) == State.QUEUED
    task.refresh_from_db()
    assert stopped and task.attempts == 1 and task.retry_at is not None and task.finished_at is None
    assert "unreachable" in task.error and task.observed["extensionAttribute3"] is None
    (released,) = events("writeback.task.released", task)
    assert released.after["retry_at"] == task.retry_at.isoformat()
    # Rescheduled in RQ (for a worker with the scheduler), not slept on.
    scheduled = django_rq.get_queue(jobs.WRITEBACK_QUEUE).scheduled_job_registry.get_job_ids()
    assert task.job_id in scheduled

    assert job.writeback_task_job(task.pk) == State.QUEUED  # still down: another attempt, a longer wait
    second = WritebackTask.objects.get(pk=task.pk)
    assert second.attempts == 2 and second.retry_at > task.retry_at
    assert (second.retry_at - second.heartbeat_at).total_seconds() >= WRITEBACK_RETRY.delay(2)

    ad.start()
    assert job.writeback_task_job(task.pk) == State.DONE
    values = ad.read(mailbox.ad_guid, "proxyAddresses", "extensionAttribute3")
    assert alias in values["proxyAddresses"] and values["extensionAttribute3"] == ["outage"]
    assert sorted(values["proxyAddresses"]) == sorted([*mailbox.ad_values["EmailAddresses"], alias])  # nothing lost
    assert WritebackTask.objects.get(pk=task.pk).attempts == 3
    assert len(events("writeback.task.released", task)) == 2 and len(events("writeback.task.completed", task)) == 1


def test_the_retry_policy_gives_up_after_its_last_attempt(ad):
    mailbox = cloud_mailbox()
    task = request(mailbox, CustomAttribute3="never")
    ad.stop()
    try:
        for _ in range(WRITEBACK_RETRY.max_attempts):
            state = job.writeback_task_job(task.pk)
    finally:
        ad.start()
    assert state == State.FAILED
    task.refresh_from_db()
    assert task.error.startswith(f"Gave up after {WRITEBACK_RETRY.max_attempts} attempts.")
    assert "unreachable" in task.error


def test_a_permanent_error_fails_with_the_directorys_message_and_help_desk_in_scope_can_retry_it(ad, make_user):
    mailbox = cloud_mailbox()
    right = mailbox.ad_guid
    Mailbox.objects.filter(pk=mailbox.pk).update(ad_guid=uuid.uuid4())  # paired with a user AD does not have
    task = request(mailbox, CustomAttribute3="after the fix")
    assert job.writeback_task_job(task.pk) == State.FAILED
    task.refresh_from_db()
    assert task.error.startswith("No directory entry under") and "has objectGUID" in task.error
    assert task.attempts == 1 and events("writeback.task.failed", task)[0].reason == task.error

    outsider = make_user("olaf", Role.HELPDESK, scopes=("OU=Nowhere,DC=corp,DC=example,DC=com",))
    with pytest.raises(WritebackError, match="Only help desk for this mailbox's OU"):
        writeback_task_retry(task_id=task.pk, actor=outsider)
    Mailbox.objects.filter(pk=mailbox.pk).update(ad_guid=right)  # the pairing is corrected
    helpdesk = make_user("hanna", Role.HELPDESK, scopes=(mailbox.ou_norm,))
    retried = writeback_task_retry(task_id=task.pk, actor=helpdesk, reason="pairing fixed")
    assert retried.state == State.QUEUED and retried.attempts == 0 and retried.error == ""
    (event,) = events("writeback.task.retried", task)
    assert event.actor == helpdesk and event.reason == "pairing fixed" and event.before["state"] == State.FAILED
    assert job.writeback_task_job(task.pk) == State.DONE
    assert ad.read(right, "extensionAttribute3")["extensionAttribute3"] == ["after the fix"]
    with pytest.raises(WritebackError, match="only a failed writeback"):
        writeback_task_retry(task_id=task.pk, actor=make_user("adam", Role.ADMIN))


def test_an_older_failed_task_cannot_be_retried_over_a_newer_one(ad, make_user):
    mailbox = cloud_mailbox()
    right = mailbox.ad_guid
    Mailbox.objects.filter(pk=mailbox.pk).update(ad_guid=uuid.uuid4())
    failed = request(mailbox, CustomAttribute3="old")
    job.writeback_task_job(failed.pk)
    Mailbox.objects.filter(pk=mailbox.pk).update(ad_guid=right)
    job.writeback_task_job(request(mailbox, CustomAttribute3="new").pk)
    with pytest.raises(WritebackError, match="A newer writeback"):
        writeback_task_retry(task_id=failed.pk, actor=make_user("adam", Role.ADMIN))
    assert ad.read(right, "extensionAttribute3")["extensionAttribute3"] == ["new"]


def test_a_direct_ad_edit_becomes_a_drift_finding_and_is_then_overwritten_with_the_cloud_value(ad):
    mailbox = cloud_mailbox()
    known = mailbox.ad_values["CustomAttribute4"]
    ad.edit(mailbox.ad_guid, {"extensionAttribute4": [(ldap3.MODIFY_REPLACE, ["edited in AD"])]})
    task = request(mailbox, CustomAttribute4="the cloud's", CustomAttribute3="unrelated edit")
    assert job.writeback_task_job(task.pk) == State.DONE

    (finding,) = DriftFinding.objects.filter(mailbox=mailbox)
    assert (finding.attribute, finding.ad_value, finding.last_known_value, finding.cloud_value) == (
        "CustomAttribute4", "edited in AD", known, "the cloud's",
    )  # fmt: skip
    assert finding.task_id == task.pk and finding.resolution == DriftFinding.Resolution.OVERWRITTEN
    assert finding.resolved_at is not None
    assert ad.read(mailbox.ad_guid, "extensionAttribute4")["extensionAttribute4"] == ["the cloud's"]
    found = AuditEvent.objects.get(action="writeback.drift.found", object_id=str(finding.pk))
    resolved = AuditEvent.objects.get(action="writeback.drift.resolved", object_id=str(finding.pk))
    assert found.after["ad_value"] == "edited in AD" and resolved.after["resolution"] == "OVERWRITTEN"
    assert found.id < resolved.id < events("writeback.task.completed", task)[0].id
    # The portal's own writes are not drift: the next task finds AD as the last one left it.
    mailbox.refresh_from_db()
    job.writeback_task_job(request(mailbox, CustomAttribute4="the cloud's again").pk)
    assert DriftFinding.objects.filter(mailbox=mailbox).count() == 1


def test_a_request_names_only_properties_the_portal_knows(ad):
    mailbox = cloud_mailbox()
    with pytest.raises(WritebackError, match="CustomAtribute3"):
        writeback_task_request(mailbox_id=mailbox.pk, desired={"CustomAtribute3": "x"}, source="manual")
    assert not WritebackTask.objects.filter(mailbox=mailbox).exists()


def test_the_periodic_sweep_returns_a_task_whose_heartbeat_stopped_and_it_completes(ad):
    mailbox = cloud_mailbox()
    task = request(mailbox, CustomAttribute3="swept")
    job.claim(task.pk)  # a worker claimed it, then died
    stopped = timezone.now() - job.STALE_AFTER - dt.timedelta(seconds=1)
    WritebackTask.objects.filter(pk=task.pk).update(heartbeat_at=stopped)
    sweep_job()
    swept = WritebackTask.objects.get(pk=task.pk)
    assert swept.state == State.QUEUED and swept.error.startswith("Its worker stopped") and swept.retry_at
    assert job.writeback_task_job(task.pk) == State.DONE
    assert ad.read(mailbox.ad_guid, "extensionAttribute3")["extensionAttribute3"] == ["swept"]


def test_a_stale_task_is_superseded_by_a_newer_request_queued_behind_it(ad):
    mailbox = cloud_mailbox()
    task = request(mailbox, CustomAttribute3="stale")
    job.claim(task.pk)
    newer = request(mailbox, CustomAttribute3="newest")
    assert job.writeback_sweep(older_than_seconds=0) == [task.pk]
    task.refresh_from_db()
    assert task.state == State.SUPERSEDED and task.superseded_by_id == newer.pk
    assert job.writeback_task_job(newer.pk) == State.DONE
    assert ad.read(mailbox.ad_guid, "extensionAttribute3")["extensionAttribute3"] == ["newest"]


def test_queueing_a_task_leaves_its_row_alone_so_an_idle_workers_claim_cannot_pass_it_by(ad):
    # The claim skips a locked row (skip_locked); an update of the row just after queueing its job could hold it at
    # the moment an idle worker claims it, leaving the task QUEUED with its job spent. The claim records the job id.
    from rq import SimpleWorker

    mailbox = cloud_mailbox()
    task = request(mailbox, CustomAttribute3="idle worker")  # queued after the commit
    assert WritebackTask.objects.get(pk=task.pk).job_id == ""
    queue = django_rq.get_queue(jobs.WRITEBACK_QUEUE)
    (queued,) = queue.jobs
    SimpleWorker([queue], connection=queue.connection).work(burst=True)
    done = WritebackTask.objects.get(pk=task.pk)
    assert done.state == State.DONE and done.job_id == queued.id
