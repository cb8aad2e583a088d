"""Pre-flight: every finding, the summary, the settings it reads, and the registry of on-prem consumers."""

import datetime as dt

import pytest
from django.utils import timezone

from portal.roles import Role
from soa import preflight
from soa.choices import Authority, ChangeRoute, ChangeState, WaveDirection, WaveState
from soa.models import ChangeRequest, ConsumerApplication, PilotWave
from soa.preflight import Code
from soa.services import SoaError
from soa.services.consumers import consumer_application_register, consumer_application_remove
from soa.services.waves import wave_preflight
from tests.soa.test_wave_support import cast, last_event, make_mailbox, new_wave, submitted_wave

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(make_user):
    return cast(make_user)


def _codes(report, mailbox) -> tuple[set[str], set[str]]:
    findings = report.members[mailbox.pk]
    return {f.code for f in findings.blocking}, {f.code for f in findings.warnings}


def _preflight(people, *mailboxes, direction=WaveDirection.TO_CLOUD):
    wave = new_wave(people["op"], *mailboxes, direction=direction, name=f"Check {PilotWave.objects.count()}")
    return wave_preflight(actor=people["op"], wave_id=wave.pk)


def test_a_ready_mailbox_has_no_findings(people):
    ann = make_mailbox("Ann Archer")
    report = _preflight(people, ann)
    assert _codes(report, ann) == (set(), set())
    assert report.summary() == {
        "members": 1, "eligible": 1, "blocked": 0, "with_warnings": 0, "blocking": {}, "warnings": {}
    }  # fmt: skip
    assert report.acknowledge() == []


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"is_dir_synced": False}, Code.NOT_DIR_SYNCED),
        ({"recipient_type_details": "MailUser"}, Code.UNSUPPORTED_RECIPIENT_TYPE),
        ({"recipient_type_details": ""}, Code.UNSUPPORTED_RECIPIENT_TYPE),
        ({"authority": Authority.CLOUD}, Code.ALREADY_IN_TARGET_STATE),
        ({"in_exo": False}, Code.MISSING_IN_EXO),
        ({"in_ad": False}, Code.MISSING_IN_AD),
        ({"exo_when_changed": timezone.now() - dt.timedelta(hours=3)}, Code.RECENT_ON_PREM_CHANGE),
    ],
)
def test_each_blocking_finding(people, fields, code):
    mailbox = make_mailbox("Ann Archer", **fields)
    report = _preflight(people, mailbox)
    blocking, _ = _codes(report, mailbox)
    assert blocking == {code}
    assert report.summary()["blocking"] == {code: 1} and report.eligible == 0


@pytest.mark.parametrize("rtype", sorted(preflight.SUPPORTED_RECIPIENT_TYPES))
def test_user_shared_room_and_equipment_mailboxes_are_supported(people, rtype):
    mailbox = make_mailbox("Ann Archer", recipient_type_details=rtype)
    assert _codes(_preflight(people, mailbox), mailbox) == (set(), set())


def test_already_in_target_state_depends_on_the_direction(people):
    cloud = make_mailbox("Ann Archer", authority=Authority.CLOUD)
    on_prem = make_mailbox("Bob Baker")
    report = _preflight(people, cloud, on_prem, direction=WaveDirection.TO_ON_PREM)
    assert _codes(report, on_prem)[0] == {Code.ALREADY_IN_TARGET_STATE}
    assert _codes(report, cloud)[0] == set()
    assert "Already mastered in Active Directory" in report.members[on_prem.pk].blocking[0].message


def test_quiet_period_message_setting_and_only_towards_the_cloud(people, settings):
    changed = timezone.now() - dt.timedelta(hours=20)
    mailbox = make_mailbox("Ann Archer", exo_when_changed=changed)
    report = _preflight(people, mailbox)
    (finding,) = report.members[mailbox.pk].blocking
    assert finding.code == Code.RECENT_ON_PREM_CHANGE and "within the quiet period of 24.5 hours" in finding.message
    assert finding.detail["eligible_from"] == (changed + dt.timedelta(hours=24.5)).isoformat()
    settings.WAVE_QUIET_PERIOD_HOURS = 12
    assert _codes(_preflight(people, mailbox), mailbox) == (set(), set())
    settings.WAVE_QUIET_PERIOD_HOURS = 24.5
    cloud = make_mailbox("Bob Baker", authority=Authority.CLOUD, exo_when_changed=timezone.now())
    assert _codes(_preflight(people, cloud, direction=WaveDirection.TO_ON_PREM), cloud) == (set(), set())


