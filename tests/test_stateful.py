"""A stateful property test of the whole store: random sequences of uploads
(valid and invalid), voids, mailing renders (new ids and re-runs), redemptions
(valid and refused), replays of an order, roll-backs, checkout holds (taken,
replayed, refused, released, redeemed by their order, run out), mailing
returns and cancels, and archives, with every DESIGN.md invariant checked
against the database after each step, and a model of what each step must do.

Time is the machine's own clock for everything that looks at it (holds,
redemptions, counts): a rule moves it forward, so holds run out without
anything running and without the test waiting.

The model is deliberately small: which codes exist, their state, who got which
code in which mailing. Each example works in pools and mailings of its own
(a fresh prefix) on one store per database, so examples never see each
other's objects while the global invariants cover everything in the store.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Engine, text

from promomail.pools.admin.lifecycle import PoolSettings, archive_pool, create_pool
from promomail.pools.after_sending.checkout import held_elsewhere_reason
from promomail.pools.after_sending.holds import MULTI_USE_NEEDS_NO_HOLD, hold_code, release_hold
from promomail.pools.after_sending.redemption import ALREADY_REDEEMED, redeem
from promomail.pools.after_sending.returns import cancel_mailing, return_codes
from promomail.pools.after_sending.rollback import unredeem
from promomail.pools.choices import FileFormat
from promomail.pools.codes.counts import pool_counts
from promomail.pools.codes.imports import Upload, upload_codes
from promomail.pools.codes.voiding import void_batch
from promomail.pools.errors import (
    ImportRejected,
    MailingNotFound,
    PoolError,
    PoolExhausted,
    PromomailError,
    RedemptionNotFound,
)
from promomail.pools.store.clock import utcnow
from promomail.templating.choices import OnExhausted, OutputFormat
from promomail.templating.errors import InvalidTemplate, RecipientError
from promomail.templating.mailing.outputs import OutputTarget
from promomail.templating.mailing.request import RenderRequest
from promomail.templating.mailing.run import render_mailing
from tests.support.invariants import check_invariants, check_no_reservations, live_holds
from tests.support.render_helpers import full_snapshot

CUSTOMERS = [f"c{i}" for i in range(6)]
MAILINGS = ["m0", "m1", "m2"]
#: Pools of every example: two single-use, one multi-use.
POOLS = {"a": False, "b": False, "shared": True}


@dataclass
class CodeModel:
    pool: str
    batch: int
    status: str = "available"  # available | issued | void
    redemptions: int = 0


@dataclass
class Model:
    codes: dict[str, CodeModel] = field(default_factory=dict)  # code → state
    batches: dict[int, tuple[str, list[str]]] = field(default_factory=dict)
    archived: set[str] = field(default_factory=set)
    #: (mailing, pool) → customer → code
    given: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    #: (pool, customer) → [(mailing, code)] of live issuances, oldest first
    history: dict[tuple[str, str], list[tuple[str, str]]] = field(default_factory=dict)
    #: (mailing, pool, customer) → code shown again by last_promocode (live records)
    reissues: dict[tuple[str, str, str], str] = field(default_factory=dict)
    #: code → orders of its live redemptions
    orders: dict[str, list[str]] = field(default_factory=dict)
    #: code → (order, end) of its checkout hold, live or run out
    holds: dict[str, tuple[str, datetime]] = field(default_factory=dict)

    def live_hold(self, code: str, now: datetime) -> tuple[str, datetime] | None:
        hold = self.holds.get(code)
        return hold if hold is not None and hold[1] > now else None

    def issuable(self, pool: str) -> list[str]:
        """The pool's codes a render may hand out, in claim order (import order)."""
        return [c for c, m in self.codes.items() if m.pool == pool and m.status == "available"]

    def initial_holder(self, code: str) -> str | None:
        holder = self.holder(code)
        return holder[0] if holder else None

    def holder(self, code: str) -> tuple[str, str] | None:
        """(customer, mailing) of a single-use code's live initial issuance."""
        for (mailing, pool), customers in self.given.items():
            if pool == self.codes[code].pool:
                for customer, given in customers.items():
                    if given == code:
                        return customer, mailing
        return None


