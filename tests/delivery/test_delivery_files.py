"""Event files: RFC 3464 DSNs (.eml, mbox, Maildir), non-standard bounces, and
promomail's JSON Lines; every item that gives no event is a problem naming
the file and the line or message."""

from __future__ import annotations

import contextlib
import json
import mailbox
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promomail.delivery.dsn import MAX_MESSAGE_BYTES, parse_bounce
from promomail.delivery.events import DeliveryEvent, EventType, MalformedEvent
from promomail.delivery.files import EventProblem, read_event_files
from tests.support.delivery_helpers import REF, dsn, plain_mail, qmail_bounce
from tests.support.paths import REPO_ROOT


def read(*paths: Path, provider: str | None = None) -> list[DeliveryEvent | EventProblem]:
    return list(read_event_files(paths, provider))


def test_a_failed_recipient_bounces_for_good_with_the_returned_reference() -> None:
    [event] = parse_bounce(dsn())
    assert (event.provider, event.event_id, event.ref) == ("dsn", "dsn-1@mx.example.org", REF)
    assert (event.type, event.permanent) == (EventType.BOUNCE, True)
    assert event.at is not None and event.at.isoformat() == "2026-12-07T10:50:00"
    assert "5.1.1" in event.detail


def test_the_reference_is_read_from_returned_headers_too() -> None:
    [event] = parse_bounce(dsn(returned="text/rfc822-headers"))
    assert event.ref == REF


@pytest.mark.parametrize(
    ("action", "status", "expected"),
    [
        ("delayed", "4.4.1", (EventType.DEFERRED, False)),
        ("delivered", "2.0.0", (EventType.DELIVERED, False)),
        ("relayed", "2.0.0", (EventType.DELIVERED, False)),
        ("expanded", "2.0.0", (EventType.DELIVERED, False)),
        ("Failed", "4.4.7", (EventType.BOUNCE, True)),  # the MTA gave up: it will not arrive
    ],
)
def test_each_action(action: str, status: str, expected: tuple[EventType, bool]) -> None:
    [event] = parse_bounce(dsn([(action, status)]))
    assert (event.type, event.permanent) == expected


def test_each_recipient_of_a_dsn_is_an_event_of_its_own() -> None:
    events = parse_bounce(dsn([("failed", "5.1.1"), ("delayed", "4.2.2"), ("smiled", "2.0.0")]))
    assert [(e.event_id, e.type) for e in events] == [
        ("dsn-1@mx.example.org:1", EventType.BOUNCE),
        ("dsn-1@mx.example.org:2", EventType.DEFERRED),
    ]


@pytest.mark.parametrize(
    ("status", "expected"),
    [("5.1.1", (EventType.BOUNCE, True)), ("4.4.1", (EventType.DEFERRED, False))],
)
def test_without_an_action_the_status_class_decides(
    status: str, expected: tuple[EventType, bool]
) -> None:
    data = dsn([("failed", status)]).replace(b"Action: failed\n", b"")
    [event] = parse_bounce(data)
    assert (event.type, event.permanent) == expected


def test_a_dsn_without_reference_or_message_id_is_still_one_event() -> None:
    data = dsn(ref=None, message_id="")
    [event] = parse_bounce(data)
    assert event.ref is None and event.event_id.startswith("sha256:")
    assert parse_bounce(data)[0].event_id == event.event_id  # the same file, the same id


def test_a_non_standard_bounce_is_recognised() -> None:
    [event] = parse_bounce(qmail_bounce())
    assert (event.type, event.permanent, event.ref) == (EventType.BOUNCE, True, REF)
    assert event.event_id == "qmail-1@mx.example.org"


def test_a_mail_that_is_no_bounce_is_refused() -> None:
    with pytest.raises(MalformedEvent, match="not a delivery status notification"):
        parse_bounce(plain_mail())


def test_a_dsn_of_unknown_actions_only_is_refused() -> None:
    with pytest.raises(MalformedEvent, match="Action"):
        parse_bounce(dsn([("smiled", "2.0.0")]))


def test_bounds_on_size_parts_and_nesting() -> None:
    with pytest.raises(MalformedEvent, match="larger than"):
        parse_bounce(b"X" * (MAX_MESSAGE_BYTES + 1))
    parts = "".join("--B\nContent-Type: text/plain\n\nx\n" for _ in range(300))
    many = f'Content-Type: multipart/mixed; boundary="B"\n\n{parts}--B--\n'.encode()
    with pytest.raises(MalformedEvent, match="parts"):
        parse_bounce(many)
    nested = b"Content-Type: message/rfc822\n\n" * 3000 + b"Subject: deep\n\nx\n"
    with pytest.raises(MalformedEvent):
        parse_bounce(nested)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4000))
def test_any_bytes_are_events_or_a_refusal(data: bytes) -> None:
    with contextlib.suppress(MalformedEvent):
        parse_bounce(data)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=400), st.integers(0, 3000))