def test_unknown_last_change_is_a_warning(people):
    mailbox = make_mailbox("Ann Archer", exo_when_changed=None)
    report = _preflight(people, mailbox)
    assert _codes(report, mailbox) == (set(), {Code.LAST_CHANGE_UNKNOWN})
    assert report.acknowledge() == [Code.LAST_CHANGE_UNKNOWN]


def test_member_of_another_submitted_wave_is_blocked_but_drafts_do_not_claim(people):
    ann = make_mailbox("Ann Archer")
    draft = new_wave(people["op2"], ann, name="Sketch")
    report = _preflight(people, ann)
    assert _codes(report, ann)[0] == set()
    submitted_wave(people["op2"], ann, name="Committed")
    report = _preflight(people, ann)
    (finding,) = report.members[ann.pk].blocking
    assert finding.code == Code.IN_OTHER_WAVE and finding.message == "Already in the open wave “Committed”."
    # the draft's own pre-flight sees the submitted wave too; its own membership never counts
    assert _codes(wave_preflight(actor=people["op"], wave_id=draft.pk), ann)[0] == {Code.IN_OTHER_WAVE}
    PilotWave.objects.filter(name="Committed").update(state=WaveState.COMPLETED)
    assert _codes(_preflight(people, ann), ann)[0] == set()


def test_a_mailbox_with_an_open_change_request_is_blocked_until_it_is_finished(people):
    ann = make_mailbox("Ann Archer")
    ChangeRequest.objects.create(
        mailbox=ann, requested_by=people["helpdesk"], base_version=ann.version, state=ChangeState.PENDING_APPROVAL,
        route=ChangeRoute.AD_ONLY, idempotency_key="form-1",
    )  # fmt: skip
    report = _preflight(people, ann)
    (finding,) = report.members[ann.pk].blocking
    assert finding.code == Code.OPEN_CHANGE_REQUEST and finding.detail["state"] == "PENDING_APPROVAL"
    assert "is waiting for approval; it must be applied, rejected or cancelled" in finding.message
    ChangeRequest.objects.update(state=ChangeState.APPLIED)
    assert _codes(_preflight(people, ann), ann)[0] == set()


def test_differences_towards_the_cloud_list_both_values(people):
    mailbox = make_mailbox("Ann Archer")
    mailbox.ad_values = {**mailbox.ad_values, "CustomAttribute1": "contractor", "Alias": "ann"}
    mailbox.save()
    report = _preflight(people, mailbox)
    (finding,) = report.members[mailbox.pk].warnings
    assert finding.code == Code.EXO_VALUES_WIN
    assert "differ on CustomAttribute1, Alias: Exchange Online's values become authoritative" in finding.message
    assert finding.detail["differences"] == [
        {"attribute": "CustomAttribute1", "ad_name": "extensionAttribute1", "exo": "staff", "ad": "contractor"},
        {"attribute": "Alias", "ad_name": "mailNickname", "exo": "ann.archer", "ad": "ann"},
    ]


def test_differences_back_to_ad_say_ad_would_overwrite(people):
    mailbox = make_mailbox("Ann Archer", authority=Authority.CLOUD)
    mailbox.exo_values = {**mailbox.exo_values, "CustomAttribute1": "edited in the cloud"}
    mailbox.save()
    report = _preflight(people, mailbox, direction=WaveDirection.TO_ON_PREM)
    (finding,) = report.members[mailbox.pk].warnings
    assert finding.code == Code.AD_VALUES_WIN and "AD's values would overwrite Exchange Online's" in finding.message
    assert finding.detail["differences"][0]["exo"] == "edited in the cloud"


def test_the_moera_is_not_a_difference(people):
    mailbox = make_mailbox("Ann Archer")
    mailbox.exo_values = {
        **mailbox.exo_values,
        "EmailAddresses": [*mailbox.exo_values["EmailAddresses"], "smtp:ann.archer@corp.onmicrosoft.com"],
    }
    mailbox.save()
    assert _codes(_preflight(people, mailbox), mailbox) == (set(), set())


