"""Mailing renders against the store, on SQLite and PostgreSQL.

Every code shown is recorded, every recipient shows one code in all parts,
re-runs reuse, workers and shards split the work, preview and check write
nothing.
"""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from promomail.pools.admin.lifecycle import PoolSettings, create_pool
from promomail.pools.errors import InvalidSetting, PoolExhausted
from promomail.pools.issuing.mailings import show_mailing
from promomail.pools.store.db import store_location
from promomail.pools.store.models import IssuanceKind
from promomail.templating.choices import OutputFormat
from promomail.templating.errors import InvalidTemplate, MailingError, RecipientError
from promomail.templating.mailing.checking import check_template, preview, preview_recipients
from promomail.templating.mailing.outputs import OutputTarget, eml_name
from promomail.templating.mailing.recipients import Recipient, Shard, in_slice
from promomail.templating.mailing.request import RenderCount, RenderRequest
from promomail.templating.mailing.run import render_mailing
from promomail.templating.mailing.sources import PLACEHOLDER
from tests.support.invariants import records_by_recipient
from tests.support.racing import run_together
from tests.support.render_helpers import (
    EVERY_PART,
    SAMPLES,
    counts,
    customer_ids,
    full_snapshot,
    initial_codes,
    issuances,
    pool_with_codes,
    read_jsonl,
    render,
    render_when_released,
    request_for,
    write_jsonl_recipients,
    write_recipients,
    write_template,
)


def _check_codes_match_store(
    engine: Engine, mailing: str, out: Path, ids: list[str]
) -> dict[str, str]:
    """Each recipient once in the output, with the code the store recorded, in every part."""
    records = records_by_recipient(read_jsonl(out))
    assert sorted(records) == sorted(ids)
    stored = initial_codes(engine, mailing, "spring")
    assert sorted(stored) == sorted(ids)
    for recipient, record in records.items():
        code = stored[recipient]
        assert record["codes"] == {"spring": code}
        assert record["mailing"] == mailing
        assert record["to"] == f"{recipient}@example.com"
        parts = record["parts"]
        assert parts["subject"] == f"Your code {code}"
        assert parts["text"] == f"Hi Name {recipient}, your code is {code}.\n"
        assert f"<b>{code}</b>" in parts["html"]
    return stored


