"""Addresses as they are written: an internationalised domain in ASCII, or that recipient fails.

RFC 2047 allows no encoded word in an address, so ``a@bücher.example``
written as the standard library would (``a@=?utf-8?q?b=C3=BCcher?=.example``)
is undeliverable, and its code would be spent on nobody. The address is
decided in one place (``one_address``), so JSON Lines ``to`` and the
``.eml`` ``To`` agree: a Unicode domain comes out as its IDNA 2008 A-labels,
a domain that cannot be one (an invisible character in it, a disallowed
code point, an invalid ``xn--`` label) fails that recipient alone, and a
local part that is not ASCII is refused as needing SMTPUTF8.
"""

from __future__ import annotations

import csv
import email
import email.policy
import re
import unicodedata
from pathlib import Path

import idna
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from promomail.pools.addresses import address_header, ascii_domain, one_address
from promomail.templating.choices import OutputFormat
from promomail.templating.mailing.outputs import EmlWriter, RenderedMessage
from promomail.templating.mailing.returns import return_listed
from tests.support.render_helpers import initial_codes, pool_with_codes, read_jsonl, render


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("a@bücher.example", "a@xn--bcher-kva.example"),
        ("a@BÜCHER.Example", "a@xn--bcher-kva.example"),
        ("Ann <a@bücher.example>", "Ann <a@xn--bcher-kva.example>"),
        ('"Groß, Jürgen" <j@bücher.example>', '"Groß, Jürgen" <j@xn--bcher-kva.example>'),
        # IDNA 2008: ß is a letter of its own (IDNA 2003, Python's codec, makes it "ss").
        ("a@straße.de", "a@xn--strae-oqa.de"),
        ("a@例え.テスト", "a@xn--r8jz45g.xn--zckzah"),
        ("a@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com", "a@example.com"),  # full width
        ("a@xn--bcher-kva.example", "a@xn--bcher-kva.example"),
        ("a@example.com", "a@example.com"),
        ("a@[192.0.2.1]", "a@[192.0.2.1]"),
    ],
)
def test_an_internationalised_domain_is_written_in_ascii(value: str, written: str) -> None:
    assert one_address(value) == written


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("a@bü\u200bcher.example", "U+200B (zero width space)"),
        ("a@bücher\u200b.example", "U+200B"),
        ("a@exa\u00admple.com", "U+00AD (soft hyphen)"),
        ("a@bü\u200dcher.example", "U+200D"),
        ("a@bü\ufe0fcher.example", "U+FE0F"),
        ("a@bü\u2060cher.example", "U+2060"),
        ("a@xn--zz.example", "not valid IDNA"),
        ("a@b☃.example", "not a valid internationalised domain name"),
        ("a@bü_cher.example", "not a valid internationalised domain name"),
        ("a@" + "ü" * 64 + ".example", "not a valid internationalised domain name"),
        ("ü@example.com", "SMTPUTF8"),
        ("Ann <jürgen@example.com>", "SMTPUTF8"),
    ],
)
def test_what_cannot_be_written_in_ascii_is_refused(value: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)) as refused:
        one_address(value)
    assert repr(value) in str(refused.value)


_WRITER = EmlWriter(Path("unused"))  # encode() only: nothing is written


def _eml_to(address: str) -> tuple[str, str]:
    """(the To line as written, the address a mail reader sees) of a message to ``address``."""
    return _to_line(_WRITER.encode(RenderedMessage("m", "r", address, {"body": "hi"}, {})))


def _to_line(data: bytes) -> tuple[str, str]:
    head = re.sub(r"\r\n[ \t]+", " ", data.decode("ascii").split("\r\n\r\n", 1)[0])
    line = next(raw for raw in head.split("\r\n") if raw.startswith("To:"))
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    return line, parsed["To"].addresses[0].addr_spec


#: Domain text from everything Unicode has that a domain could be made of or
#: spoiled by: letters and digits of any script, marks, format and space
#: characters, dots of other scripts, hyphens, ASCII.
_DOMAIN_CHARS = st.characters(
    categories=["L", "M", "N", "Cf", "Zs", "Pd", "Po", "So"],
    exclude_characters="@<>()[]\\,;:\"'",
)
DOMAINS = st.lists(st.text(_DOMAIN_CHARS, min_size=1, max_size=12), min_size=1, max_size=4).map(
    ".".join
)


def _is_valid_idna(domain: str) -> bool:
    try:
        return idna.encode(idna.decode(domain)).decode() == domain.lower()
    except (idna.IDNAError, UnicodeError):
        return False