def test_cloud_managed_ceiling_warns_near_it_and_blocks_above_it(people, settings):
    for index in range(3):
        make_mailbox(f"Cloud {index}", authority=Authority.CLOUD)
    members = [make_mailbox(f"Ann {index}") for index in range(2)]
    settings.WAVE_CLOUD_MANAGED_CEILING = 5
    report = _preflight(people, *members)
    (warning,) = report.wave.warnings
    assert warning.code == Code.CLOUD_MANAGED_NEAR_CEILING and warning.detail["after"] == 5
    assert report.as_json()["acknowledge"] == [Code.CLOUD_MANAGED_NEAR_CEILING]
    settings.WAVE_CLOUD_MANAGED_CEILING = 4
    report = _preflight(people, *members)
    (blocking,) = report.wave.blocking
    assert blocking.code == Code.CLOUD_MANAGED_CEILING_EXCEEDED
    assert blocking.message == (
        "The tenant would have 5 cloud-managed mailboxes, above the ceiling of 4; remove at least 1 members."
    )
    settings.WAVE_CLOUD_MANAGED_CEILING = 1000
    assert not _preflight(people, *members).wave.warnings


def test_ceiling_counts_members_pending_in_other_waves_to_the_cloud(people, settings):
    settings.WAVE_CLOUD_MANAGED_CEILING = 3
    submitted_wave(people["op2"], make_mailbox("Bob Baker"), make_mailbox("Bea Best"), name="Earlier")
    report = _preflight(people, make_mailbox("Ann Archer"), make_mailbox("Abe Ames"))
    assert report.wave.blocking[0].detail == {
        "after": 4, "ceiling": 3, "now": 0, "pending_elsewhere": 2, "this_wave": 2
    }  # fmt: skip


def test_waves_back_to_ad_have_no_ceiling_finding(people, settings):
    settings.WAVE_CLOUD_MANAGED_CEILING = 0
    mailbox = make_mailbox("Ann Archer", authority=Authority.CLOUD)
    report = _preflight(people, mailbox, direction=WaveDirection.TO_ON_PREM)
    assert not report.wave.blocking and not report.wave.warnings


def test_consumer_attributes_not_written_back_are_warned_per_member(people, make_user, settings):
    admin = make_user("root", Role.ADMIN)
    phone_book = ["MSEXCHHIDEFROMADDRESSLISTS", "extensionAttribute1", "title"]
    consumer_application_register(actor=admin, name="Phone book", attributes=phone_book)
    consumer_application_register(
        actor=admin, name="HR sync", attributes=["mailNickname", "msExchHideFromAddressLists"]
    )
    ann, bob = make_mailbox("Ann Archer"), make_mailbox("Bob Baker")
    report = _preflight(people, ann, bob)
    findings = report.members[ann.pk].warnings
    assert [(f.detail["attribute"], f.detail["applications"]) for f in findings] == [
        ("mailNickname", ["HR sync"]),
        ("msExchHideFromAddressLists", ["HR sync", "Phone book"]),
    ]  # extensionAttribute1 is written back; title is an identity attribute outside the map
    assert "msExchHideFromAddressLists is read from AD by HR sync, Phone book" in findings[1].message
    assert report.summary()["warnings"] == {Code.CONSUMER_ATTRIBUTE_STALE: 2}
    settings.WRITEBACK_HIDE_FROM_ADDRESS_LISTS = True  # this installation now writes it back
    report = _preflight(people, ann)
    assert [f.detail["attribute"] for f in report.members[ann.pk].warnings] == ["mailNickname"]
    cloud = make_mailbox("Cid Cole", authority=Authority.CLOUD)
    assert _codes(_preflight(people, cloud, direction=WaveDirection.TO_ON_PREM), cloud) == (set(), set())


def test_all_checks_run_and_summary_counts_members_per_code(people):
    broken = make_mailbox("Ann Archer", is_dir_synced=False, in_ad=False, recipient_type_details="MailUser")
    warned = make_mailbox("Bob Baker", exo_when_changed=None)
    fine = make_mailbox("Cid Cole")
    report = _preflight(people, broken, warned, fine)
    assert _codes(report, broken)[0] == {Code.NOT_DIR_SYNCED, Code.MISSING_IN_AD, Code.UNSUPPORTED_RECIPIENT_TYPE}
    summary = report.summary()
    assert summary["members"] == 3 and summary["eligible"] == 2 and summary["blocked"] == 1
    assert summary["with_warnings"] == 1
    assert summary["blocking"] == {"MISSING_IN_AD": 1, "NOT_DIR_SYNCED": 1, "UNSUPPORTED_RECIPIENT_TYPE": 1}
    assert summary["warnings"] == {"LAST_CHANGE_UNKNOWN": 1}


