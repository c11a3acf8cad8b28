"""Uploads: all or nothing, duplicates, windows, history; on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import threading
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from promomail.pools.admin.lifecycle import PoolSettings, archive_pool, create_pool, show_pool
from promomail.pools.choices import FileFormat, Whitespace
from promomail.pools.codes import files as code_files
from promomail.pools.codes.imports import (
    MAX_REPORTED_PROBLEMS,
    ImportRecord,
    ImportReport,
    Upload,
    import_history,
    rejected_report,
    total_size,
    upload_codes,
    uploads_document,
)
from promomail.pools.codes.voiding import void_batch
from promomail.pools.errors import ImportRejected, PoolError
from promomail.pools.issuing.claiming import claim
from promomail.pools.store.db import read_transaction
from promomail.pools.store.models import NO_END, Code, ImportBatch
from tests.support.racing import claim_when_released, run_together

CodeRecord = tuple[int, str, int, str, datetime | None, datetime | None, datetime]


@pytest.fixture
def pool(engine: Engine) -> str:
    create_pool(engine, PoolSettings("Spring", description="spring codes"), activate=True)
    return "spring"


def from_bytes(data: bytes, name: str = "codes.txt") -> Upload:
    fmt = FileFormat.CSV if name.endswith(".csv") else FileFormat.TXT
    return Upload(name, fmt, stream=io.BytesIO(data))


def lines_of(*codes: str) -> bytes:
    return "".join(f"{c}\n" for c in codes).encode()


def snapshot(engine: Engine, pool_id: str) -> tuple[list[CodeRecord], list[tuple[object, ...]]]:
    """Every code row and every import batch row of the pool, in full."""
    with read_transaction(engine) as conn:
        codes = [
            (r.id, r.code, r.batch_id, r.status, r.issue_start, r.available_till, r.issuable_until)
            for r in conn.execute(select(Code).where(Code.pool_id == pool_id).order_by(Code.id))
        ]
        batches = [
            tuple(r)
            for r in conn.execute(
                ImportBatch.__table__.select()
                .where(ImportBatch.pool_id == pool_id)
                .order_by(ImportBatch.id)
            )
        ]
    return codes, batches


def stored_codes(engine: Engine, pool_id: str) -> list[str]:
    return [record[1] for record in snapshot(engine, pool_id)[0]]


def test_upload_reports_and_stores(engine: Engine, pool: str) -> None:
    (report,) = upload_codes(engine, pool, [from_bytes(lines_of("A1", "A2", "A3"))])
    assert report.as_dict() == {
        "batch": report.batch,
        "file": "codes.txt",
        "format": "txt",
        "lines": 3,
        "accepted": 3,
        "duplicates": 0,
        "rejected": [],
        "rejected_count": 0,
        "total": 3,
        "available": 3,
    }
    assert stored_codes(engine, pool) == ["A1", "A2", "A3"]
    codes, _ = snapshot(engine, pool)
    assert {(c[2], c[3], c[6]) for c in codes} == {(report.batch, "available", NO_END)}


def test_failure_on_line_9999_of_10000_leaves_the_pool_exactly_as_it_was(
    engine: Engine, pool: str
) -> None:
    upload_codes(engine, pool, [from_bytes(lines_of(*(f"OLD{i}" for i in range(50))))])
    claim(engine, pool, "m1", ["alice", "bob"])
    before = snapshot(engine, pool)

    lines = [f"NEW{i:05d}" for i in range(1, 10_001)]
    lines[9_998] = "BAD CODE "  # line 9,999: trailing whitespace
    data = lines_of(*lines)
    with pytest.raises(ImportRejected) as refused:
        upload_codes(engine, pool, [from_bytes(data, "big.txt")])
    assert refused.value.problems[0].line == 9_999
    assert refused.value.total_problems == 1
    assert "big.txt, line 9999" in str(refused.value)
    assert "nothing was stored" in str(refused.value)
    assert snapshot(engine, pool) == before
    assert show_pool(engine, pool).counts.total == 50

    # With --skip-invalid the 9,999 valid lines go in.
    (report,) = upload_codes(engine, pool, [from_bytes(data, "big.txt")], skip_invalid=True)
    assert (report.accepted, report.duplicates, report.rejected_count) == (9_999, 0, 1)
    assert [(p.line, p.reason[:30]) for p in report.rejected] == [
        (9_999, "leading or trailing whitespace")
    ]
    stored = stored_codes(engine, pool)
    assert stored[:50] == [record[1] for record in before[0]]
    assert stored[50:] == [c for c in lines if c != "BAD CODE "]
    assert report.total == 10_049


def test_all_files_of_one_upload_or_none(engine: Engine, pool: str) -> None:
    good = from_bytes(lines_of("G1", "G2"), "good.txt")
    bad = from_bytes(b"code\nB1\nB2,extra\n", "bad.csv")
    with pytest.raises(ImportRejected, match=r"bad.csv, line 3"):
        upload_codes(engine, pool, [good, bad])
    assert snapshot(engine, pool) == ([], [])
    assert import_history(engine, pool) == []


def test_unreadable_file_stores_nothing(engine: Engine, pool: str) -> None:
    good = from_bytes(lines_of("G1", "G2"), "good.txt")
    binary = from_bytes(bytes(range(256)) * 8, "photo.txt")
    with pytest.raises(PoolError, match=r"photo.txt: this looks like a binary file"):
        upload_codes(engine, pool, [good, binary])
    with pytest.raises(PoolError, match=r"empty.txt: the file is empty"):
        upload_codes(engine, pool, [from_bytes(b"", "empty.txt")])
    with pytest.raises(PoolError, match=r"no code column"):
        upload_codes(engine, pool, [from_bytes(b"voucher\nX\n", "v.csv")])
    assert snapshot(engine, pool) == ([], [])


def test_every_problem_is_counted_and_the_report_is_capped(engine: Engine, pool: str) -> None:
    lines = [f"C{i}" if i % 3 else "" for i in range(1, 3_001)]
    with pytest.raises(ImportRejected) as refused:
        upload_codes(engine, pool, [from_bytes(lines_of(*lines))])
    assert refused.value.total_problems == 1_000
    assert [p.line for p in refused.value.problems][:3] == [3, 6, 9]
    assert "and 999 more problems" in str(refused.value)
    with pytest.raises(ImportRejected) as two:
        upload_codes(engine, pool, [from_bytes(lines_of("A", "", "B", ""))])
    assert "(and 1 more problem);" in str(two.value)

    lines = [f"C{i}" if i % 2 else "" for i in range(1, 5_001)]
    (report,) = upload_codes(engine, pool, [from_bytes(lines_of(*lines))], skip_invalid=True)
    assert report.rejected_count == 2_500
    assert len(report.rejected) == MAX_REPORTED_PROBLEMS
    assert report.accepted == 2_500
    assert report.lines == 5_000


def test_duplicates_within_the_file_and_against_the_pool(engine: Engine, pool: str) -> None:
    (first,) = upload_codes(engine, pool, [from_bytes(lines_of("A", "B", "A", "C", "B", "A"))])
    assert (first.lines, first.accepted, first.duplicates) == (6, 3, 3)
    (second,) = upload_codes(engine, pool, [from_bytes(lines_of("C", "D", "D", "A", "E"))])
    assert (second.lines, second.accepted, second.duplicates) == (5, 2, 3)
    assert stored_codes(engine, pool) == ["A", "B", "C", "D", "E"]
    # Codes are case-sensitive and whitespace inside is significant.
    (third,) = upload_codes(engine, pool, [from_bytes(lines_of("a", "A B", "A  B"))])
    assert (third.accepted, third.duplicates) == (3, 0)


def test_the_same_file_twice_adds_nothing(engine: Engine, pool: str, tmp_path: Path) -> None:
    path = tmp_path / "codes.csv"
    path.write_text("Coupon Code,available_till\nX1,2031-01-01\nX2,\nX1,2032-01-01\n")
    (first,) = upload_codes(engine, pool, [Upload.from_path(path)])
    before = snapshot(engine, pool)[0]
    (second,) = upload_codes(engine, pool, [Upload.from_path(path)])
    assert (first.accepted, first.duplicates) == (2, 1)
    assert (second.accepted, second.duplicates) == (0, 3)
    assert snapshot(engine, pool)[0] == before
    # The first occurrence wins: its window is the one stored.
    assert before[0][1] == "X1"
    assert before[0][5] == datetime(2031, 1, 2)
    history = import_history(engine, pool)
    assert [(h.file, h.format, h.accepted, h.duplicates) for h in history] == [
        (str(path), "csv", 2, 1),
        (str(path), "csv", 0, 3),
    ]


def test_codes_keep_the_file_order_across_blocks_and_duplicates(
    engine: Engine, pool: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ids follow the file through many blocks, whichever way each block goes in."""
    monkeypatch.setattr(code_files, "BLOCK_SIZE", 64)  # a few lines per block
    monkeypatch.setattr(code_files, "BLOCK_LINES", 7)
    upload_codes(engine, pool, [from_bytes(lines_of("P3", "P9", "P17"))])
    lines = [f"P{i}" for i in range(40)]
    lines[5:5] = ["P2"]  # repeated within its block
    lines[30:30] = ["P1", "P25"]  # repeats of codes from earlier blocks
    (txt,) = upload_codes(engine, pool, [from_bytes(lines_of(*lines))])
    rows = "code,available_till\n" + "".join(f"Q{i},\n" for i in range(30)) + "Q4,\nP0,\n"
    (csv,) = upload_codes(engine, pool, [from_bytes(rows.encode(), "q.csv")])

    new = [f"P{i}" for i in range(40) if i not in (3, 9, 17)]
    assert (txt.accepted, txt.duplicates) == (len(new), 6)
    assert (csv.accepted, csv.duplicates) == (30, 2)
    assert stored_codes(engine, pool) == ["P3", "P9", "P17", *new, *(f"Q{i}" for i in range(30))]
    assert (csv.total, csv.available) == (3 + len(new) + 30,) * 2


