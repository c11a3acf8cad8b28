"""Mailing renders when things go wrong: kill -9, racing mailings, pools running
out mid-run, failing recipients, hostile templates. SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

import promomail.templating.mailing.planning as planning
import promomail.templating.mailing.run as mailing_module
from promomail.pools.codes.generation import CodeSpec, generate_codes
from promomail.pools.issuing.claiming import claim
from promomail.pools.issuing.mailings import show_mailing
from promomail.templating.choices import OnExhausted
from promomail.templating.template import render_limits
from tests.support.invariants import count_issuances, records_by_recipient
from tests.support.racing import run_together
from tests.support.render_helpers import (
    EVERY_PART,
    counts,
    customer_ids,
    initial_codes,
    issuances,
    paced_render_command,
    pool_with_codes,
    processes_with,
    read_jsonl,
    render,
    render_when_released,
    request_for,
    wait_until,
    write_jsonl_recipients,
    write_recipients,
    write_template,
)


@pytest.mark.parametrize("store_process", [False, True], ids=["store-thread", "store-process"])
def test_a_render_killed_mid_run_is_resumed_by_the_next_run(
    db_url: str, engine: Engine, tmp_path: Path, store_process: bool
) -> None:
    pool_with_codes(engine, "spring", 2100)
    ids = customer_ids(2000)
    template = write_template(tmp_path, EVERY_PART)
    recipients = write_recipients(tmp_path, ids)
    killed_out = tmp_path / "killed.jsonl"
    command = paced_render_command(
        db_url,
        template,
        recipients,
        "m-kill",
        killed_out,
        chunk_size=20,
        pause=0.002,
        store_process=store_process,
    )
    # Marks every process of the render's tree, its store helper included.
    mark = uuid.uuid4().hex
    environment = {**os.environ, "PROMOMAIL_TEST_RENDER": mark}

    with subprocess.Popen(command, stderr=subprocess.PIPE, env=environment) as child:
        try:
            wait_until(
                lambda: (
                    child.poll() is not None
                    or (
                        count_issuances(engine, "m-kill") >= 60
                        and counts(engine, "spring").reserved > 0
                    )
                ),
                what="the render to issue codes",
            )
            assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    # Nothing of the killed render goes on: no worker server, no store helper.
    wait_until(
        lambda: not processes_with("PROMOMAIL_TEST_RENDER", mark),
        timeout=30,
        what="the killed render's processes to end",
    )

    before = initial_codes(engine, "m-kill", "spring")
    held = counts(engine, "spring")
    assert 60 <= len(before) < 2000
    assert held.reserved > 0  # died holding a reservation
    assert held.available + held.reserved + held.issued == held.total == 2100
    assert not killed_out.exists()  # output never appears half-written
    assert show_mailing(engine, "m-kill").status == "running"

    out = tmp_path / "resumed.jsonl"
    summary = render(db_url, template, recipients, "m-kill", out, chunk_size=200)

    assert summary.ok and summary.totals.rendered == 2000
    assert (summary.totals.reused_codes, summary.totals.new_codes) == (
        len(before),
        2000 - len(before),
    )
    after = initial_codes(engine, "m-kill", "spring")
    assert sorted(after) == sorted(ids)
    assert {c: after[c] for c in before} == before
    rows = issuances(engine, "m-kill")
    assert len(rows) == 2000 and len({r.code_id for r in rows}) == 2000
    final = counts(engine, "spring")
    assert (final.reserved, final.issued, final.available) == (0, 2000, 100)
    assert final.available + final.issued == final.total
    records = records_by_recipient(read_jsonl(out))
    assert sorted(records) == sorted(ids)
    assert all(records[c]["codes"] == {"spring": after[c]} for c in ids)
    assert show_mailing(engine, "m-kill").status == "finished"


@pytest.mark.parametrize("store_process", [False, True], ids=["store-thread", "store-process"])
def test_two_mailings_from_one_pool_at_once_never_share_a_code(
    db_url: str, engine: Engine, tmp_path: Path, store_process: bool
) -> None:
    pool_with_codes(engine, "spring", 420)
    ids = customer_ids(200)
    template = write_template(tmp_path, EVERY_PART)
    recipients = write_recipients(tmp_path, ids)
    requests = [
        (
            request_for(
                db_url,
                template,
                recipients,
                name,
                tmp_path / f"{name}.jsonl",
                chunk_size=10,
                store_process=store_process,
            ),
        )
        for name in ("m-a", "m-b")
    ]

    results = run_together(render_when_released, requests)

    assert [(r["status"], r["rendered"], r["failed"]) for r in results] == [
        ("finished", 200, 0),
        ("finished", 200, 0),
    ]
    rows = issuances(engine)
    assert len(rows) == 400
    assert len({r.code_id for r in rows}) == 400 and len({r.code for r in rows}) == 400
    a, b = initial_codes(engine, "m-a", "spring"), initial_codes(engine, "m-b", "spring")
    assert sorted(a) == sorted(b) == sorted(ids)
    assert not set(a.values()) & set(b.values())
    for name, stored in (("m-a", a), ("m-b", b)):
        out = records_by_recipient(read_jsonl(tmp_path / f"{name}.jsonl"))
        assert {c: r["codes"]["spring"] for c, r in out.items()} == stored
    pool = counts(engine, "spring")
    assert (pool.issued, pool.available, pool.reserved) == (400, 20, 0)


# -- a pool running out mid-run ----------------------------------------------------


def _drain_after_preflight(
    monkeypatch: pytest.MonkeyPatch, engine: Engine, pool: str, count: int
) -> None:
    """A concurrent mailing takes ``count`` codes right after the real preflight passed."""
    real: Callable[..., Any] = planning.preflight

    def preflight_then_drain(*args: Any, **kwargs: Any) -> Any:
        found = real(*args, **kwargs)
        claim(engine, pool, "concurrent", [f"other-{i}" for i in range(count)])
        return found

    monkeypatch.setattr(mailing_module, "preflight", preflight_then_drain)


def test_pool_running_out_with_stop_ends_cleanly_and_resumes_later(
    db_url: str, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool_with_codes(engine, "spring", 10)
    ids = customer_ids(8)
    template = write_template(tmp_path, EVERY_PART)
    recipients = write_recipients(tmp_path, ids)
    _drain_after_preflight(monkeypatch, engine, "spring", 5)
    out = tmp_path / "out.jsonl"

    summary = render(db_url, template, recipients, "m1", out, chunk_size=3)

    assert summary.totals.status == "stopped" and not summary.ok
    assert summary.totals.stopped_at_pool == "spring"
    assert summary.as_dict()["status"] == "stopped"
    assert (summary.totals.rendered, summary.totals.new_codes, summary.totals.failures) == (
        5,
        5,
        [],
    )
    first = initial_codes(engine, "m1", "spring")
    assert sorted(first) == ids[:5]
    records = records_by_recipient(read_jsonl(out))  # what was rendered is in the output
    assert {c: r["codes"]["spring"] for c, r in records.items()} == first
    pool = counts(engine, "spring")
    assert (pool.available, pool.reserved, pool.issued) == (0, 0, 10)
    shown = show_mailing(engine, "m1")
    assert (shown.status, shown.totals.rendered, shown.codes_issued) == ("stopped", 5, 5)

    # Codes are added; the same mailing continues where it stopped.
    monkeypatch.undo()
    generate_codes(engine, "spring", 10, CodeSpec(length=12))
    again = render(db_url, template, recipients, "m1", tmp_path / "again.jsonl", chunk_size=3)
    assert again.ok and (
        again.totals.rendered,
        again.totals.reused_codes,
        again.totals.new_codes,
    ) == (8, 5, 3)
    after = initial_codes(engine, "m1", "spring")
    assert sorted(after) == ids and {c: after[c] for c in first} == first
    assert len(records_by_recipient(read_jsonl(tmp_path / "again.jsonl"))) == 8
    assert show_mailing(engine, "m1").status == "finished"


def test_pool_running_out_with_skip_leaves_recipients_out_and_lists_them(
    db_url: str, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool_with_codes(engine, "spring", 10)
    ids = customer_ids(8)
    template = write_template(tmp_path, EVERY_PART)
    recipients = write_recipients(tmp_path, ids)
    _drain_after_preflight(monkeypatch, engine, "spring", 5)
    out = tmp_path / "out.jsonl"

    summary = render(
        db_url, template, recipients, "m1", out, chunk_size=3, on_exhausted=OnExhausted.SKIP
    )

    assert summary.totals.status == "finished" and summary.totals.failures == []
    assert summary.totals.rendered == 5
    skipped = {skip.recipient: skip.reason for skip in summary.totals.skips}
    assert sorted(skipped) == ids[5:]
    assert all("'spring' ran out of codes" in why for why in skipped.values())
    assert summary.as_dict()["skipped"] == 3
    records = records_by_recipient(read_jsonl(out))
    assert sorted(records) == ids[:5]
    assert sorted(initial_codes(engine, "m1", "spring")) == ids[:5]
    pool = counts(engine, "spring")
    assert (pool.available, pool.reserved, pool.issued) == (0, 0, 10)


def test_pool_running_out_with_blank_renders_an_empty_code(
    db_url: str, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool_with_codes(engine, "spring", 10)
    ids = customer_ids(8)
    template = write_template(tmp_path, EVERY_PART)
    recipients = write_recipients(tmp_path, ids)
    _drain_after_preflight(monkeypatch, engine, "spring", 5)
    out = tmp_path / "out.jsonl"

    summary = render(
        db_url, template, recipients, "m1", out, chunk_size=3, on_exhausted=OnExhausted.BLANK
    )

    assert summary.ok and (summary.totals.rendered, summary.totals.new_codes) == (8, 5)
    stored = initial_codes(engine, "m1", "spring")
    assert sorted(stored) == ids[:5]
    records = records_by_recipient(read_jsonl(out))
    for recipient in ids[5:]:
        assert records[recipient]["codes"] == {"spring": ""}
        assert records[recipient]["parts"]["subject"] == "Your code"
        assert records[recipient]["parts"]["text"] == f"Hi Name {recipient}, your code is .\n"
    for recipient in ids[:5]:
        assert records[recipient]["codes"] == {"spring": stored[recipient]}
    assert counts(engine, "spring").reserved == 0


def test_skip_and_blank_do_not_need_the_preflight(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    pool_with_codes(engine, "spring", 3)
    template = write_template(tmp_path, EVERY_PART)
    recipients = write_recipients(tmp_path, customer_ids(5))
    skipped = render(
        db_url, template, recipients, "m-skip", tmp_path / "s.jsonl", on_exhausted=OnExhausted.SKIP
    )
    assert (skipped.totals.rendered, len(skipped.totals.skips)) == (3, 2)
    blank = render(
        db_url,
        template,
        recipients,
        "m-blank",
        tmp_path / "b.jsonl",
        on_exhausted=OnExhausted.BLANK,
    )
    assert (blank.totals.rendered, blank.totals.new_codes) == (5, 0)


# -- failing recipients ----------------------------------------------------------------


def test_a_recipient_missing_a_column_fails_alone_and_consumes_nothing(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    pool_with_codes(engine, "spring", 10)
    ids = customer_ids(6)
    records = [{"id": c, "email": f"{c}@example.com", "first_name": f"Name {c}"} for c in ids]
    del records[2]["first_name"]  # line 3; its subject calls promocode before text fails
    template = write_template(tmp_path, EVERY_PART)
    recipients = write_jsonl_recipients(tmp_path, records)
    out = tmp_path / "out.jsonl"

    summary = render(db_url, template, recipients, "m1", out, chunk_size=4)

    assert not summary.ok and summary.totals.status == "finished"
    [(recipient, line, reason, _kind)] = summary.totals.failures
    assert (recipient, line) == (ids[2], 3)
    assert "'first_name'" in reason and "line 2" in reason
    assert summary.as_dict()["failed"] == 1
    assert summary.as_dict()["failures"] == [{"recipient": ids[2], "line": 3, "reason": reason}]
    assert (summary.totals.rendered, summary.totals.new_codes) == (5, 5)
    stored = initial_codes(engine, "m1", "spring")
    assert sorted(stored) == [c for c in ids if c != ids[2]]
    assert sorted(records_by_recipient(read_jsonl(out))) == sorted(stored)
    pool = counts(engine, "spring")
    assert (pool.issued, pool.reserved, pool.available) == (5, 0, 5)
    assert show_mailing(engine, "m1").totals.failed == 1


def test_hostile_template_code_fails_that_recipient_in_a_mailing(
    db_url: str, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The 'slow' loops outrun the clock before the work budget.
    monkeypatch.setattr(
        render_limits,
        "LIMITS",
        replace(render_limits.LIMITS, render_seconds=0.3, render_work=10**12),
    )
    pool_with_codes(engine, "spring", 10)
    marker = tmp_path / "pwned"
    template = write_template(
        tmp_path,
        "{{ client.promocode('spring') }} {{ client.first_name }}\n"
        "{% if client.id == 'evil' %}"
        "{{ cycler.__init__.__globals__.os.popen('touch " + str(marker) + "').read() }}"
        "{{ '{0.__class__.__init__.__globals__}'.format(client.id) }}"
        "{% elif client.id == 'slow' %}"
        "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}"
        "{% elif client.id == 'big' %}{{ 'x' * 10**9 }}{% endif %}",
    )
    records = [
        {"id": "evil", "first_name": "E"},
        {"id": "slow", "first_name": "S"},
        {"id": "ok", "first_name": "{{ 7 * 7 }}{{ config }}"},
        {"id": "big", "first_name": "B"},
    ]
    recipients = write_jsonl_recipients(tmp_path, records)
    out = tmp_path / "out.jsonl"

    summary = render(db_url, template, recipients, "m1", out)

    reasons = {recipient: reason for recipient, _line, reason, _kind in summary.totals.failures}
    assert sorted(reasons) == ["big", "evil", "slow"]
    assert "not allowed in templates" in reasons["evil"] or "undefined" in reasons["evil"]
    assert "rendering took longer than 0.3 s" in reasons["slow"]
    assert "'*' would build" in reasons["big"]
    assert not marker.exists()
    [record] = read_jsonl(out)
    code = initial_codes(engine, "m1", "spring")["ok"]
    assert record["parts"]["body"] == f"{code} {{{{ 7 * 7 }}}}{{{{ config }}}}\n"
    pool = counts(engine, "spring")
    assert (pool.issued, pool.reserved) == (1, 0)