def test_warnings_of_blocked_members_need_no_acknowledgement(people):
    blocked = make_mailbox("Ann Archer", in_ad=False, exo_when_changed=None)
    report = _preflight(people, blocked, make_mailbox("Bob Baker"))
    assert report.members[blocked.pk].warnings and report.acknowledge() == []


def test_preflight_reads_waves_only_for_wave_viewers_and_open_waves(people):
    wave = new_wave(people["op"], make_mailbox("Ann Archer"))
    with pytest.raises(SoaError, match="do not allow reading pilot waves"):
        wave_preflight(actor=people["helpdesk"], wave_id=wave.pk)
    assert wave_preflight(actor=people["approver"], wave_id=wave.pk).eligible == 1
    PilotWave.objects.filter(pk=wave.pk).update(state=WaveState.CANCELLED)
    with pytest.raises(SoaError, match="is cancelled; its frozen report is final"):
        wave_preflight(actor=people["op"], wave_id=wave.pk)
    with pytest.raises(SoaError, match="no pilot wave #0"):
        wave_preflight(actor=people["op"], wave_id=0)


def test_preflight_saves_nothing(people):
    wave = new_wave(people["op"], make_mailbox("Ann Archer", in_ad=False))
    wave_preflight(actor=people["op"], wave_id=wave.pk)
    wave.refresh_from_db()
    member = wave.members.get()
    assert wave.preflight_report == {} and member.preflight == {} and not member.excluded and wave.version == 2


# -- the registry of consumer applications ---------------------------------------------------------------------


def test_register_replace_and_remove_a_consumer_application_with_audit(make_user):
    admin = make_user("root", Role.ADMIN)
    attributes = ["msexchhidefromaddresslists", "customLdapAttr", " ", "mailnickname"]
    app = consumer_application_register(actor=admin, name=" Phone  book ", attributes=attributes, notes="GAL flags")
    assert app.name == "Phone book" and app.attributes == [
        "customLdapAttr",
        "mailNickname",
        "msExchHideFromAddressLists",
    ]
    event = last_event("soa.consumer_application.registered", app)
    assert event.before is None and event.after["attributes"] == app.attributes
    again = consumer_application_register(actor=admin, name="PHONE BOOK", attributes=["mail"])
    assert again.pk == app.pk and again.attributes == ["mail"] and ConsumerApplication.objects.count() == 1
    assert last_event("soa.consumer_application.registered", app).before["attributes"] == app.attributes
    consumer_application_remove(actor=admin, application_id=app.pk, reason="retired")
    assert not ConsumerApplication.objects.exists()
    assert last_event("soa.consumer_application.removed").reason == "retired"


@pytest.mark.parametrize(
    ("name", "attributes", "message"),
    [("", ["mail"], "Give the application's name"), ("App", [], "at least one AD attribute"),
     ("App", ["mail", "bad name", "1x"], "Not LDAP attribute names: 'bad name', '1x'")],
)  # fmt: skip
def test_register_refuses_bad_input(make_user, name, attributes, message):
    with pytest.raises(SoaError, match=message):
        consumer_application_register(actor=make_user("root", Role.ADMIN), name=name, attributes=attributes)


def test_only_administrators_keep_the_registry(people):
    with pytest.raises(SoaError, match="do not allow configuring the portal"):
        consumer_application_register(actor=people["op"], name="App", attributes=["mail"])
    with pytest.raises(SoaError, match="do not allow configuring the portal"):
        consumer_application_remove(actor=people["approver"], application_id=1)


def test_the_quiet_period_rule_runs_from_the_latest_known_change():
    """exchange-facts §1.3: wait a sync cycle plus 24 hours after the last on-premises change. One rule for
    pre-flight and for the runner's re-check before each flip: the latest change time that is known counts."""
    quiet = dt.timedelta(hours=24.5)
    exo = dt.datetime(2026, 9, 1, 8, 0, tzinfo=dt.UTC)
    ad = dt.datetime(2026, 9, 1, 9, 30, tzinfo=dt.UTC)
    assert preflight.quiet_period_end([exo, ad], quiet) == (ad, ad + quiet)
    assert preflight.quiet_period_end([exo, None], quiet) == (exo, exo + quiet)
    assert preflight.quiet_period_end([None, None], quiet) is None
    text = preflight.quiet_period_refusal(ad, ad + quiet, quiet)
    assert "within the quiet period of 24.5 hours" in text and "it can move from 2026-09-02 10:00 UTC" in text
