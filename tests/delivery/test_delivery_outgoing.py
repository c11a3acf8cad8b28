"""Reading a render's output back for sending: all of it checked before anything is sent."""

from __future__ import annotations

import email
import email.policy
import json
import re
from email.message import EmailMessage
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promomail.delivery.message import build_bytes, build_email, ref_headers
from promomail.delivery.outgoing import OutgoingError, OutgoingMessage, read_output
from promomail.templating.mailing.outputs import EmlWriter, RenderedMessage
from promomail.templating.mailing.recipients import Shard, in_slice
from tests.support.outgoing_helpers import eml_output, jsonl_output, record, ref_of, write_jsonl

MAILING = "spring-sale"
#: What every message sent carries, by SPEC 8.
ECHO = {
    "X-Promomail-Ref": "{ref}",
    "X-SES-MESSAGE-TAGS": "promomail_ref={ref}",
    "X-SMTPAPI": '{{"unique_args": {{"promomail_ref": "{ref}"}}}}',
    "X-Mailgun-Variables": '{{"promomail_ref": "{ref}"}}',
    "X-PM-Metadata-promomail_ref": "{ref}",
}


@pytest.fixture(autouse=True)
def sender(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("PROMOMAIL_FROM", "Shop <shop@example.test>")
    return "Shop <shop@example.test>"


def parsed(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def assert_carries_ref(data: bytes, ref: str) -> None:
    """Each reference header once, on one line, exactly as a service reads it."""
    lines = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    for name, value in ECHO.items():
        line = f"{name}: {value.format(ref=ref)}".encode()
        assert lines.count(line) == 1, (name, lines)
    message = parsed(data)
    assert json.loads(str(message["X-SMTPAPI"])) == {"unique_args": {"promomail_ref": ref}}
    assert json.loads(str(message["X-Mailgun-Variables"])) == {"promomail_ref": ref}


def test_jsonl_messages_carry_their_reference_and_the_sender(tmp_path: Path) -> None:
    path = jsonl_output(tmp_path / "out.jsonl", MAILING, ["a@example.test", None, "B <b@x.test>"])
    output = read_output(path, MAILING)
    messages = list(output)
    assert output.total == 3
    assert [(m.recipient, m.to, m.ref) for m in messages] == [
        ("r0", "a@example.test", ref_of(MAILING, "r0")),
        ("r1", None, ref_of(MAILING, "r1")),
        ("r2", "B <b@x.test>", ref_of(MAILING, "r2")),
    ]
    assert [m.where for m in messages] == [f"{path}, line {n}" for n in (1, 2, 3)]
    assert messages[2].envelope_to == "b@x.test"
    assert {m.sender for m in messages} == {"shop@example.test"}
    data = messages[0].build()
    assert_carries_ref(data, messages[0].ref)
    message = parsed(data)
    assert str(message["From"]) == "Shop <shop@example.test>"
    assert str(message["To"]) == "a@example.test"
    assert message.get_content().splitlines() == ["Your code, r0: ABC-123"]


def test_a_jsonl_message_is_the_email_the_eml_writer_writes(tmp_path: Path) -> None:
    parts = {"subject": "Frühling: 20 % für Sie", "text": "Grüße\n" * 3, "html": "<p>Grüße</p>"}
    line = record(MAILING, "r0", "Zoë <z@example.test>", parts=parts)
    [message] = read_output(write_jsonl(tmp_path / "out.jsonl", [line]), MAILING)
    sent = parsed(message.build())
    rendered = RenderedMessage(MAILING, "r0", "Zoë <z@example.test>", parts, {})
    written = parsed(EmlWriter(tmp_path / "eml").encode(rendered))
    assert headers(sent, skip=frozenset(name.lower() for name in ECHO)) == headers(written)
    assert parts_of(sent) == parts_of(written)


def headers(message: EmailMessage, skip: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """The headers but the ones made fresh for each message (and the MIME boundary)."""
    fresh = {"date", "message-id", "content-type", *skip}
    return [(k, str(v)) for k, v in message.items() if k.lower() not in fresh]


def parts_of(message: EmailMessage) -> list[tuple[str, str | None, str | None, object]]:
    return [
        (
            p.get_content_type(),
            p.get_content_charset(),
            p["Content-Transfer-Encoding"],
            p.get_content(),
        )
        for p in message.walk()
        if not p.is_multipart()
    ]


_ascii = st.characters(min_codepoint=32, max_codepoint=126)
_header_text = st.one_of(
    st.text(max_size=90),
    st.text(_ascii, max_size=90),
    # Around the 78 characters a line may hold before it is folded.
    st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=60, max_size=75),
    st.lists(
        st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1),
        min_size=8,
        max_size=20,
    ).map(" ".join),
    st.sampled_from(["", " x", "x ", "a  b", "=?utf-8?q?x?=", "x" * 77, "Grüße", "a\tb"]),
)
_body = st.one_of(
    st.text(max_size=300),
    st.text(_ascii, max_size=300),
    st.lists(st.text(_ascii, max_size=100)).map("\n".join),
    st.sampled_from(["", "\n", "a\r\nb", "--===============1==\n", "From here\n", "é" * 100]),
)
_address = st.one_of(
    st.none(),
    st.sampled_from(
        ["a@b.test", "Zoë <z@x.test>", '"Doe, J" <j@x.test>', "x" * 70 + "@example.test"]
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    sender=st.sampled_from(
        ["shop@example.test", "Shop Ltd <shop@example.test>", "Läden <l@x.test>"]
    ),
    subject=st.one_of(st.none(), _header_text),
    text=st.one_of(st.none(), _body),
    html=st.one_of(st.none(), _body),
    body=st.one_of(st.none(), _body),
    to=_address,
    ids=st.tuples(
        st.sampled_from(["m", "spring-sale", "m" * 90]),
        st.one_of(
            st.sampled_from(["r", "customer 42", "Zoë"]), st.text(_ascii, min_size=50, max_size=60)
        ),
    ),
)
def test_the_fast_builder_writes_the_bytes_of_the_email_builder(
    sender: str,
    subject: str | None,
    text: str | None,
    html: str | None,
    body: str | None,
    to: str | None,
    ids: tuple[str, str],
) -> None:
    named = {"subject": subject, "text": text, "html": html, "body": body}
    parts = {k: v for k, v in named.items() if v is not None}
    fixed = {
        "sender": sender,
        "mailing": ids[0],
        "recipient": ids[1],
        "to": to,
        "parts": parts,
        "ref": "Ab_-" * 16,
        "date": "Mon, 07 Dec 2026 12:00:00 +0000",
        "message_id": "<179664766984.8828.9660716949523115936@promomail.local>",
    }
    try:
        expected = build_email(**fixed).as_bytes()  # type: ignore[arg-type]
    except ValueError:
        return  # a header the standard library refuses (a line break): the render refuses it too
    boundary = re.search(rb'boundary="([^"]+)"', expected)
    written = build_bytes(**fixed, boundary=boundary[1].decode() if boundary else None)  # type: ignore[arg-type]
    assert written == expected


def test_a_boundary_never_appears_in_the_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("promomail.delivery.message.random.randrange", lambda _: 7)
    taken = "=" * 15 + "7".zfill(19) + "=="
    text = f"a line\n--{taken}\nand --{taken}--\n"
    data = build_bytes(
        sender="s@x.test",
        mailing="m",
        recipient="r",
        to=None,
        parts={"text": text, "html": "<p>x</p>"},
        ref="abc",
    )
    assert f'boundary="{taken}.0"'.encode() in data
    message = parsed(data)
    assert [p.get_content() for p in message.iter_parts()] == [
        text.replace("\n", "\r\n"),
        "<p>x</p>\r\n",
    ]


def test_eml_files_are_sent_as_written_with_the_missing_reference_headers_added(
    tmp_path: Path,
) -> None:
    folder = eml_output(tmp_path / "eml", MAILING, ["a@example.test", None])
    # A file that carries X-Promomail-Ref alone gets the services' headers in front.
    plain = build_email(
        sender="shop@example.test",
        mailing=MAILING,
        recipient="r2",
        to="c@example.test",
        parts={"subject": "Hi", "text": "Hi\n"},
    )
    plain.set_raw("X-Promomail-Ref", ref_of(MAILING, "r2"))
    (folder / "r2.eml").write_bytes(plain.as_bytes())
    messages = {m.recipient: m for m in read_output(folder, MAILING)}
    assert messages["r1"].to is None
    assert messages["r0"].build() == (folder / "r0.eml").read_bytes()
    assert_carries_ref(messages["r0"].build(), ref_of(MAILING, "r0"))
    sent = messages["r2"].build()
    assert sent.endswith((folder / "r2.eml").read_bytes())
    assert_carries_ref(sent, ref_of(MAILING, "r2"))


def test_send_and_render_pick_the_same_shards(tmp_path: Path) -> None:
    ids = [f"customer-{i}" for i in range(200)]
    lines = [record(MAILING, rid, f"{rid}@example.test") for rid in ids]
    path = write_jsonl(tmp_path / "out.jsonl", lines)
    seen: list[str] = []
    for index in (1, 2, 3):
        shard = Shard(index, 3)
        chosen = [m.recipient for m in read_output(path, MAILING, shard=shard)]
        assert chosen == [rid for rid in ids if in_slice(rid, shard)]
        seen += chosen
    assert sorted(seen) == sorted(ids)


def refusal(path: Path) -> str:
    with pytest.raises(OutgoingError) as caught:
        list(read_output(path, MAILING))
    return str(caught.value)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (record("autumn", "r1", "b@example.test"), "a message of mailing 'autumn', not"),
        ({k: v for k, v in record(MAILING, "r1", None).items() if k != "ref"}, "render the"),
        (record(MAILING, "r1", None, ref="a b"), "is not a delivery reference"),
        (record(MAILING, "r0", None, ref="other"), "recipient 'r0' appears twice"),
        (record(MAILING, "r1", None, ref=ref_of(MAILING, "r0")), "appears twice"),
        (record(MAILING, "r1", "a@b.test, c@d.test"), "'to': "),
        (record(MAILING, "r1", None, parts={"subject": "a\nBcc: x@y.test"}), "line feed"),
        (record(MAILING, "r1", None, parts={"text": 3}), "part 'text' is int"),
        (record(MAILING, "r1\n", None), "recipient 'r1\\n'"),
        ({"mailing": MAILING}, "no 'recipient'"),
        (["not", "an", "object"], "not a JSON object"),
    ],
)
def test_lines_that_are_not_this_mailings_messages_are_refused_by_line(
    tmp_path: Path, line: object, reason: str
) -> None:
    path = tmp_path / "out.jsonl"
    first = orjson.dumps(record(MAILING, "r0", "a@example.test")) + b"\n"
    path.write_bytes(first + orjson.dumps(line) + b"\n")
    message = refusal(path)
    assert message.startswith(f"{path}, line 2: ")
    assert reason in message
    assert message.endswith("nothing was sent")


