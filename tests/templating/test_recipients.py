"""Recipients files (CSV, JSON Lines), duplicates, errors with lines, shards and slices."""

from __future__ import annotations

import json
import re
from functools import partial
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from promomail.pools.errors import InvalidSetting
from promomail.templating.errors import RecipientError
from promomail.templating.mailing.options import parse_shard
from promomail.templating.mailing.recipients import (
    Recipient,
    Shard,
    columns_of,
    in_slice,
    read_recipients,
    slice_filter,
)


def _write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


def test_csv_columns_become_fields_and_lines_are_kept(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "r.csv",
        '\ufeffid,email, first_name\r\nc1,a@x.org,Ada\r\n\r\n c2 ,b@x.org,"Grace, Dr"\r\n',
    )
    assert list(read_recipients(path)) == [
        Recipient("c1", {"id": "c1", "email": "a@x.org", "first_name": "Ada"}, 2),
        Recipient("c2", {"id": " c2 ", "email": "b@x.org", "first_name": "Grace, Dr"}, 4),
    ]
    # The names templates see: stripped, like the fields.
    assert columns_of(path) == ["id", "email", "first_name"]


def test_jsonl_records_keep_their_types(tmp_path: Path) -> None:
    records = [
        {"id": 7, "email": "a@x.org", "tags": "a b", "score": 1.5},
        {"id": "c2", "vip": True},
    ]
    path = _write(tmp_path, "r.jsonl", "\n".join(json.dumps(r) for r in records) + "\n\n")
    assert list(read_recipients(path)) == [
        Recipient("7", records[0], 1),
        Recipient("c2", records[1], 2),
    ]
    assert columns_of(path) == ["id", "email", "tags", "score"]


def test_a_repeated_id_is_read_once(tmp_path: Path) -> None:
    path = _write(tmp_path, "r.csv", "id,n\na,1\nb,2\na,3\nb,4\nc,5\n")
    read = list(read_recipients(path))
    assert [(r.id, r.fields["n"], r.line) for r in read] == [
        ("a", "1", 2),
        ("b", "2", 3),
        ("c", "5", 6),
    ]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("r.csv", "", "r.csv: empty recipients file, no header"),
        ("r.csv", "email,name\na,b\n", "r.csv, line 1: the header has no 'id' column"),
        ("r.csv", "id,email\nc1,a\nc2\n", "r.csv, line 3: 1 field where the header has 2"),
        ("r.csv", "id,email\nc1,a\n ,b\n", "r.csv, line 3, column 1 ('id'): empty id"),
        ("r.csv", 'id,email\nc1,"a\nc2,b\n', "malformed CSV"),
        ("r.jsonl", '{"id": 1}\n{"id": \n', "r.jsonl, line 2: invalid JSON"),
        ("r.jsonl", '{"id": 1}\n[1, 2]\n', "r.jsonl, line 2: not a JSON object"),
        ("r.jsonl", '{"id": 1}\n\n{"email": "x"}\n', "r.jsonl, line 3: no 'id'"),
        ("r.jsonl", '{"id": ""}\n', "r.jsonl, line 1: no 'id'"),
    ],
)
def test_errors_name_file_and_line(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = _write(tmp_path, name, text)
    with pytest.raises(RecipientError, match=re.escape(message)):
        list(read_recipients(path))


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(RecipientError, match="cannot read recipients"):
        list(read_recipients(tmp_path / "absent.csv"))
    latin = _write(tmp_path, "latin.csv", b"id,name\nc1,caf\xe9\n")
    with pytest.raises(RecipientError, match="not UTF-8"):
        list(read_recipients(latin))


def test_errors_surface_only_when_reached_but_before_codes_move(tmp_path: Path) -> None:
    # Reading streams; the mailing reads the whole file first (preflight),
    # so a bad last line fails before anything is consumed.
    path = _write(tmp_path, "r.csv", "id\na\nb\n,\n")
    reader = read_recipients(path)
    assert next(reader).id == "a"
    with pytest.raises(RecipientError, match="line 4"):
        list(reader)


def test_shard_parse_and_labels() -> None:
    assert parse_shard("2/3") == Shard(2, 3)
    assert Shard(2, 3).label == "2/3"
    assert Shard().label == "all"
    for bad in ("0/2", "3/2", "1/0", "x/2", "1", "1/2/3"):
        with pytest.raises((RecipientError, InvalidSetting), match=r"shard|K/N|not valid"):
            parse_shard(bad)


def _in_shard(shard: Shard, recipient_id: str) -> bool:
    return in_slice(recipient_id, shard)


def test_keep_selects_before_duplicates(tmp_path: Path) -> None:
    path = _write(tmp_path, "r.csv", "id\n" + "".join(f"c{i}\nc{i}\n" for i in range(50)))
    halves = [
        [r.id for r in read_recipients(path, partial(_in_shard, Shard(k, 2)))] for k in (1, 2)
    ]
    assert sorted(halves[0] + halves[1]) == sorted(f"c{i}" for i in range(50))
    assert halves[0] and halves[1]


@given(
    ids=st.sets(st.text(min_size=1, max_size=12), max_size=60),
    shards=st.integers(1, 5),
    workers=st.integers(1, 4),
)
def test_shards_and_worker_slices_partition_the_recipients(
    ids: set[str], shards: int, workers: int
) -> None:
    owners: dict[str, list[tuple[int, int]]] = {rid: [] for rid in ids}
    for index in range(1, shards + 1):
        for worker in range(workers):
            for rid in ids:
                if in_slice(rid, Shard(index, shards), worker, workers):
                    owners[rid].append((index, worker))
    assert all(len(found) == 1 for found in owners.values())
    # Stable: the shard does not depend on the number of workers.
    for rid, [(index, _worker)] in owners.items():
        assert in_slice(rid, Shard(index, shards))


@given(
    ids=st.sets(st.text(min_size=1, max_size=12), max_size=40),
    shards=st.integers(1, 4),
    workers=st.integers(1, 3),
)
def test_a_workers_filter_keeps_exactly_its_slice(ids: set[str], shards: int, workers: int) -> None:
    for index in range(1, shards + 1):
        shard = Shard(index, shards)
        for worker in range(workers):
            keep = slice_filter(shard, worker, workers)
            kept = {rid for rid in ids if keep is None or keep(rid)}
            assert kept == {rid for rid in ids if in_slice(rid, shard, worker, workers)}


@pytest.mark.parametrize("bad_id", ["a\udcffb", "a\x00b", "a\x1bb"])
def test_a_slice_filter_never_sees_an_unchecked_id(tmp_path: Path, bad_id: str) -> None:
    """A bad id on a line gets the line's error, not a failure inside the shard hash."""
    path = tmp_path / "r.csv"
    path.write_bytes(b"id,email\nok,a@b.c\n" + bad_id.encode("utf-8", "surrogateescape") + b",x\n")
    keep = slice_filter(Shard(1, 2), 0, 2)
    with pytest.raises(RecipientError, match=r"line 3"):
        list(read_recipients(path, keep))
