"""Dirty recipients files: one code, one person, one message, or one clear error.

Recipient data comes from CRMs and web forms. Whatever a value holds, a
recipient either renders (its message written, parsing back to its own
values and one address) or fails with a reason naming file, line and
column, consuming nothing; a file that is ambiguous as a whole is refused
before any code moves. Every store test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import email
import email.policy
import io
import json
import re
import sys
import uuid
from collections.abc import Mapping, Sequence
from contextlib import suppress
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

import promomail.templating.mailing.outputs
from promomail.pools.errors import InvalidSetting, PromomailError
from promomail.templating.choices import OutputFormat
from promomail.templating.errors import RecipientError
from promomail.templating.mailing.outputs import OutputTarget, eml_name
from promomail.templating.mailing.recipients import PLAIN_ADDRESS, address_header, one_address
from promomail.templating.mailing.request import RenderRequest
from tests.support import cli_helpers
from tests.support.render_helpers import (
    counts,
    full_snapshot,
    initial_codes,
    issuances,
    pool_with_codes,
    read_jsonl,
    render,
    write_template,
)

#: The subject shows a column, the text the code: both can be checked back.
TEMPLATE = """\
{% block subject %}Hello {{ client.first_name }}{% endblock %}
{% block text %}{{ client.first_name }}: {{ client.promocode('spring') }}{% endblock %}
"""


def _csv(folder: Path, rows: Sequence[Sequence[str]], name: str = "people.csv") -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    path = folder / name
    path.write_text(buffer.getvalue(), encoding="utf-8", newline="")
    return str(path)


def _jsonl(folder: Path, records: Sequence[Mapping[str, Any]], name: str = "people.jsonl") -> str:
    path = folder / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def _parse_eml(path: Path) -> EmailMessage:
    parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _written(out: Path, fmt: OutputFormat) -> dict[str, dict[str, Any]]:
    """recipient → {to, subject, codes-in-text} of every message written."""
    found: dict[str, dict[str, Any]] = {}
    if fmt is OutputFormat.JSONL:
        for record in read_jsonl(out) if out.exists() else []:
            assert record["recipient"] not in found
            found[record["recipient"]] = {
                "to": [record["to"]] if record["to"] else [],
                "subject": record["parts"]["subject"],
                "text": record["parts"]["text"],
                "codes": record["codes"],
            }
        return found
    for path in out.iterdir() if out.exists() else []:
        assert not path.name.startswith("."), f"a temporary file was left: {path.name}"
        message = _parse_eml(path)
        assert message.defects == []
        recipient = str(message["X-Promomail-Recipient"])
        assert recipient not in found and path.name == eml_name(recipient)
        body = message.get_body(("plain",))
        assert isinstance(body, EmailMessage)
        to = message["To"]
        found[recipient] = {
            "to": [a.addr_spec for a in to.addresses] if to is not None else [],
            "subject": str(message["Subject"]),
            "text": body.get_content().replace("\r\n", "\n"),
        }
    return found


# -- values that cannot go into a message -----------------------------------------


@pytest.mark.parametrize("fmt", [OutputFormat.EML, OutputFormat.JSONL])
def test_a_message_that_cannot_be_written_fails_alone_and_consumes_nothing(
    db_url: str, engine: Engine, tmp_path: Path, fmt: OutputFormat
) -> None:
    pool_with_codes(engine, "spring", 10)
    template = write_template(tmp_path, TEMPLATE)
    recipients = _csv(
        tmp_path,
        [
            ["id", "email", "first_name"],
            ["ok1", "ok1@example.com", "Ada"],
            ["crlf-mail", "x@example.com\r\nBcc: victim@example.com", "Eve"],
            ["lf-name", "lf@example.com", "Mallory\nBcc: victim@example.com"],
            ["cr-name", "cr@example.com", "Tr\rent"],
            ["ok2", "ok2@example.com", "Grace"],
        ],
    )
    out = tmp_path / ("eml" if fmt is OutputFormat.EML else "out.jsonl")

    for _attempt in range(2):  # a re-run gets as far: nothing stops at a bad recipient
        summary = render(db_url, template, recipients, "m1", out, fmt=fmt, chunk_size=2)
        assert summary.totals.status == "finished" and summary.totals.rendered == 2
        failed = {
            recipient: (line, reason) for recipient, line, reason, _kind in summary.totals.failures
        }
        assert sorted(failed) == ["cr-name", "crlf-mail", "lf-name"]
        assert failed["crlf-mail"][0] == 3
        assert re.match(
            r".*people\.csv, line 3, column 'email': .*carriage return", failed["crlf-mail"][1]
        )
        assert re.match(
            r".*people\.csv, line 5, column 'first_name': .*line feed", failed["lf-name"][1]
        )
        assert "subject" in failed["lf-name"][1]
        assert re.match(r".*people\.csv, line 7, column 'first_name': ", failed["cr-name"][1])

        written = _written(out, fmt)
        stored = initial_codes(engine, "m1", "spring")
        assert sorted(written) == sorted(stored) == ["ok1", "ok2"]
        for recipient, message in written.items():
            assert message["to"] == [f"{recipient}@example.com"]
            assert stored[recipient] in message["text"]
        assert counts(engine, "spring").available == 8


def test_mailing_ids_that_cannot_go_into_a_header_are_refused_up_front() -> None:
    out = OutputTarget(OutputFormat.EML, Path("unused"))
    for bad in ("m\r\nBcc: x", "m\n1", "m\x00", "tab\tbed", " padded", "m\u2028", "x" * 201):
        with pytest.raises(InvalidSetting, match=r"^mailing_id ") as refused:
            RenderRequest("t.j2", "r.csv", bad, "sqlite://", out)
        assert refused.value.settings == ("mailing_id",)
    assert RenderRequest("t.j2", "r.csv", "spring-2027 / wave 1", "sqlite://", out)
    # Variables are in every message: what no message can hold is refused once.
    for bad in ("nul\x00", "not utf-8 \udce9"):
        with pytest.raises(InvalidSetting, match=r"^variables campaign: the value holds"):
            RenderRequest("t.j2", "r.csv", "m", "sqlite://", out, variables={"campaign": bad})


def test_the_cli_refuses_a_bad_mailing_id_with_one_error_line(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    pool_with_codes(engine, "spring", 3)
    template = write_template(tmp_path, TEMPLATE)
    recipients = _csv(tmp_path, [["id", "email", "first_name"], ["a", "a@example.com", "A"]])
    before = full_snapshot(engine)
    result = cli_helpers.Cli(db_url)(
        "render", template, "--recipients", recipients, "--mailing", "m\nX-Evil: 1",
        "--format", "eml", "--out", str(tmp_path / "eml"),
    )  # fmt: skip
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error: --mailing ") and "line feed" in line
    assert full_snapshot(engine) == before


def test_header_lookalikes_in_values_fail_the_eml_recipient(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    # "=?utf-8?q?...?=" would be decoded by every mail reader: not what was meant.
    pool_with_codes(engine, "spring", 5)
    template = write_template(tmp_path, TEMPLATE)
    recipients = _csv(
        tmp_path,
        [
            ["id", "email", "first_name"],
            ["ew", "ew@example.com", "=?utf-8?q?Admin?="],
            ["ok", "ok@example.com", "Ada"],
        ],
    )
    out = tmp_path / "eml"
    summary = render(db_url, template, recipients, "m1", out, fmt=OutputFormat.EML)
    [(recipient, _line, reason, _kind)] = summary.totals.failures
    assert recipient == "ew" and "Subject header would read back as" in reason
    assert sorted(initial_codes(engine, "m1", "spring")) == ["ok"]
    assert [p.name for p in out.iterdir()] == ["ok.eml"]


# -- one recipient, one address -----------------------------------------------------

NOT_ONE_ADDRESS = [
    "a@example.com, b@example.com",
    "a@example.com; b@example.com",
    '["a@example.com", "b@example.com"]',
    "friends: a@example.com, b@example.com;",
    "undisclosed-recipients:;",
    "Ada <a@example.com>, b@example.com",
    "not an address",
    "n/a",
    "a@",
    "@example.com",
    "a@@example.com",
    "a..b@example.com",
    "jürgen@example.com",
    "a@example.com\tb@example.com",
    "<>",
    # The standard library's parser fails on these from inside (AttributeError, TypeError, IndexError).
    ".<a@example.com>",
    "a.<a@b>",
    ".:a@example.com;",
    ".@",
    ".:",
]


@pytest.mark.parametrize("value", NOT_ONE_ADDRESS)
def test_a_value_that_is_not_exactly_one_address_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(value)) + "|holds"):
        one_address(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a@example.com", "a@example.com"),
        ("  a@example.com ", "a@example.com"),
        ("Ada Lovelace <ada@example.com>", "Ada Lovelace <ada@example.com>"),
        ('"Lovelace, Ada" <ada@example.com>', '"Lovelace, Ada" <ada@example.com>'),
        ("o'brien+tag@sub.example.co.uk", "o'brien+tag@sub.example.co.uk"),
        ("", None),
        ("   ", None),
        (None, None),
    ],
)
def test_one_address_is_accepted_as_written(value: str | None, expected: str | None) -> None:
    assert one_address(value) == expected


@given(st.from_regex(PLAIN_ADDRESS, fullmatch=True))
def test_the_plain_address_shortcut_agrees_with_the_standard_parser(text: str) -> None:
    header = address_header(text)
    assert not header.defects and len(header.addresses) == 1
    assert header.addresses[0].addr_spec == text and header.addresses[0].display_name == ""
    assert one_address(text) == text


#: Address punctuation, densely, alone and as the display name of an address:
#: where the standard parser's own failures hide.
_PUNCTUATION = st.text(alphabet=' .<>@:;,"()[]\\ab', max_size=6)
ADDRESS_SYNTAX = st.one_of(
    _PUNCTUATION,
    st.tuples(_PUNCTUATION, st.emails()).map(lambda parts: f"{parts[0]}<{parts[1]}>"),
)


@settings(max_examples=300)
@given(ADDRESS_SYNTAX)
def test_address_punctuation_is_one_address_or_a_reason(value: str) -> None:
    try:
        one_address(value)
    except ValueError as exc:
        assert str(exc)


@given(
    st.one_of(
        st.text(max_size=40),
        st.emails().map(str),
        st.lists(st.emails()).map(", ".join),
    )
)
def test_an_accepted_address_is_exactly_one_mailbox_to_the_standard_parser(value: str) -> None:
    try:
        address = one_address(value)
    except ValueError as exc:
        assert str(exc)
        return
    if address is None:
        assert not value.strip()
        return
    header = address_header(address)
    assert not header.defects and len(header.addresses) == 1
    assert all(group.display_name is None for group in header.groups)
    assert header.addresses[0].username and header.addresses[0].domain


@pytest.mark.parametrize("fmt", [OutputFormat.EML, OutputFormat.JSONL])
def test_recipients_without_exactly_one_address_fail_and_get_no_code(
    db_url: str, engine: Engine, tmp_path: Path, fmt: OutputFormat
) -> None:
    pool_with_codes(engine, "spring", 30)
    template = write_template(tmp_path, TEMPLATE)
    rows = [["id", "email", "first_name"], ["good", "good@example.com", "Ada"]]
    rows += [[f"bad{i}", value, "X"] for i, value in enumerate(NOT_ONE_ADDRESS)]
    recipients = _csv(tmp_path, rows)
    out = tmp_path / ("eml" if fmt is OutputFormat.EML else "out.jsonl")

    summary = render(db_url, template, recipients, "m1", out, fmt=fmt, chunk_size=4)

    assert summary.totals.rendered == 1 and len(summary.totals.failures) == len(NOT_ONE_ADDRESS)
    for recipient, line, reason, _kind in summary.totals.failures:
        assert reason.startswith(f"{recipients}, line {line}, column 'email': ")
        assert int(recipient[3:]) == line - 3
    assert sorted(initial_codes(engine, "m1", "spring")) == ["good"]
    assert counts(engine, "spring").available == 29
    assert _written(out, fmt)["good"]["to"] == ["good@example.com"]


def test_jsonl_recipients_follow_the_same_address_rule(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    pool_with_codes(engine, "spring", 5)
    template = write_template(tmp_path, TEMPLATE)
    records: list[dict[str, Any]] = [
        {"id": "good", "email": "Good <good@example.com>", "first_name": "A"},
        {"id": "two", "email": "a@example.com,b@example.com", "first_name": "B"},
        {"id": "number", "email": 42, "first_name": "C"},
        {"id": "none", "email": None, "first_name": "D"},
    ]
    out = tmp_path / "eml"
    summary = render(db_url, template, _jsonl(tmp_path, records), "m1", out, fmt=OutputFormat.EML)
    assert sorted(f[0] for f in summary.totals.failures) == ["number", "two"]
    written = _written(out, OutputFormat.EML)
    assert written["good"]["to"] == ["good@example.com"] and written["none"]["to"] == []
    assert sorted(initial_codes(engine, "m1", "spring")) == ["good", "none"]


def test_a_json_list_of_addresses_is_refused_before_anything_moves(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    pool_with_codes(engine, "spring", 5)
    template = write_template(tmp_path, TEMPLATE)
    records: list[dict[str, Any]] = [
        {"id": "a", "email": "a@example.com", "first_name": "A"},
        {"id": "b", "email": ["b@example.com", "c@example.com"], "first_name": "B"},
    ]
    before = full_snapshot(engine)
    with pytest.raises(
        RecipientError, match=r"people\.jsonl, line 2, column 'email': holds a list"
    ):
        render(db_url, template, _jsonl(tmp_path, records), "m1", tmp_path / "out.jsonl")
    assert full_snapshot(engine) == before


# -- one recipient, one output -------------------------------------------------------

CLASHING_IDS = [
    "Ada",
    "ada",
    "ADA",
    "c/1",
    "c_1",
    "c 1",
    "c:1",
    "c\\1",
    "c_1+" + eml_name("c/1")[4:-4],  # looks like the hashed name of "c/1"
    "con",
    ".hidden",
    "x" * 120 + "1",
    "x" * 120 + "2",
]


def test_eml_names_are_distinct_even_where_case_is_ignored() -> None:
    names = [eml_name(i) for i in CLASHING_IDS]
    assert len({n.casefold() for n in names}) == len(CLASHING_IDS)
    for name in names:
        assert name.endswith(".eml") and not name.startswith(".") and "/" not in name
        assert len(name.encode()) < 128 and name.split(".")[0].lower() != "con"


def test_every_recipient_gets_a_file_of_its_own(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    pool_with_codes(engine, "spring", len(CLASHING_IDS))
    template = write_template(tmp_path, TEMPLATE)
    rows = [["id", "email", "first_name"]]
    rows += [[rid, f"r{i}@example.com", f"N{i}"] for i, rid in enumerate(CLASHING_IDS)]
    out = tmp_path / "eml"
    summary = render(db_url, template, _csv(tmp_path, rows), "m1", out, fmt=OutputFormat.EML)
    assert summary.ok and summary.totals.rendered == len(CLASHING_IDS)
    written = _written(out, OutputFormat.EML)
    assert sorted(written) == sorted(CLASHING_IDS)
    assert len({p.name.casefold() for p in out.iterdir()}) == len(CLASHING_IDS)
    stored = initial_codes(engine, "m1", "spring")
    for i, rid in enumerate(CLASHING_IDS):
        assert written[rid]["subject"] == f"Hello N{i}"
        assert written[rid]["text"] == f"N{i}: {stored[rid]}\n"


def test_the_writer_never_replaces_a_message_it_wrote_in_this_run(
    db_url: str, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Should two ids ever get one name, the second recipient fails alone.
    monkeypatch.setattr(promomail.templating.mailing.outputs, "eml_name", lambda _id: "same.eml")
    pool_with_codes(engine, "spring", 5)
    template = write_template(tmp_path, TEMPLATE)
    rows = [["id", "email", "first_name"], ["a", "a@example.com", "A"], ["b", "b@example.com", "B"]]
    out = tmp_path / "eml"
    summary = render(db_url, template, _csv(tmp_path, rows), "m1", out, fmt=OutputFormat.EML)
    [(recipient, _line, reason, _kind)] = summary.totals.failures
    assert recipient == "b" and "already taken in this run by recipient 'a'" in reason
    assert sorted(initial_codes(engine, "m1", "spring")) == ["a"]
    assert str(_parse_eml(out / "same.eml")["X-Promomail-Recipient"]) == "a"
    # A later run of the same mailing may rewrite its own file.
    again = render(db_url, template, _csv(tmp_path, rows[:2]), "m1", out, fmt=OutputFormat.EML)
    assert again.ok and again.totals.reused_codes == 1


# -- ambiguous recipients files -------------------------------------------------------

AMBIGUOUS: list[tuple[str, bytes, str]] = [
    ("dup.csv", b"id,email,email\na,a@x.com,b@x.com\n", "line 1, column 3: column 'email' appears twice"),
    ("dup2.csv", b"id, email ,email\na,a@x.com,b@x.com\n", "line 1, column 3: column 'email' appears twice"),
    ("empty-name.csv", b"id,,email\na,x,a@x.com\n", "line 1, column 2: empty column name"),
    ("trailing.csv", b"id,email,\na,a@x.com,\n", "line 1, column 3: empty column name"),
    ("nul.csv", b"id,email,first_name\na,a@x.com,A\nb,b@x.com,B\x00ob\n", "line 3, column 3 ('first_name'): holds a NUL character (U+0000)"),
    ("nul-id.csv", b"id,email\na\x00,a@x.com\n", "line 2, column 1 ('id'): holds a NUL character"),
    ("latin1.csv", b"id,email,first_name\na,a@x.com,Jos\xe9\n", "line 2, column 3 ('first_name'): holds bytes that are not UTF-8 (byte 0xE9)"),
    ("latin1-header.csv", b"id,pr\xe9nom\na,b\n", "line 1, column 2: the column name holds bytes that are not UTF-8"),
    ("blank-id.csv", b"id,email\na,a@x.com\n \t ,b@x.com\n", "line 3, column 1 ('id'): empty id"),
    ("lf-id.csv", b'id,email\n"a\nb",a@x.com\n', "line 2, column 1 ('id'): the id holds a line feed (U+000A)"),
    ("long-id.csv", b"id\n" + b"x" * 201 + b"\n", "line 2, column 1 ('id'): the id is 201 characters long"),
    ("nested-id.jsonl", b'{"id": {"k": 1}}\n', "line 1, column 'id': holds an object"),
    ("list-id.jsonl", b'{"id": [1]}\n', "line 1, column 'id': holds a list"),
    ("nested.jsonl", b'{"id": "a"}\n{"id": "b", "name": {"first": "B"}}\n', "line 2, column 'name': holds an object"),
    ("bool-id.jsonl", b'{"id": true}\n', "line 1, column 'id': the id is true; an id is a string or a whole number"),
    ("float-id.jsonl", b'{"id": 1.5}\n', "line 1, column 'id': the id is 1.5"),
    ("blank-id.jsonl", b'{"id": " \\t "}\n', "line 1: no 'id'"),
    ("dup-key.jsonl", b'{"id": "a", "email": "a@x.com", "email": "b@x.com"}\n', "line 1, column 'email': the key appears twice"),
    ("nul.jsonl", b'{"id": "a", "name": "x\\u0000y"}\n', "line 1, column 'name': holds a NUL character"),
    ("surrogate.jsonl", b'{"id": "a", "name": "x\\ud800y"}\n', "line 1, column 'name': holds a lone surrogate (\\ud800)"),
    ("latin1.jsonl", b'{"id": "a"}\n{"id": "b", "name": "Jos\xe9"}\n', "line 2, column 'name': holds bytes that are not UTF-8 (byte 0xE9)"),
    ("lf-id.jsonl", b'{"id": "a\\nb"}\n', "line 1, column 'id': the id holds a line feed"),
    ("nan.jsonl", b'{"id": "a", "score": NaN}\n', "line 1: invalid JSON (NaN is not a JSON value)"),
    ("empty-key.jsonl", b'{"id": "a", "": 1}\n', "line 1: column name '' is empty"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "data", "message"), AMBIGUOUS, ids=[a[0] for a in AMBIGUOUS])
def test_ambiguous_files_are_refused_naming_file_line_and_column(
    db_url: str, engine: Engine, tmp_path: Path, name: str, data: bytes, message: str
) -> None:
    pool_with_codes(engine, "spring", 5)
    template = write_template(tmp_path, TEMPLATE.replace("client.first_name", "client.id"))
    path = tmp_path / name
    path.write_bytes(data)
    before = full_snapshot(engine)
    with pytest.raises(RecipientError) as refused:
        render(db_url, template, str(path), "m1", tmp_path / "out.jsonl")
    assert str(refused.value).startswith(f"{path}, {message}"), str(refused.value)
    assert full_snapshot(engine) == before
    assert not (tmp_path / "out.jsonl").exists()


def test_json_ids_are_text_one_and_the_string_one_are_the_same_recipient(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    pool_with_codes(engine, "spring", 5)
    template = write_template(tmp_path, "{{ client.promocode('spring') }}")
    records: list[dict[str, Any]] = [
        {"id": 1},
        {"id": "1"},
        {"id": " 2 "},
        {"id": 2},
        {"id": 12345678901234567890},
    ]
    out = tmp_path / "out.jsonl"
    summary = render(db_url, template, _jsonl(tmp_path, records), "m1", out)
    assert summary.ok and summary.totals.recipients == 3
    assert sorted(r["recipient"] for r in read_jsonl(out)) == ["1", "12345678901234567890", "2"]
    assert sorted(initial_codes(engine, "m1", "spring")) == ["1", "12345678901234567890", "2"]


# -- any value at all -------------------------------------------------------------------

#: Values without NUL, which refuses the whole file (ids of any text still bring
#: it in): the interesting values are those one recipient's message must cope with.
_no_nul = st.characters(codec="utf-8", exclude_characters="\x00")
_texts = st.one_of(
    st.text(_no_nul, max_size=30),
    st.text(st.sampled_from("a@.,;:<>\"'()[]\\ \t\r\n\x0b\x1c\x85\u2028=?é✓"), max_size=20),
    st.text(_no_nul, min_size=1000, max_size=1200),
)
_emails = st.one_of(
    st.emails().map(str),
    st.builds(lambda a, b: f"{a}, {b}", st.emails(), st.emails()),
    st.builds(lambda name, a: f"{name} <{a}>", st.text(max_size=12), st.emails()),
    _texts,
)
#: Mostly usable ids (the interesting part is the values), some of anything.
_ids = st.one_of(
    st.from_regex(r"[A-Za-z0-9 ._/+=?-]{1,10}", fullmatch=True),
    st.integers(0, 50),
    st.from_regex(r"[a-z]{1,3}", fullmatch=True),
    st.text(max_size=8),
)
_records = st.lists(
    st.fixed_dictionaries({"id": _ids, "email": _emails, "first_name": _texts}),
    min_size=1,
    max_size=5,
)


def _recipients_file(folder: Path, records: list[dict[str, Any]], as_csv: bool) -> str:
    name = f"r-{uuid.uuid4().hex[:8]}"
    if as_csv:
        rows = [["id", "email", "first_name"]]
        rows += [[str(r["id"]), r["email"], r["first_name"]] for r in records]
        path = folder / f"{name}.csv"
        buffer = io.StringIO()
        csv.writer(buffer).writerows(rows)
        path.write_bytes(buffer.getvalue().encode("utf-8", "surrogatepass"))
        return str(path)
    path = folder / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def _expected_subject(first_name: str) -> str:
    return f"Hello {first_name}".strip()


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(records=_records, as_csv=st.booleans(), eml=st.booleans())
def test_any_values_either_render_exactly_or_fail_alone(
    db_url: str,
    engine: Engine,
    tmp_path: Path,
    records: list[dict[str, Any]],
    as_csv: bool,
    eml: bool,
) -> None:
    with suppress(PromomailError):  # the store outlives the examples: one pool for all
        pool_with_codes(engine, "spring", 400)
    folder = tmp_path / uuid.uuid4().hex[:8]
    folder.mkdir()
    template = write_template(folder, TEMPLATE)
    recipients = _recipients_file(folder, records, as_csv)
    fmt = OutputFormat.EML if eml else OutputFormat.JSONL
    out = folder / ("eml" if eml else "out.jsonl")
    mailing = f"m-{uuid.uuid4().hex[:8]}"
    available = counts(engine, "spring").available
    try:
        summary = render(db_url, template, recipients, mailing, out, fmt=fmt, chunk_size=2)
    except RecipientError:
        event("refused as a whole: " + str(sys.exc_info()[1]).split(": ", 1)[1][:50])
        # Refused as a whole: nothing moved, nothing written.
        assert issuances(engine, mailing) == [] and counts(engine, "spring").available == available
        assert not out.exists() or not any(out.iterdir())
        return
    except PromomailError as exc:  # any other refusal must be a clear one too
        pytest.fail(f"unexpected refusal: {exc}")

    written = _written(out, fmt)
    event(f"rendered {min(len(written), 2)}+, failed {min(len(summary.totals.failures), 2)}+")
    stored = initial_codes(engine, mailing, "spring")
    failed = {recipient for recipient, _line, _reason, _kind in summary.totals.failures}
    # Never a code recorded for a message that was not written, nor the reverse.
    assert sorted(written) == sorted(stored)
    assert not failed & set(written)
    assert len(written) + len(failed) == summary.totals.recipients
    assert counts(engine, "spring").available == available - len(written)
    by_id: dict[str, dict[str, Any]] = {}
    for record in records:
        key = str(record["id"]).strip()
        by_id.setdefault(key, record)
    for recipient, message in written.items():
        record = by_id[recipient]
        first_name = record["first_name"]
        assert message["subject"] == _expected_subject(first_name)
        text = f"{first_name}: {stored[recipient]}"
        if eml:  # RFC 5322 has one kind of line end, and a text part ends with one
            text = re.sub("\r\n?", "\n", text)
            text += "" if text.endswith("\n") else "\n"
        assert message["text"] == text
        address = one_address(record["email"])
        if address is None:
            assert message["to"] == []
        elif eml:
            assert message["to"] == [address_header(address).addresses[0].addr_spec]
        else:
            assert message["to"] == [address]
    for recipient, line, reason, _kind in summary.totals.failures:
        assert reason and line >= 1 and recipient in by_id