def _upload_text(codes: list[str], flaw: str | None) -> str:
    lines = list(codes)
    if flaw == "empty line":
        lines.insert(len(lines) // 2, "")
    elif flaw == "leading space":
        lines.append(" " + (codes[0] if codes else "X"))
    elif flaw == "too long":
        lines.append("Z" * 65)
    return "".join(f"{line}\n" for line in lines)


def _machine(engine: Engine, db_url: str, folder: Path) -> type[RuleBasedStateMachine]:
    class Store(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.prefix = uuid.uuid4().hex[:8]
            self.model = Model()
            self.renders = 0
            self.orders = 0
            # Whole seconds, as hold ends are.
            self.clock = utcnow().replace(microsecond=0) + timedelta(seconds=1)

        def pool_id(self, tag: str) -> str:
            return f"{self.prefix}-{tag}"

        def mailing_id(self, tag: str) -> str:
            return f"{self.prefix}-{tag}"

        def refused(self, action: Callable[[], Any], *errors: type[Exception]) -> Exception:
            """Run an action that must be refused, and prove it changed nothing."""
            before = full_snapshot(engine)
            with pytest.raises(errors) as caught:
                action()
            assert full_snapshot(engine) == before, "a refused command changed the store"
            return caught.value

        # -- set-up -------------------------------------------------------------

        @initialize()
        def pools(self) -> None:
            for tag, multi in POOLS.items():
                pool = self.pool_id(tag)
                create_pool(
                    engine,
                    PoolSettings(name=pool, description="stateful", multi_use=multi),
                    pool_id=pool,
                    activate=True,
                )
                self._upload(tag, [f"{tag}{n}" for n in range(3)], None)

        # -- uploads ------------------------------------------------------------

        def _upload(self, tag: str, numbers: list[str], flaw: str | None) -> None:
            pool = self.pool_id(tag)
            codes = [f"{self.prefix}-{n}" for n in numbers]
            data = _upload_text(codes, flaw).encode()

            def upload() -> list[Any]:
                stream = io.BytesIO(data)
                return upload_codes(engine, pool, [Upload("up.txt", FileFormat.TXT, stream=stream)])

            if flaw is not None or pool in self.model.archived:
                error = self.refused(upload, ImportRejected, PoolError)
                archived = pool in self.model.archived
                assert isinstance(error, PoolError if archived else ImportRejected), error
                return
            [report] = upload()
            fresh = [c for c in dict.fromkeys(codes) if c not in self.model.codes]
            assert (report.accepted, report.duplicates) == (len(fresh), len(codes) - len(fresh))
            assert report.batch is not None
            for code in fresh:
                self.model.codes[code] = CodeModel(pool, report.batch)
            self.model.batches[report.batch] = (pool, fresh)

        @rule(
            tag=st.sampled_from(sorted(POOLS)),
            numbers=st.lists(st.integers(0, 40).map(str), min_size=1, max_size=6),
            flaw=st.one_of(st.none(), st.sampled_from(["empty line", "leading space", "too long"])),
        )
        def upload(self, tag: str, numbers: list[str], flaw: str | None) -> None:
            self._upload(tag, [f"{tag}{n}" for n in numbers], flaw)

        # -- voids --------------------------------------------------------------

        @rule(data=st.data(), unknown=st.integers(0, 4).map(lambda n: n == 0))
        def void(self, data: st.DataObject, unknown: bool) -> None:
            if unknown or not self.model.batches:
                pool = self.pool_id(data.draw(st.sampled_from(sorted(POOLS)), label="pool"))
                self.refused(lambda: void_batch(engine, pool, 10**9), PoolError)
                return
            batch = data.draw(st.sampled_from(sorted(self.model.batches)), label="batch")
            pool, codes = self.model.batches[batch]
            report = void_batch(engine, pool, batch)
            states = [self.model.codes[c].status for c in codes]
            assert (report.voided, report.kept_issued) == (
                states.count("available"),
                states.count("issued"),
            )
            for code in codes:
                if self.model.codes[code].status == "available":
                    self.model.codes[code].status = "void"
                    self.model.holds.pop(code, None)  # a void code's hold ends

        # -- archives -----------------------------------------------------------

        @rule(tag=st.sampled_from(sorted(POOLS)), really=st.integers(0, 2).map(lambda n: n == 0))
        def archive(self, tag: str, really: bool) -> None:
            # Mostly a no-op: an archived pool ends that pool's part of the example.
            if really:
                archive_pool(engine, self.pool_id(tag))
                self.model.archived.add(self.pool_id(tag))

        # -- renders ------------------------------------------------------------

        @rule(
            mailing=st.sampled_from(MAILINGS),
            tag=st.sampled_from(sorted(POOLS)),
            last_tag=st.one_of(st.none(), st.sampled_from(sorted(POOLS))),
            recipients=st.lists(st.sampled_from(CUSTOMERS), min_size=1, max_size=5, unique=True),
            policy=st.sampled_from(list(OnExhausted)),
            chunk_size=st.integers(1, 3),
            broken_recipients=st.integers(0, 9).map(lambda n: n == 0),
        )
        def render(
            self,
            mailing: str,
            tag: str,
            last_tag: str | None,
            recipients: list[str],
            policy: OnExhausted,
            chunk_size: int,
            broken_recipients: bool,
        ) -> None:
            self._render(mailing, tag, last_tag, recipients, policy, chunk_size, broken_recipients)

        @precondition(lambda self: any(self.model.given.values()))
        @rule(
            data=st.data(),
            last_tag=st.one_of(st.none(), st.sampled_from(sorted(POOLS))),
            policy=st.sampled_from([OnExhausted.STOP, *OnExhausted]),
        )
        def rerun(self, data: st.DataObject, last_tag: str | None, policy: OnExhausted) -> None:
            """A mailing again: some of those it already served, maybe newcomers."""
            done = sorted(k for k, v in self.model.given.items() if v)
            mailing_id, pool = data.draw(st.sampled_from(done), label="mailing and pool")
            served = sorted(self.model.given[mailing_id, pool])
            others = [c for c in CUSTOMERS if c not in served]
            again = data.draw(st.lists(st.sampled_from(served), unique=True), label="again")
            new: list[str] = []
            if others:
                newcomers = st.lists(st.sampled_from(others), max_size=2, unique=True)
                new = data.draw(newcomers, label="new")
            if not again and not new:
                again = served
            recipients = data.draw(st.permutations(again + new), label="order")
            strip = len(self.prefix) + 1
            self._render(mailing_id[strip:], pool[strip:], last_tag, recipients, policy, 2, False)

        @precondition(lambda self: any(self.model.given.values()))
        @rule(data=st.data(), tag=st.sampled_from(sorted(POOLS)))
        def follow_up(self, data: st.DataObject, tag: str) -> None:
            """A reminder: another mailing shows the codes an earlier one gave (a reissue)."""
            done = sorted(k for k, v in self.model.given.items() if v)
            earlier, pool = data.draw(st.sampled_from(done), label="earlier mailing and pool")
            others = [m for m in MAILINGS if self.mailing_id(m) != earlier]
            mailing = data.draw(st.sampled_from(others), label="reminder")
            recipients = sorted(self.model.given[earlier, pool])
            strip = len(self.prefix) + 1
            self._render(mailing, tag, pool[strip:], recipients, OnExhausted.BLANK, 2, False)

        def _render(
            self,
            mailing: str,
            tag: str,
            last_tag: str | None,
            recipients: list[str],
            policy: OnExhausted,
            chunk_size: int,
            broken_recipients: bool,
        ) -> None:
            mailing_id, pool = self.mailing_id(mailing), self.pool_id(tag)
            last_pool = self.pool_id(last_tag) if last_tag else None
            self.renders += 1
            work = folder / f"{self.prefix}-{self.renders}"
            work.mkdir()
            source = f"{{{{ client.promocode('{pool}') }}}}|"
            if last_pool:
                source += f"{{{{ client.last_promocode('{last_pool}') }}}}"
            (work / "t.j2").write_text(source, encoding="utf-8")
            with (work / "r.csv").open("w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(["name" if broken_recipients else "id", "email"])
                writer.writerows([c, f"{c}@example.com"] for c in recipients)
            out = work / "out.jsonl"
            request = RenderRequest(
                template_path=str(work / "t.j2"),
                recipients_path=str(work / "r.csv"),
                mailing_id=mailing_id,
                db_url=db_url,
                output=OutputTarget(OutputFormat.JSONL, out),
                on_exhausted=policy,
                chunk_size=chunk_size,
            )
            given = self.model.given.setdefault((mailing_id, pool), {})
            multi = POOLS[tag]
            missing = [c for c in recipients if c not in given]
            issuable = self.model.issuable(pool)
            if pool in self.model.archived:
                self.refused(lambda: render_mailing(request), InvalidTemplate)
                return
            if broken_recipients:
                self.refused(lambda: render_mailing(request), RecipientError)
                return
            short = missing and (not issuable if multi else len(issuable) < len(missing))
            if short and policy is OnExhausted.STOP:
                error = self.refused(lambda: render_mailing(request), PoolExhausted)
                assert isinstance(error, PoolExhausted) and error.pool_id == pool
                return

            # The last codes shown are those from before this render.
            last_before = {
                c: [
                    code
                    for m, code in self.model.history.get((last_pool, c), [])
                    if m != mailing_id
                ]
                for c in recipients
                if last_pool
            }
            summary = render_mailing(request)

            # Who gets what: old codes again; new ones in file order while they last.
            expected: dict[str, str] = {}
            handed: list[str] = []
            for customer in recipients:
                if customer in given:
                    expected[customer] = given[customer]
                elif multi and issuable:
                    expected[customer] = issuable[0]
                    handed.append(customer)
                elif not multi and len(handed) < len(issuable):
                    expected[customer] = issuable[len(handed)]
                    handed.append(customer)
            for customer in handed:
                code = expected[customer]
                given[customer] = code
                self.model.history.setdefault((pool, customer), []).append((mailing_id, code))
                if not multi:
                    self.model.codes[code].status = "issued"
            left_out = [c for c in recipients if c not in expected]
            assert summary.totals.status == "finished" and summary.totals.failures == []
            assert (summary.totals.new_codes, summary.totals.reused_codes) == (
                len(handed),
                len(recipients) - len(handed) - len(left_out),
            )
            if policy is OnExhausted.SKIP:
                assert [skip.recipient for skip in summary.totals.skips] == left_out
            else:
                assert summary.totals.skips == []
                assert left_out == [] or policy is OnExhausted.BLANK

            records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
            shown = {r["recipient"]: r["parts"]["body"].split("|") for r in records}
            assert len(shown) == len(records), "a recipient appears twice in the output"
            rendered = [c for c in recipients if policy is not OnExhausted.SKIP or c in expected]
            assert list(shown) == rendered
            for customer, (code, last) in shown.items():
                assert code == expected.get(customer, ""), customer
                if last_pool:
                    earlier = last_before[customer]
                    # The latest code from another mailing, or nothing.
                    assert last == (earlier[-1] if earlier else ""), (customer, last, earlier)
                    if last:  # recorded once per mailing, pool and customer
                        self.model.reissues.setdefault((mailing_id, last_pool, customer), last)

        # -- redemption ---------------------------------------------------------

        def _multi(self, code: str) -> bool:
            return POOLS[self.model.codes[code].pool.removeprefix(f"{self.prefix}-")]

        @rule(
            data=st.data(),
            customer=st.one_of(st.none(), st.sampled_from(CUSTOMERS)),
            unknown=st.integers(0, 4).map(lambda n: n == 0),
        )
        def redeem_code(self, data: st.DataObject, customer: str | None, unknown: bool) -> None:
            now = self.clock
            if unknown or not self.model.codes:
                code = f"{self.prefix}-no-such-code"
                error = self.refused(
                    lambda: _refuse(redeem(engine, code, customer=customer, now=now)), _Refused
                )
                assert "unknown code" in str(error)
                return
            code = data.draw(st.sampled_from(sorted(self.model.codes)), label="code")
            self.orders += 1
            self._redeem(code, customer, f"o{self.orders}")

        @precondition(
            lambda self: any(self.model.live_hold(c, self.clock) for c in self.model.holds)
        )
        @rule(data=st.data(), customer=st.one_of(st.none(), st.sampled_from(CUSTOMERS)))
        def redeem_held(self, data: st.DataObject, customer: str | None) -> None:
            """The payment went through: the holding order redeems, and the hold ends."""
            held = sorted(c for c in self.model.holds if self.model.live_hold(c, self.clock))
            code = data.draw(st.sampled_from(held), label="held code")
            self._redeem(code, customer, self.model.holds[code][0])

        def _redeem(self, code: str, customer: str | None, order: str) -> None:
            now = self.clock
            state = self.model.codes[code]
            multi = self._multi(code)
            hold = self.model.live_hold(code, now)
            if state.status == "void" or (not multi and state.redemptions > 0):
                self.refused(
                    lambda: _refuse(redeem(engine, code, customer=customer, order=order, now=now)),
                    _Refused,
                )
                return
            if hold is not None and hold[0] != order:
                # Invariant 13: another order's checkout holds it, dry runs included.
                for dry_run in (True, False):

                    def attempt(dry_run: bool = dry_run) -> None:
                        _refuse(
                            redeem(
                                engine,
                                code,
                                customer=customer,
                                order=order,
                                now=now,
                                dry_run=dry_run,
                            )
                        )

                    error = self.refused(attempt, _Refused)
                    assert str(error) == held_elsewhere_reason(hold[1])
                return
            result = redeem(engine, code, customer=customer, order=order, now=now)
            assert result.ok and result.pool == state.pool and not result.replayed, result
            holder = self.model.holder(code)
            if multi:
                mailings = [
                    m
                    for m, c in self.model.history.get((state.pool, customer or ""), [])
                    if c == code
                ]
                assert result.issued_to == (customer if mailings else None), result
                assert result.mailing == (mailings[0] if mailings else None), result
            else:
                assert (result.issued_to, result.mailing) == (holder or (None, None)), result
                state.status = "issued"  # redeemed before any mailing: never sent now
                # The holder's redemption ends its hold; one run out is cleared too.
                self.model.holds.pop(code, None)
            state.redemptions += 1
            self.model.orders.setdefault(code, []).append(order)

        # -- checkout holds -----------------------------------------------------

        @rule(
            data=st.data(),
            seconds=st.sampled_from([30, 90, 900, 3600]),
            again=st.booleans(),
            unknown=st.integers(0, 6).map(lambda n: n == 0),
        )
        def hold(self, data: st.DataObject, seconds: int, again: bool, unknown: bool) -> None:
            now, length = self.clock, timedelta(seconds=seconds)
            if unknown or not self.model.codes:
                code = f"{self.prefix}-no-such-code"
                error = self.refused(
                    lambda: _refuse(hold_code(engine, code, order="x", length=length, now=now)),
                    _Refused,
                )
                assert str(error) == "unknown code"
                return
            code = data.draw(st.sampled_from(sorted(self.model.codes)), label="code")
            state = self.model.codes[code]
            current = self.model.live_hold(code, now)
            if again and current is not None:
                order = current[0]  # the same checkout again: a replay
            else:
                self.orders += 1
                order = f"o{self.orders}"
            if state.status == "void":
                reason: str | None = "void code"
            elif self._multi(code):
                reason = MULTI_USE_NEEDS_NO_HOLD
            elif state.redemptions > 0:
                reason = ALREADY_REDEEMED
            elif current is not None and current[0] != order:
                reason = held_elsewhere_reason(current[1])
            else:
                reason = None
            if reason is not None:
                error = self.refused(
                    lambda: _refuse(hold_code(engine, code, order=order, length=length, now=now)),
                    _Refused,
                )
                assert str(error) == reason
                return
            result = hold_code(engine, code, order=order, length=length, now=now)
            until = now + length
            if current is not None:
                until = max(until, current[1])
            assert result.ok and result.pool == state.pool, result
            assert (result.replayed, result.expires_at) == (current is not None, until), result
            self.model.holds[code] = (order, until)

        @rule(data=st.data(), wrong_order=st.integers(0, 3).map(lambda n: n == 0))
        def release(self, data: st.DataObject, wrong_order: bool) -> None:
            now = self.clock
            held = sorted(c for c in self.model.holds if self.model.live_hold(c, now))
            if wrong_order or not held:
                code = data.draw(st.sampled_from(sorted(self.model.codes) or ["none"]))
                order = (
                    "never"
                    if wrong_order or code not in self.model.holds
                    else self.model.holds[code][0]
                )
                error = self.refused(
                    lambda: _refuse(release_hold(engine, code, order=order, now=now)), _Refused
                )
                assert "holds nothing" in str(error) or str(error) == "unknown code"
                return
            code = data.draw(st.sampled_from(held), label="held code")
            order = self.model.holds[code][0]
            result = release_hold(engine, code, order=order, now=now)
            assert result.ok and result.order == order, result
            del self.model.holds[code]
            # Released once: a second release finds nothing.
            self.refused(
                lambda: _refuse(release_hold(engine, code, order=order, now=now)), _Refused
            )

        @rule(seconds=st.sampled_from([1, 29, 30, 60, 600, 3600]))
        def time_passes(self, seconds: int) -> None:
            """Holds run out with nothing running: only the clock moves."""
            self.clock += timedelta(seconds=seconds)

        @precondition(lambda self: any(self.model.orders.values()))
        @rule(data=st.data(), dry_run=st.booleans())
        def replay(self, data: st.DataObject, dry_run: bool) -> None:
            """A checkout retried: the same success again, nothing recorded."""
            live = sorted((c, o) for c, orders in self.model.orders.items() for o in orders)
            code, order = data.draw(st.sampled_from(live), label="redemption")
            before = full_snapshot(engine)
            result = redeem(
                engine, code, customer="anyone", order=order, dry_run=dry_run, now=self.clock
            )
            assert full_snapshot(engine) == before, "a replay changed the store"
            assert result.ok and result.replayed and result.order == order, result

        @rule(data=st.data(), unknown=st.integers(0, 3).map(lambda n: n == 0))
        def roll_back(self, data: st.DataObject, unknown: bool) -> None:
            live = sorted((c, o) for c, orders in self.model.orders.items() for o in orders)
            if unknown or not live:
                code = data.draw(st.sampled_from(sorted(self.model.codes) or ["none"]))
                self.refused(lambda: unredeem(engine, code, order="never"), RedemptionNotFound)
                return
            code, order = data.draw(st.sampled_from(live), label="redemption")
            result = unredeem(engine, code, order=order, now=self.clock)
            state = self.model.codes[code]
            state.redemptions -= 1
            self.model.orders[code].remove(order)
            assert result.redemptions == state.redemptions
            multi = POOLS[state.pool.removeprefix(f"{self.prefix}-")]
            if not multi and state.redemptions == 0 and self.model.holder(code) is None:
                state.status = "available"  # nobody holds it: back in the pool
            # Undone once: a second roll-back of the same order is refused.
            self.refused(lambda: unredeem(engine, code, order=order), RedemptionNotFound)

        # -- codes of undelivered messages come back ---------------------------------

        @precondition(lambda self: any(self.model.given.values()))
        @rule(data=st.data(), cancel=st.booleans(), unknown=st.integers(0, 5).map(lambda n: n == 0))
        def give_back(self, data: st.DataObject, cancel: bool, unknown: bool) -> None:
            mailings = sorted({m for (m, _), given in self.model.given.items() if given})
            if unknown or not mailings:
                mailing_id = self.mailing_id("never-rendered")
                self.refused(lambda: cancel_mailing(engine, mailing_id), MailingNotFound)
                return
            mailing_id = data.draw(st.sampled_from(mailings), label="mailing")
            holders = sorted(
                {c for (m, _), given in self.model.given.items() if m == mailing_id for c in given}
            )
            if cancel:
                chosen = holders
            else:
                picked = st.lists(st.sampled_from([*holders, "stranger"]), min_size=1, unique=True)
                chosen = data.draw(picked, label="recipients")
            kept = {"redeemed": 0, "reissued": 0, "multi_use": 0}
            freed: list[tuple[str, str, str]] = []
            for (m, pool), given in sorted(self.model.given.items()):
                if m != mailing_id:
                    continue
                for customer in chosen:
                    code = given.get(customer)
                    if code is None:
                        continue
                    state = self.model.codes[code]
                    shown_elsewhere = any(
                        c == code and other != mailing_id
                        for (other, _, _), c in self.model.reissues.items()
                    )
                    if POOLS[pool.removeprefix(f"{self.prefix}-")]:
                        kept["multi_use"] += 1
                    elif state.redemptions > 0:
                        kept["redeemed"] += 1
                    elif shown_elsewhere:
                        kept["reissued"] += 1
                    else:
                        freed.append((pool, customer, code))
            if cancel:
                report = cancel_mailing(engine, mailing_id, reason="never sent")
            else:
                report = return_codes(engine, mailing_id, chosen, reason="bounced")
            assert report.as_dict() == {
                "mailing": mailing_id,
                "returned": len(freed),
                "kept": kept,
            }
            for pool, customer, code in freed:
                del self.model.given[mailing_id, pool][customer]
                self.model.history[pool, customer].remove((mailing_id, code))
                self.model.codes[code].status = "available"
            # The mailing's own reissue records go too: for every recipient on a
            # cancel (also those it gave no new code), for the listed ones on a return.
            for key in [
                k for k in self.model.reissues if k[0] == mailing_id and (cancel or k[2] in chosen)
            ]:
                del self.model.reissues[key]

        # -- after every step ---------------------------------------------------

        @invariant()
        def store_matches_invariants_and_model(self) -> None:
            check_invariants(engine)
            check_no_reservations(engine)
            pools = [self.pool_id(tag) for tag in POOLS]
            mine = {"p": f"{self.prefix}-%"}
            with engine.connect() as conn:
                codes = conn.execute(
                    text(
                        "SELECT code, pool_id, batch_id, status, redemptions FROM codes "
                        "WHERE pool_id LIKE :p"
                    ),
                    mine,
                ).all()
                issued = conn.execute(
                    text(
                        "SELECT i.mailing_id, i.pool_id, i.customer_id, c.code FROM issuances i "
                        "JOIN codes c ON c.id = i.code_id "
                        "WHERE i.kind = 'initial' AND i.returned_at IS NULL "
                        "AND i.mailing_id LIKE :p"
                    ),
                    mine,
                ).all()
                reissued = conn.execute(
                    text(
                        "SELECT i.mailing_id, i.pool_id, i.customer_id, c.code FROM issuances i "
                        "JOIN codes c ON c.id = i.code_id "
                        "WHERE i.kind = 'reissue' AND i.returned_at IS NULL "
                        "AND i.mailing_id LIKE :p"
                    ),
                    mine,
                ).all()
                redeemed_by_order = conn.execute(
                    text(
                        "SELECT c.code, r.order_id FROM redemptions r "
                        "JOIN codes c ON c.id = r.code_id "
                        "WHERE r.rolled_back_at IS NULL AND c.pool_id LIKE :p"
                    ),
                    mine,
                ).all()
                counts = pool_counts(conn, pools, self.clock)
            # Every code in the state the model says…
            stored = {
                r.code: CodeModel(r.pool_id, r.batch_id, r.status, r.redemptions) for r in codes
            }
            assert stored == self.model.codes
            # …every customer with the code the model gave them (re-runs reuse)…
            recorded: dict[tuple[str, str], dict[str, str]] = {}
            for mailing_id, pool, customer, code in issued:
                recorded.setdefault((mailing_id, pool), {})[customer] = code
            assert recorded == {k: v for k, v in self.model.given.items() if v}
            # …every live reissue record and every live redemption…
            assert {(m, p, c): code for m, p, c, code in reissued} == self.model.reissues
            assert sorted((code, order) for code, order in redeemed_by_order) == sorted(
                (code, order) for code, orders in self.model.orders.items() for order in orders
            )
            # …every hold that counts now, one per code at most (invariant 13)…
            now = self.clock
            live = {c: h for c in self.model.holds if (h := self.model.live_hold(c, now))}
            assert live_holds(engine, now, f"{self.prefix}-%") == live
            # …and the counts the commands report agree with both.
            for pool in pools:
                states = [m.status for m in self.model.codes.values() if m.pool == pool]
                redeemed = sum(
                    m.redemptions > 0 for m in self.model.codes.values() if m.pool == pool
                )
                got = counts[pool]
                assert (got.total, got.reserved, got.pending, got.expired) == (len(states), 0, 0, 0)
                redemptions = sum(
                    m.redemptions for m in self.model.codes.values() if m.pool == pool
                )
                held = sum(self.model.codes[c].pool == pool for c in live)
                assert (
                    got.available,
                    got.issued,
                    got.void,
                    got.redeemed,
                    got.redemptions,
                    got.held,
                ) == (
                    states.count("available"),
                    states.count("issued"),
                    states.count("void"),
                    redeemed,
                    redemptions,
                    held,
                ), (pool, got)

    return Store


class _Refused(PromomailError):
    """A refused redemption, raised so the snapshot helper can expect it."""


def _refuse(result: Any) -> None:
    assert not result.ok, result
    raise _Refused(result.reason)


@pytest.mark.slow
def test_random_sequences_of_commands_keep_every_invariant(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    on_postgres = db_url.startswith("postgresql")
    # Typed through a cast: older hypothesis releases ship this one untyped.
    run_machine = cast(Callable[..., None], run_state_machine_as_test)
    run_machine(
        _machine(engine, db_url, tmp_path),
        settings=settings(
            max_examples=20 if on_postgres else 35,
            stateful_step_count=15,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