def test_an_eml_folder_of_another_mailing_or_version_is_refused(tmp_path: Path) -> None:
    folder = eml_output(tmp_path / "other", "autumn", ["a@example.test"])
    assert "a message of mailing 'autumn'" in refusal(folder)
    # What today's render writes without delivery references.
    old = tmp_path / "old"
    old.mkdir()
    writer = EmlWriter(old)
    data = writer.encode(RenderedMessage(MAILING, "r0", "a@example.test", {"text": "x"}, {}))
    writer.write([("r0", data)])
    assert "no delivery reference (X-Promomail-Ref)" in refusal(old)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    assert "no .eml files" in refusal(empty)
    assert "no such file" in refusal(tmp_path / "missing.jsonl")


def test_an_eml_whose_service_header_names_another_reference_is_refused(tmp_path: Path) -> None:
    folder = eml_output(tmp_path / "eml", MAILING, ["a@example.test"])
    path = folder / "r0.eml"
    path.write_bytes(b"X-Mailgun-Variables: {}\r\n" + path.read_bytes())
    assert "X-Mailgun-Variables" in refusal(folder)


def test_an_unusable_sender_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = jsonl_output(tmp_path / "out.jsonl", MAILING, ["a@example.test"])
    monkeypatch.setenv("PROMOMAIL_FROM", "a@x.test, b@x.test")
    assert refusal(path).startswith("PROMOMAIL_FROM: ")