class _PausingStream:
    """A file that stops before its second read until told to go on.

    Its second read comes once the upload has stored the first block, so
    while it waits the upload's transaction is open with codes loaded.
    """

    def __init__(self, data: bytes, loading: threading.Event, go_on: threading.Event) -> None:
        self._data = io.BytesIO(data)
        self._reads = 0
        self._loading = loading
        self._go_on = go_on

    def read(self, size: int = -1) -> bytes:
        self._reads += 1
        if self._reads == 2:
            self._loading.set()
            assert self._go_on.wait(timeout=120)
        return self._data.read(size)


def test_renders_claim_from_the_pool_while_an_upload_loads_it(
    engine: Engine, pool: str, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite has one writer at a time: a claim waits for the upload")
    upload_codes(engine, pool, [from_bytes(lines_of("OLD1", "OLD2"))])
    monkeypatch.setattr(code_files, "BLOCK_SIZE", 64)
    loading, go_on = threading.Event(), threading.Event()
    stream = _PausingStream(lines_of(*(f"NEW{i}" for i in range(100))), loading, go_on)
    reports: list[list[ImportReport]] = []
    upload = Upload("big.txt", FileFormat.TXT, stream=stream)  # type: ignore[arg-type]
    loader = threading.Thread(target=lambda: reports.append(upload_codes(engine, pool, [upload])))
    loader.start()
    try:
        assert loading.wait(timeout=120)
        # Another process claims while the upload holds its transaction open:
        # it neither waits for the upload nor sees its codes.
        (issued,) = run_together(claim_when_released, [(db_url, pool, "m1", ["ann", "bob"])])
    finally:
        go_on.set()
        loader.join()
    assert sorted(issued.values()) == ["OLD1", "OLD2"]
    ((report,),) = reports
    assert (report.accepted, report.total) == (100, 102)
    assert len(stored_codes(engine, pool)) == 102


def test_the_report_counts_the_pool_after_the_upload(engine: Engine, pool: str) -> None:
    """Counts before the upload plus what it added match a fresh count of the pool."""
    upload_codes(engine, pool, [from_bytes(lines_of("OLD1", "OLD2", "OLD3"))])
    claim(engine, pool, "m1", ["alice"])
    data = (
        b"code,issue_start,available_till\n"
        b"LATER,2999-01-01,\n"  # pending
        b"GONE,,2001-01-01\n"  # expired
        b"NOW,,\n"
        b"OLD2,,\n"  # a duplicate of a code the pool has
    )
    reports = upload_codes(
        engine, pool, [from_bytes(data, "w.csv"), from_bytes(lines_of("T1", "OLD3", "T2"))]
    )
    counts = show_pool(engine, pool).counts
    assert (counts.total, counts.available, counts.pending, counts.expired) == (8, 5, 1, 1)
    assert [(r.total, r.available) for r in reports] == [(8, 5)] * 2


def test_codes_with_backslashes_are_stored_as_written(engine: Engine, pool: str) -> None:
    """COPY's text format gives a backslash a meaning (``\\N`` is NULL); codes keep theirs."""
    codes = ["A\\B", "\\N", "C\\\\", "\\t"]
    upload_codes(engine, pool, [from_bytes(lines_of(*codes))])
    rows = "code,available_till\n" + "".join(f"W{c},2031-01-01\n" for c in codes)
    upload_codes(engine, pool, [from_bytes(rows.encode(), "w.csv")])
    assert stored_codes(engine, pool) == [*codes, *(f"W{c}" for c in codes)]


def test_same_code_in_two_pools(engine: Engine, pool: str) -> None:
    create_pool(engine, PoolSettings("Other"))
    upload_codes(engine, pool, [from_bytes(lines_of("SHARED", "A"))])
    (report,) = upload_codes(engine, "other", [from_bytes(lines_of("SHARED", "B"))])
    assert (report.accepted, report.duplicates) == (2, 0)


def test_csv_windows_are_stored(engine: Engine, pool: str) -> None:
    data = (
        b"code,issue-start,issue-end,available-from,available-till\n"
        b"W1,2030-01-01,2030-03-31,2030-01-15T08:00:00+01:00,2030-06-30\n"
        b"W2,,,,2030-05-01T12:00\n"
        b"W3,,,,\n"
    )
    upload_codes(engine, pool, [from_bytes(data, "windows.csv")])
    with read_transaction(engine) as conn:
        rows = {
            r.code: r
            for r in conn.execute(select(Code).where(Code.pool_id == pool).order_by(Code.id))
        }
    w1, w2, w3 = rows["W1"], rows["W2"], rows["W3"]
    assert w1.issue_start == datetime(2030, 1, 1)
    assert w1.issue_end == datetime(2030, 4, 1)  # date-only end: the whole day
    assert w1.available_from == datetime(2030, 1, 15, 7)  # converted to UTC
    assert w1.available_till == datetime(2030, 7, 1)
    assert w1.issuable_until == datetime(2030, 4, 1)  # the earlier of the two ends
    assert (w2.issue_start, w2.issue_end, w2.available_till) == (
        None,
        None,
        datetime(2030, 5, 1, 12),
    )
    assert w2.issuable_until == datetime(2030, 5, 1, 12)
    assert (w3.issue_start, w3.issue_end, w3.available_from, w3.available_till) == (
        None,
        None,
        None,
        None,
    )
    assert w3.issuable_until == NO_END
    counts = show_pool(engine, pool).counts
    assert (counts.total, counts.pending, counts.available) == (3, 1, 2)


def test_whitespace_policies(engine: Engine, pool: str) -> None:
    data = b" A1\nA2 \nA3\n"
    with pytest.raises(ImportRejected, match="line 1: leading or trailing whitespace"):
        upload_codes(engine, pool, [from_bytes(data)])
    (stripped,) = upload_codes(engine, pool, [from_bytes(data)], whitespace=Whitespace.STRIP)
    assert stored_codes(engine, pool) == ["A1", "A2", "A3"]
    (kept,) = upload_codes(engine, pool, [from_bytes(data)], whitespace=Whitespace.KEEP)
    assert (stripped.accepted, kept.accepted, kept.duplicates) == (3, 2, 1)
    assert stored_codes(engine, pool) == ["A1", "A2", "A3", " A1", "A2 "]


def test_archived_pool_refuses_uploads(engine: Engine, pool: str) -> None:
    upload_codes(engine, pool, [from_bytes(lines_of("A1"))])
    archive_pool(engine, pool)
    before = snapshot(engine, pool)
    with pytest.raises(PoolError, match="'spring' is archived"):
        upload_codes(engine, pool, [from_bytes(lines_of("B1"))])
    assert snapshot(engine, pool) == before


def test_draft_pools_take_uploads(engine: Engine) -> None:
    create_pool(engine, PoolSettings("Draft"))
    (report,) = upload_codes(engine, "draft", [from_bytes(lines_of("D1", "D2"))])
    assert report.accepted == 2
    assert show_pool(engine, "draft").counts.available == 2


def test_unknown_pool_and_unreadable_path(engine: Engine, pool: str, tmp_path: Path) -> None:
    with pytest.raises(PoolError, match="'nope' does not exist"):
        upload_codes(engine, "nope", [from_bytes(lines_of("A"))])
    missing = tmp_path / "missing.txt"
    with pytest.raises(PoolError, match=r"missing.txt: cannot read"):
        upload_codes(engine, pool, [Upload.from_path(missing)])
    assert snapshot(engine, pool) == ([], [])


def test_format_from_the_extension_or_explicit(engine: Engine, pool: str, tmp_path: Path) -> None:
    as_csv = tmp_path / "list.CSV"
    as_csv.write_text("code\nC1\n")
    as_txt = tmp_path / "list.dat"
    as_txt.write_text("code\nC2\n")
    (a,) = upload_codes(engine, pool, [Upload.from_path(as_csv)])
    (b,) = upload_codes(engine, pool, [Upload.from_path(as_txt)])
    (c,) = upload_codes(engine, pool, [Upload.from_path(as_txt, "csv")])
    assert (a.format, b.format, c.format) == ("csv", "txt", "csv")
    assert stored_codes(engine, pool) == ["C1", "code", "C2"]


def test_import_history(engine: Engine, pool: str) -> None:
    upload_codes(
        engine,
        pool,
        [from_bytes(lines_of("A", "B"), "one.txt"), from_bytes(b"code\nB\nC\n\n", "two.csv")],
        skip_invalid=True,
    )
    with pytest.raises(ImportRejected):
        upload_codes(engine, pool, [from_bytes(lines_of("D", ""), "three.txt")])
    history = import_history(engine, pool)
    assert [(h.file, h.format, h.accepted, h.duplicates, h.rejected) for h in history] == [
        ("one.txt", "txt", 2, 0, 0),
        ("two.csv", "csv", 1, 1, 1),
    ]
    assert history[0].batch < history[1].batch
    assert all(h.voided_at is None for h in history)
    datetime.fromisoformat(history[0].created_at)

    void_batch(engine, pool, history[1].batch)
    voided = import_history(engine, pool)[1]
    assert isinstance(voided, ImportRecord)
    assert voided.voided_at is not None
    with pytest.raises(PoolError, match="does not exist"):
        import_history(engine, "nope")


def test_upload_progress_counts_every_byte_read(engine: Engine, pool: str, tmp_path: Path) -> None:
    first = tmp_path / "a.txt"
    first.write_bytes(lines_of(*(f"A{i:05d}" for i in range(3000))))
    second = from_bytes(lines_of("B1", "B2"), "b.txt")
    uploads = [Upload.from_path(first), second]
    told: list[int] = []

    upload_codes(engine, pool, uploads, progress=told.append)

    assert len(told) > 1  # told as it went, not once at the end
    assert sum(told) == first.stat().st_size + len(lines_of("B1", "B2"))
    assert total_size([Upload.from_path(first)]) == first.stat().st_size
    assert total_size(uploads) is None  # a stream's size is not known beforehand


def test_a_refused_upload_reports_what_was_wrong_and_the_pool_unchanged(
    engine: Engine, pool: str
) -> None:
    upload_codes(engine, pool, [from_bytes(lines_of("KEPT1", "KEPT2"))])
    with pytest.raises(ImportRejected) as refused:
        upload_codes(engine, pool, [from_bytes(lines_of("NEW1", " padded"), "wrong.txt")])

    report = rejected_report(engine, pool, refused.value)

    document = report.as_dict()
    assert document["stored"] is False and document["error"] == str(refused.value)
    assert (document["file"], document["format"], document["batch"]) == ("wrong.txt", "txt", None)
    assert document["rejected_count"] == 1 and document["rejected"][0]["line"] == 2
    assert (document["total"], document["available"]) == (2, 2)
    assert "lines" not in document  # nothing was read into the store
    stored = upload_codes(engine, pool, [from_bytes(lines_of("C1"))])[0].as_dict()
    assert "stored" not in stored and stored["lines"] == 1


def test_the_document_of_several_uploads_gives_the_pool_totals_once(
    engine: Engine, pool: str
) -> None:
    reports = upload_codes(
        engine, pool, [from_bytes(lines_of("A1", "A2")), from_bytes(lines_of("B1"), "b.txt")]
    )
    one = uploads_document(reports[:1], several=False)
    assert one == reports[0].as_dict()
    several = uploads_document(reports, several=True)
    assert [u["file"] for u in several["uploads"]] == ["codes.txt", "b.txt"]
    assert (several["total"], several["available"]) == (3, 3)


def test_voiding_runs_the_low_stock_check(engine: Engine) -> None:
    create_pool(engine, PoolSettings("Low", description="watched", low_stock=5), activate=True)
    [keep, withdraw] = upload_codes(
        engine,
        "low",
        [from_bytes(lines_of("K1", "K2", "K3")), from_bytes(lines_of("W1", "W2", "W3"), "w.txt")],
    )
    assert withdraw.batch is not None

    report = void_batch(engine, "low", withdraw.batch)

    assert report.voided == 3
    [alert] = report.low_stock
    assert (alert.pool_id, alert.available, alert.threshold) == ("low", 3, 5)
    assert report.as_dict()["low_stock"] == [alert.as_dict()]
    assert keep.accepted == 3