def test_a_thousand_recipients_get_a_thousand_distinct_codes(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    pool_with_codes(engine, "spring", 1100)
    ids = customer_ids(1000)
    template = write_template(tmp_path, EVERY_PART)
    recipients = write_recipients(tmp_path, ids)
    out = tmp_path / "out.jsonl"

    summary = render(db_url, template, recipients, "m-1000", out, chunk_size=200)

    assert summary.ok and summary.totals.status == "finished"
    assert (summary.totals.recipients, summary.totals.rendered, summary.totals.new_codes) == (
        1000,
        1000,
        1000,
    )
    assert (summary.totals.reused_codes, summary.totals.failures, summary.totals.skips) == (
        0,
        [],
        [],
    )
    stored = _check_codes_match_store(engine, "m-1000", out, ids)
    assert len(set(stored.values())) == 1000
    rows = issuances(engine, "m-1000")
    assert len(rows) == 1000 and len({r.code_id for r in rows}) == 1000
    assert all(r.kind == IssuanceKind.INITIAL for r in rows)
    pool = counts(engine, "spring")
    assert (pool.issued, pool.available, pool.reserved) == (1000, 100, 0)
    shown = show_mailing(engine, "m-1000")
    assert (shown.status, shown.totals.rendered, shown.codes_issued) == ("finished", 1000, 1000)


def test_rerunning_a_finished_mailing_reuses_every_code(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    pool_with_codes(engine, "spring", 30)
    ids = customer_ids(20)
    template = write_template(tmp_path, EVERY_PART)
    recipients = write_recipients(tmp_path, ids)
    render(db_url, template, recipients, "m1", tmp_path / "first.jsonl", chunk_size=7)
    first = initial_codes(engine, "m1", "spring")
    before = full_snapshot(engine)

    again = render(db_url, template, recipients, "m1", tmp_path / "again.jsonl", chunk_size=7)

    assert again.ok and (
        again.totals.new_codes,
        again.totals.reused_codes,
        again.totals.rendered,
    ) == (0, 20, 20)
    after = full_snapshot(engine)
    for table in ("codes", "issuances", "pools", "import_batches"):
        assert after[table] == before[table], table
    assert _check_codes_match_store(engine, "m1", tmp_path / "again.jsonl", ids) == first
    assert read_jsonl(tmp_path / "again.jsonl") == read_jsonl(tmp_path / "first.jsonl")


def test_a_rerun_issues_only_to_recipients_still_without_a_code(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    pool_with_codes(engine, "spring", 12)
    ids = customer_ids(12)
    template = write_template(tmp_path, EVERY_PART)
    half = write_recipients(tmp_path, ids[:6], name="half.csv")
    render(db_url, template, half, "m1", tmp_path / "half.jsonl")
    first = initial_codes(engine, "m1", "spring")
    everyone = write_recipients(tmp_path, ids, name="all.csv")

    # 6 codes are left for the 6 recipients still without one: preflight passes.
    summary = render(db_url, template, everyone, "m1", tmp_path / "all.jsonl", chunk_size=5)

    assert summary.ok and (summary.totals.new_codes, summary.totals.reused_codes) == (6, 6)
    stored = _check_codes_match_store(engine, "m1", tmp_path / "all.jsonl", ids)
    assert {c: stored[c] for c in first} == first
    assert counts(engine, "spring").available == 0


def test_a_render_tells_its_count_before_the_first_recipient_renders(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    pool_with_codes(engine, "spring", 40)
    ids = customer_ids(12)
    template = write_template(tmp_path, EVERY_PART)
    half = write_recipients(tmp_path, ids[:6], name="half.csv")
    everyone = write_recipients(tmp_path, ids, name="all.csv")
    told: list[object] = []

    def counted(count: RenderCount) -> None:
        told.append(count)

    def advanced(recipients: int) -> None:
        told.append(recipients)

    def run(recipients: str, mailing: str, **options: Any) -> None:
        told.clear()
        request = request_for(
            db_url, template, recipients, mailing, tmp_path / "out.jsonl", chunk_size=5, **options
        )
        render_mailing(request, advanced, counted=counted)

    run(half, "m1")
    assert told == [RenderCount(6, 0), 5, 1]
    # A re-run with more recipients: those the first run served are counted apart.
    run(everyone, "m1")
    assert told == [RenderCount(12, 6), 5, 5, 2]
    # Per shard: its own recipients, and of them those served before.
    shard = Shard(1, 2)
    mine = [r for r in ids if in_slice(r, shard)]
    run(everyone, "m1", shard=shard)
    assert told[0] == RenderCount(len(mine), len(mine))
    # Another mailing served no one yet.
    run(everyone, "m2")
    assert told[0] == RenderCount(12, 0)


def test_duplicate_recipient_ids_are_rendered_once(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    pool_with_codes(engine, "spring", 10)
    template = write_template(tmp_path, EVERY_PART)
    recipients = write_recipients(tmp_path, ["a", "b", "a", "c", "b"])
    summary = render(db_url, template, recipients, "m1", tmp_path / "out.jsonl")
    assert (summary.totals.recipients, summary.totals.rendered, summary.totals.new_codes) == (
        3,
        3,
        3,
    )
    _check_codes_match_store(engine, "m1", tmp_path / "out.jsonl", ["a", "b", "c"])


@pytest.mark.parametrize("store_process", [False, True], ids=["store-thread", "store-process"])
def test_two_workers_render_everyone_once(
    db_url: str, engine: Engine, tmp_path: Path, store_process: bool
) -> None:
    pool_with_codes(engine, "spring", 80)
    ids = customer_ids(60)
    template = write_template(tmp_path, EVERY_PART)
    recipients = write_recipients(tmp_path, ids)
    out = tmp_path / "out.jsonl"

    summary = render(
        db_url,
        template,
        recipients,
        "m-w2",
        out,
        workers=2,
        chunk_size=8,
        store_process=store_process,
    )

    assert summary.ok and (summary.totals.rendered, summary.totals.new_codes) == (60, 60)
    stored = _check_codes_match_store(engine, "m-w2", out, ids)
    assert len(set(stored.values())) == 60
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    pool = counts(engine, "spring")
    assert (pool.issued, pool.available, pool.reserved) == (60, 20, 0)


def test_shards_rendered_apart_or_together_cover_everyone_once(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    pool_with_codes(engine, "spring", 100)
    ids = customer_ids(40)
    template = write_template(tmp_path, EVERY_PART)
    recipients = write_recipients(tmp_path, ids)

    # One after the other, as two cron jobs would.
    one = render(db_url, template, recipients, "m-a", tmp_path / "a1.jsonl", shard=Shard(1, 2))
    two = render(db_url, template, recipients, "m-a", tmp_path / "a2.jsonl", shard=Shard(2, 2))
    got = [r["recipient"] for r in read_jsonl(tmp_path / "a1.jsonl")]
    got2 = [r["recipient"] for r in read_jsonl(tmp_path / "a2.jsonl")]
    assert got and got2 and not set(got) & set(got2)
    assert sorted(got + got2) == sorted(ids)
    assert (one.totals.recipients + two.totals.recipients, one.shard, two.shard) == (
        40,
        "1/2",
        "2/2",
    )
    stored = initial_codes(engine, "m-a", "spring")
    assert sorted(stored) == sorted(ids) and len(set(stored.values())) == 40
    shown = show_mailing(engine, "m-a")
    assert [run["shard"] for run in shown.runs] == ["1/2", "2/2"]
    assert shown.totals.rendered == 40 and shown.status == "finished"

    # The whole mailing afterwards: everyone already has a code.
    whole = render(db_url, template, recipients, "m-a", tmp_path / "a.jsonl")
    assert (whole.totals.new_codes, whole.totals.reused_codes) == (0, 40)
    assert initial_codes(engine, "m-a", "spring") == stored

    # At the same time, as two machines would.
    requests = [
        (
            request_for(
                db_url,
                template,
                recipients,
                "m-b",
                tmp_path / f"b{k}.jsonl",
                shard=Shard(k, 2),
                chunk_size=5,
            ),
        )
        for k in (1, 2)
    ]
    results = run_together(render_when_released, requests)
    assert [r["status"] for r in results] == ["finished", "finished"]
    b = [r["recipient"] for k in (1, 2) for r in read_jsonl(tmp_path / f"b{k}.jsonl")]
    assert sorted(b) == sorted(ids)
    stored_b = initial_codes(engine, "m-b", "spring")
    assert sorted(stored_b) == sorted(ids)
    assert not set(stored_b.values()) & set(stored.values())
    pool = counts(engine, "spring")
    assert (pool.issued, pool.available, pool.reserved) == (80, 20, 0)


def test_a_call_in_a_branch_not_taken_consumes_nothing(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    pool_with_codes(engine, "vip", 10)
    pool_with_codes(engine, "standard", 10)
    template = write_template(
        tmp_path,
        "{% if client.vip == 'yes' %}VIP {{ client.promocode('vip') }}"
        "{% else %}Hello{% if client.first_order == 'yes' %} {{ client.promocode('standard') }}"
        "{% endif %}{% endif %}",
    )
    records = [
        {"id": "v1", "vip": "yes", "first_order": "no"},
        {"id": "v2", "vip": "yes", "first_order": "yes"},
        {"id": "s1", "vip": "no", "first_order": "yes"},
        {"id": "n1", "vip": "no", "first_order": "no"},
        {"id": "n2", "vip": "no", "first_order": "no"},
    ]
    recipients = write_jsonl_recipients(tmp_path, records)

    summary = render(db_url, template, recipients, "m1", tmp_path / "out.jsonl")

    assert summary.ok and summary.totals.new_codes == 3
    out = records_by_recipient(read_jsonl(tmp_path / "out.jsonl"))
    assert set(out["v1"]["codes"]) == {"vip"} and set(out["s1"]["codes"]) == {"standard"}
    assert out["n1"]["codes"] == {} and out["n1"]["parts"] == {"body": "Hello"}
    assert {(r.customer_id, r.pool_id) for r in issuances(engine, "m1")} == {
        ("v1", "vip"),
        ("v2", "vip"),
        ("s1", "standard"),
    }
    assert (counts(engine, "vip").issued, counts(engine, "vip").available) == (2, 8)
    assert (counts(engine, "standard").issued, counts(engine, "standard").available) == (1, 9)


def test_sms_template_issues_one_code_from_either_branch(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    pool_with_codes(engine, "flash", 10)
    out = tmp_path / "sms.jsonl"
    summary = render(db_url, str(SAMPLES / "sms.j2"), str(SAMPLES / "recipients.csv"), "sms-1", out)
    assert summary.ok and summary.totals.new_codes == summary.totals.rendered == 8
    stored = initial_codes(engine, "sms-1", "flash")
    for record in read_jsonl(out):
        code = stored[record["recipient"]]
        assert record["codes"] == {"flash": code}
        assert code in record["parts"]["body"]
        assert ("30% off" in record["parts"]["body"]) == (
            record["recipient"] in {"cust-001", "cust-004", "cust-007"}
        )


def test_last_promocode_shows_the_previous_code_and_records_one_reissue(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    pool_with_codes(engine, "welcome", 10)
    recipients = str(SAMPLES / "recipients.csv")
    welcomed = write_recipients(tmp_path, ["cust-001", "cust-002", "cust-003"], name="w.csv")
    render(db_url, str(SAMPLES / "welcome.j2"), welcomed, "welcome-1", tmp_path / "w.jsonl")
    given = initial_codes(engine, "welcome-1", "welcome")
    available = counts(engine, "welcome").available

    reminder = str(SAMPLES / "reminder.j2")
    summary = render(db_url, reminder, recipients, "reminder-1", tmp_path / "r.jsonl")

    assert summary.ok and summary.totals.new_codes == 0 and summary.totals.rendered == 8
    out = records_by_recipient(read_jsonl(tmp_path / "r.jsonl"))
    for recipient, record in out.items():
        parts = record["parts"]
        if recipient in given:
            assert given[recipient] in parts["text"] and given[recipient] in parts["html"]
            assert "still have 20% off" in parts["text"]
        else:
            assert "is still waiting for you" in parts["text"]
            assert "still have 20% off" not in parts["text"]
    reissues = [r for r in issuances(engine, "reminder-1")]
    assert sorted((r.customer_id, r.code, r.kind) for r in reissues) == sorted(
        (c, code, IssuanceKind.REISSUE) for c, code in given.items()
    )
    assert counts(engine, "welcome").available == available

    # A re-run shows the same codes and records no second reissue.
    again = render(db_url, reminder, recipients, "reminder-1", tmp_path / "r2.jsonl")
    assert again.ok
    assert read_jsonl(tmp_path / "r2.jsonl") == read_jsonl(tmp_path / "r.jsonl")
    assert len(issuances(engine, "reminder-1")) == 3
    assert show_mailing(engine, "reminder-1").reissues == 3


def test_last_promocode_is_the_most_recent_one_from_another_mailing(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    pool_with_codes(engine, "spring", 10)
    both = write_template(
        tmp_path,
        "new={{ client.promocode('spring') }} last={{ client.last_promocode('spring') }}",
        name="both.j2",
    )
    recipients = write_recipients(tmp_path, ["a"])
    render(db_url, both, recipients, "m1", tmp_path / "1.jsonl")
    render(db_url, both, recipients, "m2", tmp_path / "2.jsonl")
    first, second = (
        initial_codes(engine, "m1", "spring")["a"],
        initial_codes(engine, "m2", "spring")["a"],
    )
    assert first != second
    assert read_jsonl(tmp_path / "1.jsonl")[0]["parts"]["body"] == f"new={first} last="
    assert read_jsonl(tmp_path / "2.jsonl")[0]["parts"]["body"] == f"new={second} last={first}"
    # m2 re-run: "last" still means the code from before m2, not m2's own.
    render(db_url, both, recipients, "m2", tmp_path / "2b.jsonl")
    assert read_jsonl(tmp_path / "2b.jsonl")[0]["parts"]["body"] == f"new={second} last={first}"


def test_multi_use_pool_records_everyone_and_consumes_nothing(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    pool_with_codes(engine, "summer", 0, multi_use=True)
    from io import BytesIO

    from promomail.pools.choices import FileFormat
    from promomail.pools.codes.imports import Upload, upload_codes

    upload_codes(engine, "summer", [Upload("s.txt", FileFormat.TXT, stream=BytesIO(b"SUMMER20\n"))])
    template = write_template(tmp_path, "Use {{ client.promocode('summer') }} today")
    ids = customer_ids(12)
    recipients = write_recipients(tmp_path, ids)

    summary = render(db_url, template, recipients, "m1", tmp_path / "out.jsonl", chunk_size=5)

    assert summary.ok and summary.totals.rendered == 12
    assert {r["parts"]["body"] for r in read_jsonl(tmp_path / "out.jsonl")} == {
        "Use SUMMER20 today"
    }
    rows = issuances(engine, "m1")
    assert sorted(r.customer_id for r in rows) == ids and {r.code for r in rows} == {"SUMMER20"}
    pool = counts(engine, "summer")
    assert (pool.total, pool.available, pool.issued, pool.reserved) == (1, 1, 0, 0)
    # A second mailing again records everyone; still nothing consumed.
    render(db_url, template, recipients, "m2", tmp_path / "out2.jsonl")
    assert len(issuances(engine, "m2")) == 12 and counts(engine, "summer").available == 1


def test_eml_output_writes_one_file_per_recipient(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    pool_with_codes(engine, "welcome", 10)
    folder = tmp_path / "eml"
    summary = render(
        db_url,
        str(SAMPLES / "welcome.j2"),
        str(SAMPLES / "recipients.csv"),
        "welcome-eml",
        folder,
        fmt=OutputFormat.EML,
        chunk_size=3,
    )
    assert summary.ok and summary.totals.rendered == 8
    stored = initial_codes(engine, "welcome-eml", "welcome")
    files = sorted(p.name for p in folder.iterdir())
    assert files == sorted(eml_name(c) for c in stored)
    for customer, code in stored.items():
        raw = (folder / eml_name(customer)).read_bytes()
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        assert message.get_content_type() == "multipart/alternative"
        assert message["To"].endswith("@example.com")
        assert message["Subject"].startswith("Welcome to Northwind Coffee, ")
        assert message["X-Promomail-Recipient"] == customer
        text, html = (part.get_content() for part in message.iter_parts())
        assert code in text and code in html


# -- preflight ---------------------------------------------------------------------


def test_preflight_refuses_a_mailing_the_pool_cannot_cover(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    pool_with_codes(engine, "spring", 5)
    template = write_template(tmp_path, EVERY_PART)
    recipients = write_recipients(tmp_path, customer_ids(8))
    before = full_snapshot(engine)

    with pytest.raises(PoolExhausted) as refused:
        render(db_url, template, recipients, "m1", tmp_path / "out.jsonl")

    assert (refused.value.pool_id, refused.value.needed, refused.value.available) == (
        "spring",
        8,
        5,
    )
    assert str(refused.value) == (
        "pool 'spring' cannot cover the mailing: needed 8, available 5; add 3 codes or more "
        "(codes upload spring FILE, or codes generate spring count 3), or render with "
        "on_exhausted skip (those recipients are left out) or blank (they get an empty code)"
    )
    assert full_snapshot(engine) == before
    assert not (tmp_path / "out.jsonl").exists()


def test_template_errors_are_refused_before_anything_moves(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    pool_with_codes(engine, "spring", 5)
    create_pool(engine, PoolSettings("draft", description="not yet"), pool_id="draft")
    recipients = write_recipients(tmp_path, customer_ids(3))
    before = full_snapshot(engine)
    cases = {
        "{{ client.promocode(pool) }}": (
            r"line 1: client\.promocode\(\) needs the pool as a string literal"
        ),
        "\n{{ client.promocode('nowhere') }}": r"line 2: pool 'nowhere' does not exist",
        "\n\n{{ client.promocode('draft') }}": (
            r"line 3: pool 'draft' is draft, not active: it issues no codes until activated "
            r"\(pool activate draft\)"
        ),
        "{% if %}": "syntax error",
    }
    for source, message in cases.items():
        template = write_template(tmp_path, source)
        with pytest.raises(InvalidTemplate, match=message):
            render(db_url, template, recipients, "m1", tmp_path / "out.jsonl")
    assert full_snapshot(engine) == before


def test_bad_recipients_or_output_are_refused_before_anything_moves(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    pool_with_codes(engine, "spring", 10)
    template = write_template(tmp_path, EVERY_PART)
    good = write_recipients(tmp_path, customer_ids(3))
    bad = tmp_path / "bad.csv"
    bad.write_text("id,email,first_name\na,a@x,A\nb,b@x\n", encoding="utf-8")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    before = full_snapshot(engine)

    with pytest.raises(RecipientError, match=r"bad\.csv, line 3"):
        render(db_url, template, str(bad), "m1", tmp_path / "out.jsonl")
    with pytest.raises(MailingError, match="cannot write output"):
        render(db_url, template, good, "m1", blocker / "out.jsonl")

    assert full_snapshot(engine) == before


def test_request_validation() -> None:
    out = OutputTarget(OutputFormat.JSONL, None)
    with pytest.raises(InvalidSetting, match=r"^mailing_id must not be empty$") as refused:
        RenderRequest("t.j2", "r.csv", " ", "sqlite://", out)
    assert refused.value.settings == ("mailing_id",)
    for workers in (0, 65):
        with pytest.raises(InvalidSetting, match="number of workers must be between 1 and 64"):
            RenderRequest("t.j2", "r.csv", "m", "sqlite://", out, workers=workers)
    with pytest.raises(
        InvalidSetting, match=r"^variables cannot name 'client': it would hide the recipient$"
    ):
        RenderRequest("t.j2", "r.csv", "m", "sqlite://", out, variables={"client": "x"})
    assert RenderRequest("t.j2", "r.csv", "m", "sqlite://", out, shard=Shard(2, 3)).scope == "m|2/3"


def test_variables_reach_every_recipient(db_url: str, engine: Engine, tmp_path: Path) -> None:
    pool_with_codes(engine, "spring", 5)
    template = write_template(tmp_path, "{{ campaign }}: {{ client.promocode('spring') }}")
    recipients = write_recipients(tmp_path, customer_ids(2))
    out = tmp_path / "out.jsonl"
    summary = render(db_url, template, recipients, "m1", out, variables={"campaign": "Spring"})
    assert summary.ok
    stored = initial_codes(engine, "m1", "spring")
    assert {r["recipient"]: r["parts"]["body"] for r in read_jsonl(out)} == {
        c: f"Spring: {code}" for c, code in stored.items()
    }


# -- check and preview ---------------------------------------------------------------


def test_check_reports_pools_and_problems_and_writes_nothing(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    pool_with_codes(engine, "spring", 4)
    pool_with_codes(engine, "empty", 0)
    template = write_template(
        tmp_path,
        "{% block subject %}{{ client.first_name }}{% endblock %}\n"
        "{% block text %}{{ client.promocode('spring') }} {{ client.last_promocode('spring') }}\n"
        "{{ client.promocode('empty') }} {{ client.promocode('missing') }}\n"
        "{{ client.promocode(pool) }} {{ client.nickname }}{% endblock %}",
    )
    recipients = write_recipients(tmp_path, customer_ids(2))
    before = full_snapshot(engine)

    report = check_template(engine, template, recipients)

    assert full_snapshot(engine) == before
    assert not report.ok and report.parts == ("subject", "text")
    pools = {(p.ref, p.usage): (p.pool_id, p.status, p.available, p.line) for p in report.pools}
    assert pools == {
        ("spring", "issue"): ("spring", "active", 4, 2),
        ("empty", "issue"): ("empty", "active", 0, 3),
        ("missing", "issue"): (None, None, None, 3),
        ("spring", "reissue"): ("spring", "active", 4, 2),
    }
    problems = {(p.line, p.message) for p in report.problems}
    assert (
        3,
        "pool 'empty' has no available codes (add some: codes upload empty FILE, "
        "or codes generate empty)",
    ) in problems
    where = store_location(engine)
    assert (3, f"pool 'missing' does not exist in the store {where}") in problems
    assert (4, "client.promocode() needs the pool as a string literal") in problems
    assert (
        4,
        f"client.nickname is not a column of {recipients} "
        "(its header, line 1: id,email,first_name)",
    ) in problems
    assert len(problems) == 4
    # What a front end shows: each problem on a line naming the template, and a verdict.
    lines = report.problem_lines()
    assert len(lines) == 4 and all(line.startswith(f"{report.template}, line ") for line in lines)
    assert report.failure() == f"{lines[0]} (and 3 more problems)"

    broken = write_template(tmp_path, "ok\n{% for x in %}", name="broken.j2")
    syntax = check_template(engine, broken)
    assert not syntax.ok and syntax.problems[0].line == 2
    assert syntax.failure() == syntax.problem_lines()[0]
    assert syntax.failure().startswith(f"{syntax.template}, line 2: ")  # type: ignore[union-attr]
    assert full_snapshot(engine) == before
    fine = check_template(engine, write_template(tmp_path, "hello", name="fine.j2"))
    assert fine.ok and fine.failure() is None and fine.problem_lines() == []


def test_preview_shows_placeholders_and_real_last_codes_without_writing(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    pool_with_codes(engine, "welcome", 10)
    welcomed = write_recipients(tmp_path, ["cust-001"], name="w.csv")
    render(db_url, str(SAMPLES / "welcome.j2"), welcomed, "welcome-1", tmp_path / "w.jsonl")
    code = initial_codes(engine, "welcome-1", "welcome")["cust-001"]
    before = full_snapshot(engine)

    reminders = preview(
        engine,
        str(SAMPLES / "reminder.j2"),
        preview_recipients(str(SAMPLES / "recipients.csv"), None, 2),
    )
    welcome = preview(
        engine,
        str(SAMPLES / "welcome.j2"),
        preview_recipients(None, {"first_name": "Ada"}, 1),
        part="text",
    )
    failing = preview(
        engine,
        str(SAMPLES / "welcome.j2"),
        [Recipient("x", {"id": "x"}, 0)],
    )

    assert full_snapshot(engine) == before
    assert [p.recipient for p in reminders] == ["cust-001", "cust-002"]
    assert reminders[0].parts is not None and code in reminders[0].parts["text"]
    assert reminders[1].parts is not None and "still waiting" in reminders[1].parts["text"]
    [shown] = welcome
    assert shown.parts is not None and list(shown.parts) == ["text"]
    placeholder = PLACEHOLDER.format(pool="welcome")
    assert placeholder in shown.parts["text"] and "welcome" in placeholder
    assert placeholder not in {c for c in initial_codes(engine, "welcome-1", "welcome").values()}
    assert failing[0].parts is None and failing[0].error is not None
    assert "first_name" in failing[0].error
    with pytest.raises(InvalidTemplate, match="has no part 'html'"):
        preview(engine, str(SAMPLES / "sms.j2"), [], part="html")


def test_workers_take_the_environment_of_the_render_that_starts_them(
    db_url: str, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers fork from a server that outlives one render: the environment of
    each render (here the sender of its messages) reaches its own workers."""
    pool_with_codes(engine, "spring", 8)
    template = write_template(
        tmp_path,
        "{% block subject %}Hi{% endblock %}{% block text %}{{ client.promocode('spring') }}"
        "{% endblock %}",
    )
    recipients = write_recipients(tmp_path, customer_ids(4))
    for mailing, sender in (("m1", "first@example.com"), ("m2", "second@example.com")):
        monkeypatch.setenv("PROMOMAIL_FROM", sender)
        out = tmp_path / mailing
        summary = render(
            db_url, template, recipients, mailing, out, fmt=OutputFormat.EML, workers=2
        )
        assert summary.ok and summary.totals.rendered == 4
        messages = [email.message_from_bytes(path.read_bytes()) for path in out.iterdir()]
        assert {message["From"] for message in messages} == {sender}