def test_the_reference_headers_refuse_what_is_not_a_reference() -> None:
    with pytest.raises(ValueError, match="not a delivery reference"):
        ref_headers('a"}')
    assert len(ref_headers("x" * 64)) == 5


_valid = orjson.dumps(record(MAILING, "r0", "a@example.test"))


def _mutations() -> st.SearchStrategy[bytes]:
    def flip(data: bytes, at: int, byte: int) -> bytes:
        at %= len(data)
        return data[:at] + bytes([byte]) + data[at + 1 :]

    def cut(data: bytes, at: int) -> bytes:
        return data[: at % len(data)]

    return st.one_of(
        st.binary(max_size=200),
        st.builds(flip, st.just(_valid), st.integers(0, 10_000), st.integers(0, 255)),
        st.builds(cut, st.just(_valid), st.integers(0, 10_000)),
        st.builds(
            lambda r: json.dumps(r).encode(),
            st.fixed_dictionaries(
                {
                    "mailing": st.sampled_from([MAILING, "other", 1]),
                    "recipient": st.one_of(st.text(max_size=8), st.integers()),
                    "to": st.one_of(st.none(), st.text(max_size=20), st.just("a@b.test")),
                    "parts": st.dictionaries(
                        st.sampled_from(["subject", "text", "html", "x"]),
                        st.one_of(st.text(max_size=20), st.integers()),
                    ),
                    "codes": st.dictionaries(st.text(max_size=3), st.text(max_size=3)),
                },
                optional={
                    "ref": st.one_of(
                        st.text(max_size=70),
                        st.integers(),
                        st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True),
                    )
                },
            ),
        ),
    )


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=st.lists(_mutations(), min_size=1, max_size=4))
def test_hostile_output_is_read_whole_or_refused_with_file_and_line(
    tmp_path: Path, lines: list[bytes]
) -> None:
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(b"\n".join(line.replace(b"\n", b" ") for line in lines) + b"\n")
    try:
        output = read_output(path, MAILING)
        messages: list[OutgoingMessage] = list(output)
    except OutgoingError as exc:
        assert str(exc).startswith(f"{path}, line ")
        return
    for message in messages:
        data = message.build()
        assert_carries_ref(data, message.ref)
        if message.to is not None:
            assert message.envelope_to


_eml_lines = st.lists(
    st.one_of(
        st.sampled_from(
            [
                b"X-Promomail-Mailing: " + MAILING.encode(),
                b"X-Promomail-Mailing: other",
                b"X-Promomail-Recipient: r0",
                b"X-Promomail-Recipient: =?utf-8?q?r=0A0?=",
                b"X-Promomail-Ref: abc",
                b"X-Promomail-Ref: a b",
                b"X-SMTPAPI: {}",
                b"To: a@b.test",
                b"To: a@b.test, c@d.test",
                b"To: =?utf-8?b?/w==?= <x@y.test>",
                b" folded",
                b"",
                b"body",
            ]
        ),
        st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"")),
    ),
    max_size=10,
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=_eml_lines)
def test_hostile_eml_files_are_read_or_refused_by_file(tmp_path: Path, lines: list[bytes]) -> None:
    folder = tmp_path / "eml"
    folder.mkdir(exist_ok=True)
    path = folder / "x.eml"
    path.write_bytes(b"\r\n".join(lines) + b"\r\n")
    try:
        messages = list(read_output(folder, MAILING))
    except OutgoingError as exc:
        assert str(exc).startswith(f"{path}: ")
        return
    [message] = messages
    assert_carries_ref(message.build(), message.ref)