def test_a_damaged_dsn_is_events_or_a_refusal(noise: bytes, at: int) -> None:
    original = dsn([("failed", "5.1.1"), ("delayed", "4.0.0")])
    at = min(at, len(original))
    try:
        events = parse_bounce(original[:at] + noise + original[at:])
    except MalformedEvent:
        return
    assert all(isinstance(e, DeliveryEvent) for e in events)


# --- files -------------------------------------------------------------------


def test_eml_files_and_their_problems(tmp_path: Path) -> None:
    (tmp_path / "a.eml").write_bytes(dsn())
    (tmp_path / "b.eml").write_bytes(plain_mail())
    found = read(tmp_path / "a.eml", tmp_path / "b.eml", tmp_path / "missing.eml")
    assert isinstance(found[0], DeliveryEvent) and found[0].ref == REF
    assert found[1] == EventProblem(
        str(tmp_path / "b.eml"), None, "not a delivery status notification nor a known bounce"
    )
    assert isinstance(found[2], EventProblem) and "No such file" in found[2].reason
    assert str(found[1]).startswith(f"{tmp_path / 'b.eml'}: not a delivery status")


def test_an_mbox_of_several_messages(tmp_path: Path) -> None:
    path = tmp_path / "bounces"
    box = mailbox.mbox(path)
    for data in (
        dsn(message_id="<m1@x>"),
        plain_mail(),
        dsn([("delayed", "4.0.0")], message_id="<m3@x>"),
    ):
        box.add(data)
    box.close()
    found = read(path)
    assert [type(f).__name__ for f in found] == ["DeliveryEvent", "EventProblem", "DeliveryEvent"]
    assert isinstance(found[1], EventProblem) and found[1].where == "message 2"
    assert [f.event_id for f in found if isinstance(f, DeliveryEvent)] == ["m1@x", "m3@x"]


def test_a_maildir_of_several_messages(tmp_path: Path) -> None:
    box = mailbox.Maildir(tmp_path / "Maildir")
    keys = [box.add(dsn(message_id=f"<m{n}@x>")) for n in range(3)]
    bad = box.add(plain_mail())
    found = read(tmp_path / "Maildir")
    events = [f for f in found if isinstance(f, DeliveryEvent)]
    assert sorted(e.event_id for e in events) == ["m0@x", "m1@x", "m2@x"]
    assert [f for f in found if isinstance(f, EventProblem)] == [
        EventProblem(
            str(tmp_path / "Maildir"),
            f"message {bad}",
            "not a delivery status notification nor a known bounce",
        )
    ]
    assert len(keys) == 3


def test_a_folder_that_is_not_a_maildir_is_a_problem(tmp_path: Path) -> None:
    [problem] = read(tmp_path)
    assert isinstance(problem, EventProblem) and "not a Maildir" in problem.reason


def test_json_lines_events_and_problems_by_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    good = {"ref": REF, "type": "bounce", "permanent": True, "id": "e1"}
    lines = [
        json.dumps(good),
        "",
        "{not json",
        json.dumps({**good, "type": "exploded"}),
        "x" * 70_000,
        json.dumps({**good, "id": "e2", "type": "delivered"}),
        "[1]",
    ]
    path.write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")
    found = read(path)
    assert [f.event_id for f in found if isinstance(f, DeliveryEvent)] == ["e1", "e2"]
    problems = [f for f in found if isinstance(f, EventProblem)]
    assert [p.where for p in problems] == ["line 3", "line 4", "line 5", "line 7"]
    assert "type must be one of" in problems[1].reason
    assert "longer than" in problems[2].reason
    assert problems[3].reason == "the event must be an object"


def test_the_provider_overrides_the_file_kind(tmp_path: Path) -> None:
    path = tmp_path / "events.txt"
    path.write_text(json.dumps({"ref": REF, "type": "deferred", "id": "e1"}) + "\n")
    [problem] = read(path)
    assert isinstance(problem, EventProblem)  # a .txt is read as a bounce by default
    [event] = read(path, provider="promomail")
    assert isinstance(event, DeliveryEvent) and event.type is EventType.DEFERRED
    [wrong] = read(path, provider="ses")
    assert isinstance(wrong, EventProblem) and "'ses'" in wrong.reason


def test_reading_event_files_loads_no_cryptography() -> None:
    # The CLI's events import needs no signatures; webhooks load them.
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, promomail.delivery.files; print(any(m.startswith('cryptography') for m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
    )
    assert loaded.stdout.strip() == "False"


def test_an_oversized_message_file_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "huge.eml"
    path.write_bytes(dsn() + b"x" * MAX_MESSAGE_BYTES)
    [problem] = read(path)
    assert isinstance(problem, EventProblem) and "larger than" in problem.reason


def test_a_bounce_detector_that_trips_prints_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    # A non-ASCII From is a Header object, on which some of flufl.bounce's
    # detectors raise (and log a traceback) before the scan gives up.
    tripping = b"From: \xe9t\xe9 <mailer-daemon@x>\nSubject: hi\n\nhello\n"
    with pytest.raises(MalformedEvent, match="not a delivery status notification"):
        parse_bounce(tripping)
    assert capfd.readouterr() == ("", "")
