"""A wave's member list is bounded: its bytes (declared and read) and its lines are capped by settings, it is read
and looked up before the wave is locked, and a list with many bad lines shows the first 100 with a count of the rest.
"""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.urls import reverse

from soa.services import SoaError
from soa.services.wave_members import PROBLEMS_SHOWN, CsvImportError, wave_add_from_csv
from soa.wave_csv import CsvInputError, upload_lines
from tests.soa.test_wave_support import cast, events, make_mailbox, new_wave, page_text, signed_in

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(make_user):
    return cast(make_user)


def test_a_list_past_the_line_limit_is_refused_and_adds_nothing(client, people, settings):
    settings.WAVE_CSV_MAX_LINES = 5
    wave = new_wave(people["op"])
    upns = "".join(f"{make_mailbox(f'User {n}').upn}\n" for n in range(5))
    text = "# comment lines, blank lines and the header do not count\n\nUPN\n" + upns
    assert wave_add_from_csv(actor=people["op"], wave_id=wave.pk, text=text).changed == 5
    too_many = "\n".join(f"user{n}@corp.example.com" for n in range(6))
    other = new_wave(people["op"], name="Other")
    with pytest.raises(SoaError, match="The list has more than 5 lines, the most one upload takes"):
        wave_add_from_csv(actor=people["op"], wave_id=other.pk, text=too_many)
    url = reverse("wave_add_from_csv", args=[other.pk])
    response = signed_in(client, people["op"]).post(url, {"file": SimpleUploadedFile("l.csv", too_many.encode())})
    assert response.status_code == 400 and "The list has more than 5 lines" in page_text(response)
    assert not other.members.exists() and len(events("soa.wave.members_added")) == 1


def test_a_list_past_the_byte_limit_is_refused_pasted_or_uploaded(client, people, settings):
    settings.WAVE_CSV_MAX_BYTES = 1024
    wave = new_wave(people["op"])
    make_mailbox("Ann Archer")
    big = ("ann.archer@corp.example.com\n" * 40).encode()  # 1,120 bytes
    signed_in(client, people["op"])
    url = reverse("wave_add_from_csv", args=[wave.pk])
    for form in ({"file": SimpleUploadedFile("list.csv", big)}, {"text": big.decode()}):
        response = client.post(url, form)
        assert response.status_code == 400 and "The list is larger than 1 KB" in page_text(response)
    with pytest.raises(SoaError, match="larger than 1 KB"):
        wave_add_from_csv(actor=people["op"], wave_id=wave.pk, text=big.decode())
    assert not wave.members.exists()


class _LyingUpload:
    """An upload whose declared size is small and whose content is not."""

    size = 10

    def chunks(self):
        yield b"ann.archer@corp.example.com\n" * 30
        yield b"ann.archer@corp.example.com\n" * 30


def test_an_upload_lying_about_its_size_is_cut_off_while_it_is_read():
    lines = upload_lines(_LyingUpload(), max_bytes=1000, too_large="too large")
    with pytest.raises(CsvInputError, match="too large"):
        list(lines)
    with pytest.raises(CsvInputError, match="not UTF-8"):
        list(upload_lines(SimpleUploadedFile("x.csv", b"\xff\xfe"), max_bytes=1000, too_large="too large"))
    bom = SimpleUploadedFile("x.csv", "\ufeffUPN\r\nann@x.example.com\r\n".encode())
    assert list(upload_lines(bom, max_bytes=1000, too_large="too large")) == ["UPN", "ann@x.example.com"]


def test_only_the_first_problems_are_listed_with_a_count_of_the_rest(client, people):
    wave = new_wave(people["op"])
    text = "\n".join(f"nobody{n}@corp.example.com" for n in range(PROBLEMS_SHOWN + 50))
    with pytest.raises(CsvImportError) as refused:
        wave_add_from_csv(actor=people["op"], wave_id=wave.pk, text=text)
    assert len(refused.value.problems) == PROBLEMS_SHOWN and refused.value.problem_count == PROBLEMS_SHOWN + 50
    assert str(refused.value).startswith(f"{PROBLEMS_SHOWN + 50} lines of the list cannot be used")
    url = reverse("wave_add_from_csv", args=[wave.pk])
    response = signed_in(client, people["op"]).post(url, {"file": SimpleUploadedFile("l.csv", text.encode())})
    body = page_text(response)
    assert response.status_code == 400
    assert body.count("<td>unknown: no mailbox has this UPN or address</td>") == PROBLEMS_SHOWN
    assert f"The first {PROBLEMS_SHOWN} of {PROBLEMS_SHOWN + 50} lines with problems are listed" in body


def test_a_refused_builder_is_refused_before_the_list_is_read(people):
    wave = new_wave(people["op"])

    def lines():
        raise AssertionError("the list was read for a user the service refuses")
        yield ""  # pragma: no cover

    with pytest.raises(SoaError, match="do not allow building pilot waves"):
        wave_add_from_csv(actor=people["approver"], wave_id=wave.pk, text=lines())


@pytest.mark.django_db(transaction=True)
def test_the_list_is_read_and_looked_up_outside_any_transaction(people):
    # The wave's lock (SQLite: the database's write lock) is taken only once the list has been read and matched.
    wave = new_wave(people["op"])
    mailboxes = [make_mailbox(f"User {n}") for n in range(3)]
    seen: list[bool] = []

    def lines():
        for mailbox in mailboxes:
            seen.append(connection.in_atomic_block)
            yield mailbox.upn

    change = wave_add_from_csv(actor=people["op"], wave_id=wave.pk, text=lines())
    assert change.changed == 3 and seen == [False, False, False]
    assert events("soa.wave.members_added", wave)[-1].after["how"] == {"how": "csv", "lines": 3}
