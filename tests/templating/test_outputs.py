"""Output writers: JSON Lines joined from worker parts, RFC 5322 files per recipient."""

from __future__ import annotations

import email
import email.policy
import io
import json
import os
import re
import sys
import tempfile
from email.message import EmailMessage
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from promomail.pools.errors import InvalidSetting
from promomail.templating.choices import OutputFormat
from promomail.templating.errors import MailingError, UnwritableMessage
from promomail.templating.mailing.outputs import (
    EmlWriter,
    JsonlWriter,
    MessageWriter,
    OutputTarget,
    RenderedMessage,
    eml_name,
)
from tests.support.render_helpers import (
    customer_ids,
    initial_codes,
    pool_with_codes,
    read_jsonl,
    render,
    write_recipients,
    write_template,
)


def _message(recipient: str = "c1", **parts: str) -> RenderedMessage:
    return RenderedMessage(
        "m1",
        recipient,
        f"{recipient}@example.com",
        parts or {"subject": "Hi", "text": "T", "html": "<p>H</p>"},
        {"spring": "CODE-1"},
        # A reference of the recipient's own, in the reference alphabet.
        re.sub(r"[^A-Za-z0-9_-]", "_", f"ref-{recipient}")[:64],
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


# -- links planted in the output folder ----------------------------------------------------

#: What may be found at a name the writers use, left by someone who can write the folder.
PLANTS = ("nothing", "link-to-file", "link-to-folder", "dangling-link", "hard-link")
VICTIM = b"not yours to overwrite\n"


def _plant(kind: str, at: Path, outside: Path) -> None:
    if kind == "link-to-file":
        at.symlink_to(outside / "victim.txt")
    elif kind == "link-to-folder":
        at.symlink_to(outside / "victim-folder")
    elif kind == "dangling-link":
        at.symlink_to(outside / "nowhere")
    elif kind == "hard-link":
        os.link(outside / "victim.txt", at)


def _names(fmt: str) -> list[str]:
    """Every name a run of two recipients (c1, c2), two workers, run id r1 writes at."""
    if fmt == "eml":
        return [".promomail-write-test", ".c1.eml.tmp", "c1.eml", ".c2.eml.tmp", "c2.eml"]
    base = "mail.jsonl" if fmt == "jsonl" else "stdout"
    names = [f".{base}.r1.part0", f".{base}.r1.part1"]
    if fmt == "jsonl":
        names += [".mail.jsonl.write-test", ".mail.jsonl.r1.joined", "mail.jsonl"]
    return names


def _run_writers(fmt: str, folder: Path) -> bytes | None:
    """Two messages written as a render writes them; what went to stdout, if that was the target."""
    output = OutputFormat.EML if fmt == "eml" else OutputFormat.JSONL
    path = None if fmt == "stdout" else folder if fmt == "eml" else folder / "mail.jsonl"
    target = OutputTarget(output, path)
    stdout = io.BytesIO()
    with (
        mock.patch.dict(os.environ, {"TMPDIR": str(folder)}),
        mock.patch.object(sys, "stdout", mock.Mock(buffer=stdout)),
    ):
        target.prepare()
        writers = [target.open_writer(worker, "r1") for worker in range(2)]
        _write(writers[0], _message("c1"))
        _write(writers[1], _message("c2"))
        for writer in writers:
            writer.close()
        target.finish(2, "r1")
    return stdout.getvalue()


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["eml", "jsonl", "stdout"]),
    st.lists(st.sampled_from(PLANTS), min_size=5, max_size=5),
)
def test_links_planted_in_the_output_folder_never_change_their_target(
    fmt: str, plants: list[str]
) -> None:
    with tempfile.TemporaryDirectory() as temporary:
        outside = Path(temporary) / "outside"
        (outside / "victim-folder").mkdir(parents=True)
        (outside / "victim.txt").write_bytes(VICTIM)
        (outside / "victim-folder" / "kept.txt").write_bytes(VICTIM)
        folder = Path(temporary) / "out"
        folder.mkdir()
        for name, kind in zip(_names(fmt), plants, strict=False):
            _plant(kind, folder / name, outside)

        try:
            printed = _run_writers(fmt, folder)
        except MailingError as exc:
            # The output named is (a link to) a folder: refused before anything is written.
            assert fmt == "jsonl" and plants[4] == "link-to-folder", exc
            assert "Is a directory" in str(exc)
            printed = None

        assert (outside / "victim.txt").read_bytes() == VICTIM
        assert [p.name for p in (outside / "victim-folder").iterdir()] == ["kept.txt"]
        assert (outside / "victim-folder" / "kept.txt").read_bytes() == VICTIM
        assert sorted(p.name for p in outside.iterdir()) == ["victim-folder", "victim.txt"]
        if fmt == "eml":
            for recipient in ("c1", "c2"):
                written = folder / f"{recipient}.eml"
                assert not written.is_symlink() and written.is_file()
                assert _parse(written)["To"] == f"{recipient}@example.com"
            return
        if printed is None:
            return
        final = printed if fmt == "stdout" else (folder / "mail.jsonl").read_bytes()
        assert fmt == "stdout" or not (folder / "mail.jsonl").is_symlink()
        assert [json.loads(line)["recipient"] for line in final.splitlines()] == ["c1", "c2"]
        assert not any(name.startswith(".") for name in os.listdir(folder) if "r1" in name)


@pytest.mark.parametrize("fmt", [OutputFormat.EML, OutputFormat.JSONL])
def test_a_render_writes_through_no_planted_link(
    db_url: str, engine: Engine, tmp_path: Path, fmt: OutputFormat
) -> None:
    pool_with_codes(engine, "spring", 10)
    template = write_template(tmp_path, "{{ client.promocode('spring') }}\n")
    ids = customer_ids(4)
    recipients = write_recipients(tmp_path, ids)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_bytes(VICTIM)
    folder = tmp_path / "out"
    folder.mkdir()
    if fmt is OutputFormat.EML:
        out = folder
        linked = [".promomail-write-test", *(f".{i}.eml.tmp" for i in ids[1:]), f"{ids[0]}.eml"]
        hard = f".{ids[0]}.eml.tmp"
    else:
        out = folder / "mail.jsonl"
        linked = ["mail.jsonl"]
        hard = ".mail.jsonl.write-test"
    for name in linked:
        (folder / name).symlink_to(outside / "victim.txt")
    os.link(outside / "victim.txt", folder / hard)

    summary = render(db_url, template, recipients, "m-links", out, fmt=fmt)

    assert (outside / "victim.txt").read_bytes() == VICTIM
    assert summary.totals.rendered == len(ids) and not summary.totals.failures
    codes = initial_codes(engine, "m-links", "spring")
    if fmt is OutputFormat.EML:
        for recipient in ids:
            written = folder / f"{recipient}.eml"
            assert not written.is_symlink()
            assert codes[recipient] in _parse(written).get_content()
    else:
        records = read_jsonl(out)
        assert not out.is_symlink()
        assert {r["recipient"]: r["codes"]["spring"] for r in records} == codes
