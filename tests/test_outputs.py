"""Output writers: JSON Lines joined from worker parts, RFC 5322 files per recipient."""

from __future__ import annotations

import email
import email.policy
import json
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pools.errors import InvalidSetting
from templating.errors import MailingError, UnwritableMessage
from templating.mailing.outputs import (
    EmlWriter,
    JsonlWriter,
    MessageWriter,
    OutputFormat,
    OutputTarget,
    RenderedMessage,
    eml_name,
)


def _message(recipient: str = "c1", **parts: str) -> RenderedMessage:
    return RenderedMessage(
        "m1",
        recipient,
        f"{recipient}@example.com",
        parts or {"subject": "Hi", "text": "T", "html": "<p>H</p>"},
        {"spring": "CODE-1"},
        f"ref-{recipient}",
    )


def _write(writer: MessageWriter, *messages: RenderedMessage) -> None:
    writer.write([(m.recipient, writer.encode(m)) for m in messages])


def _parse(path: Path) -> EmailMessage:
    parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _lf(text: str) -> str:
    return text.replace("\r\n", "\n")


def test_jsonl_parts_are_joined_in_worker_order(tmp_path: Path) -> None:
    target = OutputTarget(OutputFormat.JSONL, tmp_path / "out" / "mail.jsonl")
    target.prepare()
    writers = [target.open_writer(worker, "run1") for worker in range(2)]
    _write(writers[1], _message("c3"))
    _write(writers[0], _message("c1"), _message("c2", body="SMS ✓"))
    for writer in writers:
        writer.close()
    target.finish(2, "run1")

    lines = (tmp_path / "out" / "mail.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["recipient"] for r in records] == ["c1", "c2", "c3"]
    assert records[1] == {
        "mailing": "m1",
        "recipient": "c2",
        "ref": "ref-c2",
        "to": "c2@example.com",
        "parts": {"body": "SMS ✓"},
        "codes": {"spring": "CODE-1"},
    }
    assert "✓" in lines[1]  # UTF-8, not \\u escapes
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["mail.jsonl"]


def test_jsonl_to_stdout(tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    target = OutputTarget(OutputFormat.JSONL, None)
    target.prepare()
    writer = target.open_writer(0, "run-stdout")
    _write(writer, _message("c1"))
    writer.close()
    target.finish(1, "run-stdout")
    out = capfdbinary.readouterr().out.decode()
    assert json.loads(out)["recipient"] == "c1"
    assert not target.part_path(0, "run-stdout").exists()


def test_discard_leaves_no_part_files(tmp_path: Path) -> None:
    target = OutputTarget(OutputFormat.JSONL, tmp_path / "mail.jsonl")
    writer = target.open_writer(0, "r")
    _write(writer, _message())
    writer.close()
    target.discard(1, "r")
    assert list(tmp_path.iterdir()) == []


def test_unusable_targets_fail_before_anything_is_rendered(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(MailingError, match="cannot write output"):
        OutputTarget(OutputFormat.JSONL, blocker / "mail.jsonl").prepare()
    with pytest.raises(MailingError, match="cannot write output"):
        OutputTarget(OutputFormat.EML, blocker).prepare()
    with pytest.raises(
        InvalidSetting, match=r"^format eml writes a file per message: out must name a folder$"
    ) as refused:
        OutputTarget(OutputFormat.EML, None)
    assert refused.value.settings == ("format", "out")


def test_eml_is_multipart_alternative_with_text_and_html(tmp_path: Path) -> None:
    target = OutputTarget(OutputFormat.EML, tmp_path / "eml")
    target.prepare()
    writer = target.open_writer(0, "r")
    subject = "Willkommen, Jürgen — Ihr Code SPRING-ÄÖ"
    text = "Hallo Jürgen,\nIhr Code: SPRING-ÄÖ\n" + "eine sehr lange Zeile " * 20 + "\n"
    html = "<p>Hallo J&uuml;rgen, <b>SPRING-ÄÖ</b></p>\n"
    _write(writer, _message("cust/1", subject=subject, text=text, html=html))
    writer.close()
    target.finish(1, "r")

    [path] = list((tmp_path / "eml").iterdir())
    assert path.name == eml_name("cust/1") and path.suffix == ".eml"
    raw = path.read_bytes()
    assert raw.isascii()  # RFC 5322: 7-bit clean headers (RFC 2047) and bodies
    assert raw.count(b"\n") == raw.count(b"\r\n")  # CRLF line ends
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    parsed = _parse(path)
    assert parsed.defects == []
    assert parsed["Subject"] == subject
    assert parsed["To"] == "cust/1@example.com"
    assert parsed["From"]
    assert parsed["Date"] and parsed["Message-ID"]
    assert parsed["X-Promomail-Mailing"] == "m1"
    assert parsed["X-Promomail-Recipient"] == "cust/1"
    assert parsed.get_content_type() == "multipart/alternative"
    plain, rich = list(parsed.iter_parts())
    assert isinstance(plain, EmailMessage) and isinstance(rich, EmailMessage)
    assert plain.get_content_type() == "text/plain"
    assert _lf(plain.get_content()) == text
    assert rich.get_content_type() == "text/html"
    assert _lf(rich.get_content()) == html
    body = parsed.get_body(("html", "plain"))
    assert body is not None and body.get_content_type() == "text/html"


def test_eml_single_part_messages(tmp_path: Path) -> None:
    writer = EmlWriter(tmp_path)
    sms = writer.to_email(_message(body="Code X"))
    assert not sms.is_multipart() and sms.get_content_type() == "text/plain"
    assert _lf(sms.get_content()) == "Code X\n" and sms["Subject"] == ""
    html_only = writer.to_email(_message(subject="S", html="<p>x</p>"))
    assert html_only.get_content_type() == "text/html"
    no_to = writer.to_email(RenderedMessage("m", "c", None, {"text": "t"}, {}))
    assert no_to["To"] is None


def test_sender_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMOMAIL_FROM", "Northwind <news@northwind.example>")
    assert EmlWriter(tmp_path).to_email(_message())["From"] == "Northwind <news@northwind.example>"


def test_eml_file_names_are_safe_and_distinct() -> None:
    ids = ["c1", "c/1", "c_1", "c 1", "../etc/passwd", ".hidden", "ä", "x" * 200, "x" * 201]
    names = [eml_name(i) for i in ids]
    assert len(set(names)) == len(ids)
    assert eml_name("c1") == "c1.eml"
    for name in names:
        assert "/" not in name and not name.startswith(".") and name.endswith(".eml")
        assert len(name) < 120


def test_eml_rewrite_replaces_the_file(tmp_path: Path) -> None:
    writer = EmlWriter(tmp_path)
    _write(writer, _message("c1", subject="first", text="a"))
    _write(writer, _message("c1", subject="second", text="b"))
    assert [p.name for p in tmp_path.iterdir()] == ["c1.eml"]
    assert _parse(tmp_path / "c1.eml")["Subject"] == "second"


def test_encode_refuses_what_cannot_be_written_and_writes_nothing(tmp_path: Path) -> None:
    target = OutputTarget(OutputFormat.JSONL, tmp_path / "mail.jsonl")
    jsonl = target.open_writer(0, "r")
    eml = EmlWriter(tmp_path / "eml")
    for writer in (jsonl, eml):
        with pytest.raises(UnwritableMessage, match="lone surrogate") as refused:
            writer.encode(_message(subject="S", text="bad \udce9 byte"))
        assert refused.value.character == "\udce9"
        with pytest.raises(UnwritableMessage, match="subject would hold a line feed"):
            writer.encode(_message(subject="two\nlines", text="t"))
    jsonl.close()
    assert target.part_path(0, "r").read_bytes() == b""
    assert not (tmp_path / "eml").exists()


def test_an_unusable_sender_is_refused_before_anything_is_rendered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for sender in ("a@x.com, b@x.com", "nobody", "news@x.com\r\nBcc: all@x.com", " "):
        monkeypatch.setenv("PROMOMAIL_FROM", sender)
        with pytest.raises(MailingError, match="PROMOMAIL_FROM"):
            OutputTarget(OutputFormat.EML, tmp_path / "eml").prepare()


_TEXT = st.text(st.characters(codec="utf-8"), max_size=12)


@settings(max_examples=300, deadline=None)
@given(
    mailing=_TEXT,
    recipient=_TEXT,
    to=st.none() | _TEXT,
    parts=st.dictionaries(_TEXT, _TEXT, max_size=4),
    codes=st.dictionaries(_TEXT, _TEXT | st.lists(_TEXT, max_size=3), max_size=3),
)
def test_jsonl_lines_are_exactly_what_the_standard_json_encoder_gives(
    tmp_path_factory: pytest.TempPathFactory,
    mailing: str,
    recipient: str,
    to: str | None,
    parts: dict[str, str],
    codes: dict[str, str | list[str]],
) -> None:
    """orjson's lines and the standard encoder's (the fallback) agree character for character."""
    message = RenderedMessage(mailing, recipient, to, parts, codes)
    writer = JsonlWriter(tmp_path_factory.mktemp("jsonl") / "part")
    try:
        if "subject" in parts and not parts["subject"].isprintable():
            return  # refused before encoding; test_encode_refuses… covers it
        expected = json.dumps(message.as_dict(), ensure_ascii=False, separators=(",", ":")) + "\n"
        assert writer.encode(message) == expected.encode()
    finally:
        writer.close()
