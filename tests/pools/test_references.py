"""The delivery reference of every rendered message (SPEC 8), and the issuances it stamps."""

from __future__ import annotations

import base64
import email
import email.policy
import hmac
import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from promomail.pools.after_sending.references import REF_LENGTH, delivery_ref_key, message_ref
from promomail.pools.after_sending.returns import return_codes
from promomail.pools.issuing.claiming import claim
from promomail.pools.store.db import StoreConfig, open_engine, read_transaction
from promomail.templating.choices import OutputFormat
from tests.support.invariants import check_invariants, check_no_reservations, mailing_codes
from tests.support.render_helpers import (
    EVERY_PART,
    customer_ids,
    initial_codes,
    read_jsonl,
    render,
    write_recipients,
    write_template,
)
from tests.support.store_helpers import make_pool

REF = re.compile(r"[A-Za-z0-9_-]{24}")

#: New codes from a single-use and a per-customer pool, a shared code, and a last code.
MIXED = """\
{%- block text %}{{ client.promocode('spring') }} {{ client.promocodes('pair') | join(',') }}
{{ client.promocode('shared') }} {{ client.last_promocode('old') or '-' }}{% endblock %}"""


def _refs(path: Path) -> dict[str, str]:
    return {r["recipient"]: r["ref"] for r in read_jsonl(path)}


def _stamped(engine: Engine, mailing: str) -> dict[str, set[str | None]]:
    """customer → the refs on the mailing's live issuances (initial and reissue)."""
    found: dict[str, set[str | None]] = {}
    with read_transaction(engine) as conn:
        for customer, ref in conn.execute(
            text(
                "SELECT customer_id, ref FROM issuances WHERE mailing_id = :m "
                "AND returned_at IS NULL"
            ),
            {"m": mailing},
        ):
            found.setdefault(customer, set()).add(ref)
    return found