@settings(max_examples=500, deadline=None)
@given(DOMAINS)
@example("bücher.example")
@example("bü\u200bcher.example")
@example("straße.de")
def test_a_unicode_domain_comes_out_as_valid_idna_or_is_refused(domain: str) -> None:
    value = f"user@{domain}"
    try:
        written = one_address(value)
    except ValueError as exc:
        assert str(exc)
        return
    assert written is not None
    # The domain as the address parser reads it (whitespace around it is no part of it).
    seen = address_header(value.strip()).addresses[0].domain
    [address] = address_header(written).addresses
    out = address.domain
    assert out.isascii() and address.username == "user"
    if seen.isascii():
        assert out == seen
    else:
        assert _is_valid_idna(out), out
        # Nothing invisible was dropped on the way.
        assert not any(unicodedata.category(c) == "Cf" for c in seen)
        assert out == ascii_domain(seen)
    # The .eml says exactly what JSON Lines says: no encoded word in the address.
    line, read_back = _eml_to(written)
    assert "=?" not in line and read_back == address.addr_spec


# -- a mailing: JSON Lines and .eml agree, a bad domain fails that recipient alone ---------

TEMPLATE = (
    "{% block subject %}Hi{% endblock %}{% block text %}{{ client.promocode('p') }}{% endblock %}"
)
PEOPLE = [
    ("plain", "plain@example.com", "plain@example.com"),
    ("umlaut", "a@bücher.example", "a@xn--bcher-kva.example"),
    ("named", "Ann <ann@BÜCHER.example>", "ann@xn--bcher-kva.example"),
    ("sharp-s", "s@straße.de", "s@xn--strae-oqa.de"),
    ("zwsp", "z@bü\u200bcher.example", None),
    ("bad-label", "x@xn--zz.example", None),
    ("local", "jürgen@example.com", None),
]


def _people(folder: Path) -> str:
    path = folder / "people.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "email"])
        writer.writerows((rid, value) for rid, value, _ in PEOPLE)
    return str(path)


@pytest.mark.parametrize("fmt", [OutputFormat.JSONL, OutputFormat.EML])
def test_a_mailing_writes_ascii_domains_and_fails_bad_ones_alone(
    db_url: str, engine: Engine, tmp_path: Path, fmt: OutputFormat
) -> None:
    pool_with_codes(engine, "p", 20)
    template = tmp_path / "t.j2"
    template.write_text(TEMPLATE, encoding="utf-8")
    people = _people(tmp_path)
    out = tmp_path / ("out" if fmt is OutputFormat.EML else "out.jsonl")

    summary = render(db_url, str(template), people, "m-idna", out, fmt=fmt)

    good = {rid: expected for rid, _, expected in PEOPLE if expected is not None}
    failed = {rid: reason for rid, _line, reason, _kind in summary.totals.failures}
    assert sorted(failed) == sorted(rid for rid, _, expected in PEOPLE if expected is None)
    assert "column 'email'" in failed["zwsp"] and "U+200B" in failed["zwsp"]
    assert "not valid IDNA" in failed["bad-label"]
    assert "SMTPUTF8" in failed["local"]
    codes = initial_codes(engine, "m-idna", "p")
    assert sorted(codes) == sorted(good), "no code for a recipient who failed"
    if fmt is OutputFormat.JSONL:
        records = {r["recipient"]: r for r in read_jsonl(out)}
        assert sorted(records) == sorted(good)
        for rid, expected in good.items():
            assert address_header(records[rid]["to"]).addresses[0].addr_spec == expected
            assert records[rid]["to"].isascii()
    else:
        for rid, expected in good.items():
            line, read_back = _to_line((out / f"{rid}.eml").read_bytes())
            assert "=?" not in line and read_back == expected


def test_a_bounce_naming_the_ascii_form_matches_the_recipient(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    pool_with_codes(engine, "p", 20)
    template = tmp_path / "t.j2"
    template.write_text(TEMPLATE, encoding="utf-8")
    people = _people(tmp_path)
    render(db_url, str(template), people, "m-bounce", tmp_path / "out.jsonl")
    bounces = tmp_path / "bounces.csv"
    bounces.write_text("email\na@xn--bcher-kva.example\nANN@xn--bcher-kva.example\n")

    report = return_listed(engine, "m-bounce", bounces)

    assert (report.returned, report.not_issued) == (2, 0)
