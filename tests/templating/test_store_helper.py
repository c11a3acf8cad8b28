"""A render's store work in helper processes gives exactly the mailing a thread gives.

Twin pools and mailings, alike but for a tag in their names and codes: one
renders with its chunk store work in a thread of the worker, the other in
store helper processes (:mod:`templating.mailing.store_helper`).
Everything a chunk carries between the two sides is exercised: new codes,
a per-customer pool's codes and slots, last codes shown again (reissues),
and what an earlier run of the same mailing already gave.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from promomail.pools.issuing.claiming import claim, reserve_many
from promomail.templating.choices import OnExhausted
from promomail.templating.errors import MailingError
from promomail.templating.mailing import chunks as chunks_module
from promomail.templating.mailing import pipeline as pipeline_module
from promomail.templating.mailing import store_helper
from tests.support.invariants import check_invariants, check_no_reservations, reserved_scopes
from tests.support.render_helpers import (
    customer_ids,
    initial_codes,
    read_jsonl,
    render,
    wait_until,
    write_recipients,
    write_template,
)
from tests.support.store_helpers import make_pool

TEMPLATE = """\
{%- block subject %}Codes for {{ client.first_name }}{% endblock %}
{%- block text %}new {{ client.promocode('new-TAG') }} again {{ client.promocode('new-TAG') }}
friends {{ client.promocodes('per-TAG') | join(',') }}
before {{ client.last_promocode('old-TAG') or 'none' }}
{% endblock %}"""


#: One code from pool "spring" per recipient.
ONE_CODE = "{% block text %}{{ client.promocode('spring') }}{% endblock %}"


def _thirty_recipients_one_code_each(engine: Engine, tmp_path: Path) -> tuple[str, str]:
    """A pool of 30 codes; the template and recipients files of a mailing that uses them all."""
    make_pool(engine, "spring", [f"SPRING{i}" for i in range(30)])
    return write_template(tmp_path, ONE_CODE), write_recipients(tmp_path, customer_ids(30))


def _twin(engine: Engine, db_url: str, tmp_path: Path, tag: str, workers: int, helper: bool) -> Any:
    code = tag.upper()
    make_pool(engine, f"new-{tag}", [f"{code}N{i:03d}" for i in range(60)])
    make_pool(engine, f"per-{tag}", [f"{code}P{i:03d}" for i in range(120)], per_customer=2)
    make_pool(engine, f"old-{tag}", [f"{code}O{i:03d}" for i in range(20)])
    ids = customer_ids(45)
    claim(engine, f"old-{tag}", f"earlier-{tag}", ids[:12])
    template = write_template(tmp_path, TEMPLATE.replace("TAG", tag), name=f"{tag}.j2")
    # Duplicates, and a first run that covers part of the list.
    first = write_recipients(tmp_path, ids[:20] + ids[3:8], name=f"{tag}-first.csv")
    everyone = write_recipients(tmp_path, ids + ids[40:], name=f"{tag}-all.csv")
    mailing = f"m-{tag}"
    options = {"workers": workers, "store_process": helper}
    one = render(
        db_url, template, first, mailing, tmp_path / f"{tag}-1.jsonl", chunk_size=7, **options
    )
    two = render(
        db_url, template, everyone, mailing, tmp_path / f"{tag}-2.jsonl", chunk_size=4, **options
    )
    assert one.ok and two.ok
    summaries = [
        (
            s.totals.recipients,
            s.totals.rendered,
            s.totals.new_codes,
            s.totals.reused_codes,
            len(s.totals.failures),
        )
        for s in (one, two)
    ]
    outputs = [read_jsonl(tmp_path / f"{tag}-{n}.jsonl") for n in (1, 2)]
    # The twins' names and codes differ in their tag alone.
    # What was written is what the store recorded.
    stored = initial_codes(engine, mailing, f"new-{tag}")
    assert {r["recipient"]: r["codes"][f"new-{tag}"] for r in outputs[1]} == stored
    # References are keyed hashes of the mailing, recipient and codes: the
    # twins' differ. tests/pools/test_references.py checks them on both paths.
    for output in outputs:
        for record in output:
            assert re.fullmatch(r"[A-Za-z0-9_-]{24}", record.pop("ref"))
    text = json.dumps([summaries, outputs]).replace(tag, "x").replace(code, "X")
    if workers > 1:
        # Workers reserve from the same pools at once: which new code goes to
        # whom depends on their timing. The codes shown before do not.
        text = re.sub(r"X([NP])\d{3}", r"X\1", text)
    return json.loads(text)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_store_helper_renders_exactly_what_a_store_thread_renders(
    db_url: str, engine: Engine, tmp_path: Path, workers: int
) -> None:
    in_thread = _twin(engine, db_url, tmp_path, "thr", workers, helper=False)
    in_helper = _twin(engine, db_url, tmp_path, "hlp", workers, helper=True)

    summaries, outputs = in_helper
    # The re-run: 25 recipients get their three codes; the first run's 20 keep theirs.
    assert summaries[1][:4] == [45, 45, 25 * 3, 20 * 3]
    by_recipient = [sorted(out, key=lambda r: r["recipient"]) for out in outputs]
    assert by_recipient == [sorted(o, key=lambda r: r["recipient"]) for o in in_thread[1]]
    assert summaries == in_thread[0]
    check_invariants(engine, redemptions_possible=False)
    check_no_reservations(engine)


@pytest.mark.parametrize("helper", [False, True], ids=["store-thread", "store-process"])
def test_a_chunk_short_of_codes_tops_up_with_what_the_chunk_before_gave_back(
    db_url: str, engine: Engine, tmp_path: Path, helper: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Eight codes for ten recipients, two of whom fail on their address. The
    # second chunk is prepared while the first renders, so it holds the three
    # codes left; it tops up with the first chunk's two unused ones.
    make_pool(engine, "spring", [f"SPRING{i}" for i in range(8)])
    rows = [(f"c{i}", "not an address" if i in (1, 3) else f"c{i}@example.com") for i in range(10)]
    recipients = tmp_path / "recipients.csv"
    recipients.write_text(
        "id,email\n" + "".join(f"{id_},{email}\n" for id_, email in rows), encoding="utf-8"
    )
    template = write_template(tmp_path, ONE_CODE)
    top_ups: list[int] = []

    def watched(*args: Any, token: str | None = None, **kwargs: Any) -> Any:
        if token is not None:
            top_ups.append(sum(args[1].values()))
        return reserve_many(*args, token=token, **kwargs)

    # The renderer's own reservations (a helper's are made in its process).
    monkeypatch.setattr(chunks_module, "reserve_many", watched)
    out = tmp_path / "out.jsonl"
    summary = render(
        db_url,
        template,
        str(recipients),
        "short",
        out,
        chunk_size=5,
        store_process=helper,
        # Under "stop" the preflight would refuse ten recipients for eight codes.
        on_exhausted=OnExhausted.SKIP,
    )

    assert top_ups, "no chunk topped up its reservation"
    assert (summary.totals.rendered, summary.totals.new_codes, len(summary.totals.failures)) == (
        8,
        8,
        2,
    )
    assert not summary.totals.skips
    shown = {r["recipient"]: r["codes"]["spring"] for r in read_jsonl(out)}
    assert shown == initial_codes(engine, "short", "spring")
    assert sorted(shown.values()) == [f"SPRING{i}" for i in range(8)]
    check_invariants(engine, redemptions_possible=False)
    check_no_reservations(engine)


def test_a_chunk_the_worker_cannot_take_in_fails_the_render_instead_of_hanging(
    db_url: str, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    template, recipients = _thirty_recipients_one_code_each(engine, tmp_path)

    def unreadable(wire: Any) -> Any:
        raise ValueError("this chunk cannot be read")

    monkeypatch.setattr(store_helper, "_prepared_from_wire", unreadable)
    outcome: list[BaseException | None] = []

    def attempt() -> None:
        try:
            render(db_url, template, recipients, "m", tmp_path / "out.jsonl", store_process=True)
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the render waited for ever for a chunk it could not read"
    assert isinstance(outcome[0], ValueError), outcome
    # The helper gave back what it had reserved for the chunk when the worker ended.
    wait_until(lambda: not reserved_scopes(engine), what="the chunk's codes to be released")
    check_invariants(engine, redemptions_possible=False)


def test_a_settle_the_helper_refuses_gives_the_chunks_codes_back(
    db_url: str, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    template, recipients = _thirty_recipients_one_code_each(engine, tmp_path)
    sent = store_helper.settle_request

    def with_a_stray_code(*args: Any) -> store_helper.Settle:
        return replace(sent(*args), handed={"spring": [(-1, "stranger", 0)]})

    monkeypatch.setattr(pipeline_module, "settle_request", with_a_stray_code)
    with pytest.raises(MailingError, match="never reserved"):
        render(db_url, template, recipients, "m", tmp_path / "out.jsonl", store_process=True)
    wait_until(lambda: not reserved_scopes(engine), what="the chunk's codes to be released")
    assert not initial_codes(engine, "m", "spring")
    check_invariants(engine, redemptions_possible=False)