def test_every_message_carries_its_reference_in_json_lines_and_eml(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    make_pool(engine, "spring", [f"SPRING{i}" for i in range(10)])
    template = write_template(tmp_path, EVERY_PART)
    recipients = write_recipients(tmp_path, customer_ids(5))
    render(db_url, template, recipients, "m", tmp_path / "out.jsonl")
    refs = _refs(tmp_path / "out.jsonl")
    assert len(refs) == 5 and len(set(refs.values())) == 5
    assert all(REF.fullmatch(ref) for ref in refs.values())
    assert REF_LENGTH == 24

    # The same mailing again, as .eml files: the same codes, the same references.
    render(db_url, template, recipients, "m", tmp_path / "eml", fmt=OutputFormat.EML)
    for recipient, ref in refs.items():
        raw = (tmp_path / "eml" / f"{recipient}.eml").read_bytes()
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert parsed.defects == []
        assert parsed["X-Promomail-Ref"] == ref
        assert parsed["X-Promomail-Mailing"] == "m"
        assert parsed["X-SES-MESSAGE-TAGS"] == f"promomail_ref={ref}"
        assert json.loads(str(parsed["X-SMTPAPI"])) == {"unique_args": {"promomail_ref": ref}}
        assert json.loads(str(parsed["X-Mailgun-Variables"])) == {"promomail_ref": ref}
        assert parsed["X-PM-Metadata-promomail_ref"] == ref
    # No personal data: neither the id nor the address nor the code shows in it.
    codes = initial_codes(engine, "m", "spring")
    for recipient, ref in refs.items():
        assert recipient not in ref and codes[recipient] not in ref


def test_a_reference_is_new_after_a_return_even_for_the_very_same_code(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    # One spare code: the code that comes back sorts first and is handed out again.
    make_pool(engine, "spring", [f"SPRING{i}" for i in range(3)])
    template = write_template(tmp_path, EVERY_PART)
    recipients = write_recipients(tmp_path, customer_ids(2))
    render(db_url, template, recipients, "m", tmp_path / "one.jsonl")
    before = _refs(tmp_path / "one.jsonl")
    codes_before = mailing_codes(engine, "m", "spring")
    return_codes(engine, "m", ["cust-00000"], reason="manual return")
    render(db_url, template, recipients, "m", tmp_path / "two.jsonl")
    after = _refs(tmp_path / "two.jsonl")
    assert mailing_codes(engine, "m", "spring") == codes_before  # the same code came back
    assert after["cust-00001"] == before["cust-00001"]
    assert after["cust-00000"] != before["cust-00000"]
    assert _stamped(engine, "m") == {c: {after[c]} for c in after}
    # A second return and re-run: new again, never one seen before.
    return_codes(engine, "m", ["cust-00000"], reason="manual return")
    render(db_url, template, recipients, "m", tmp_path / "three.jsonl")
    third = _refs(tmp_path / "three.jsonl")["cust-00000"]
    assert third not in (before["cust-00000"], after["cust-00000"])


@pytest.mark.parametrize(("workers", "helper"), [(1, False), (1, True), (2, False), (2, True)])
def test_every_issuance_a_message_records_carries_its_reference(
    db_url: str, engine: Engine, tmp_path: Path, workers: int, helper: bool
) -> None:
    make_pool(engine, "spring", [f"S{i:03d}" for i in range(60)])
    make_pool(engine, "pair", [f"P{i:03d}" for i in range(120)], per_customer=2)
    make_pool(engine, "shared", ["SHARED"], multi_use=True)
    make_pool(engine, "old", [f"O{i:03d}" for i in range(20)])
    ids = customer_ids(40)
    claim(engine, "old", "earlier", ids[:15])
    template = write_template(tmp_path, MIXED)
    recipients = write_recipients(tmp_path, ids)
    options = {"workers": workers, "store_process": helper, "chunk_size": 6}
    render(db_url, template, recipients, "m", tmp_path / "out.jsonl", **options)
    refs = _refs(tmp_path / "out.jsonl")
    assert _stamped(engine, "m") == {c: {refs[c]} for c in ids}
    with read_transaction(engine) as conn:
        kinds: dict[str, int] = dict(
            conn.execute(
                text(
                    "SELECT kind, count(*) FROM issuances WHERE mailing_id = 'm' "
                    "AND ref IS NOT NULL GROUP BY kind"
                )
            ).all()
        )
        key = delivery_ref_key(conn)
    # 40 times (one spring, two pair, one shared) and 15 reissues of an old code.
    assert kinds == {"initial": 160, "reissue": 15}
    # What the store's key makes of what each message shows.
    for record in read_jsonl(tmp_path / "out.jsonl"):
        expected = message_ref(key, "m", record["recipient"], record["codes"])
        assert record["ref"] == expected
    # A re-run reuses every code: the same references, no issuance written again.
    render(db_url, template, recipients, "m", tmp_path / "again.jsonl", **options)
    assert _refs(tmp_path / "again.jsonl") == refs
    assert _stamped(engine, "m") == {c: {refs[c]} for c in ids}
    check_invariants(engine, redemptions_possible=False)
    check_no_reservations(engine)


def test_references_cannot_be_made_without_the_stores_key(db_url: str, tmp_path: Path) -> None:
    """Two stores, the same mailing, recipients and codes: different keys, different refs."""
    outputs = []
    for n, url in enumerate([db_url, f"sqlite:///{tmp_path / 'other.db'}"]):
        engine = open_engine(StoreConfig(url))
        try:
            make_pool(engine, "spring", [f"SPRING{i}" for i in range(5)])
            template = write_template(tmp_path, EVERY_PART)
            recipients = write_recipients(tmp_path, customer_ids(3))
            render(url, template, recipients, "m", tmp_path / f"out{n}.jsonl")
            outputs.append(read_jsonl(tmp_path / f"out{n}.jsonl"))
        finally:
            engine.dispose()
    assert [r["codes"] for r in outputs[0]] == [r["codes"] for r in outputs[1]]
    assert not {r["ref"] for r in outputs[0]} & {r["ref"] for r in outputs[1]}


@given(
    st.text(min_size=1, max_size=8),
    st.text(min_size=1, max_size=8),
    st.dictionaries(
        st.text(max_size=4),
        st.one_of(st.text(max_size=4), st.lists(st.text(max_size=4), max_size=3)),
        max_size=3,
    ),
    st.integers(min_value=0, max_value=3),
)
def test_a_reference_names_exactly_what_it_was_made_of(
    mailing: str, recipient: str, codes: dict[str, str | list[str]], returned: int
) -> None:
    key = b"k" * 32
    ref = message_ref(key, mailing, recipient, codes, returned)
    assert REF.fullmatch(ref)
    assert message_ref(key, mailing, recipient, dict(reversed(codes.items())), returned) == ref
    # Moving characters between fields, or any field changing, names another message.
    assert message_ref(key, mailing + recipient[:1], recipient[1:], codes, returned) != ref
    assert (
        message_ref(
            key, mailing, recipient, {**codes, "x": "y"} if "x" not in codes else {}, returned
        )
        != ref
    )
    assert message_ref(key, mailing, recipient, codes, returned + 1) != ref
    assert message_ref(b"j" * 32, mailing, recipient, codes, returned) != ref


def test_a_reference_is_made_for_text_that_is_not_unicode() -> None:
    # A JSON Lines recipients file may hold an escaped lone surrogate.
    ref = message_ref(b"k" * 32, "m", "ann\ud800", {"p": "C"})
    assert REF.fullmatch(ref) and ref == message_ref(b"k" * 32, "m", "ann\ud800", {"p": "C"})
    assert ref != message_ref(b"k" * 32, "m", "ann\ud801", {"p": "C"})


@given(st.binary(min_size=1, max_size=130), st.text(max_size=8))
def test_a_reference_is_the_hmac_sha256_of_its_canonical_form(key: bytes, recipient: str) -> None:
    # References already stored must keep matching a re-run's: the keyed
    # states computed once per key give exactly the standard HMAC.
    payload = json.dumps(
        ["m", recipient, {"p": "C"}, 0], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    digest = hmac.digest(key, payload.encode(), "sha256")
    expected = base64.urlsafe_b64encode(digest)[:REF_LENGTH].decode()
    assert message_ref(key, "m", recipient, {"p": "C"}) == expected
