"""Generating random codes into a pool, on SQLite and PostgreSQL."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import Engine, select

from promomail.pools.admin.lifecycle import PoolSettings, archive_pool, create_pool, show_pool
from promomail.pools.choices import DEFAULT_ALPHABET, DEFAULT_LENGTH, FileFormat
from promomail.pools.codes.generation import CodeSpec, generate_codes, luhn_check_char, luhn_valid
from promomail.pools.codes.imports import Upload, import_history, upload_codes
from promomail.pools.errors import GenerationError, PoolError
from promomail.pools.issuing.claiming import claim
from promomail.pools.store.db import read_transaction
from promomail.pools.store.models import Code, ImportBatch


@pytest.fixture
def pool(engine: Engine) -> str:
    create_pool(engine, PoolSettings("Gen", description="generated"), activate=True)
    return "gen"


def codes_in(engine: Engine, pool_id: str) -> list[str]:
    with read_transaction(engine) as conn:
        return list(
            conn.execute(select(Code.code).where(Code.pool_id == pool_id).order_by(Code.id))
            .scalars()
            .all()
        )


def batch_count(engine: Engine) -> int:
    with read_transaction(engine) as conn:
        return len(conn.execute(select(ImportBatch.id)).all())


def test_default_codes(engine: Engine, pool: str) -> None:
    report = generate_codes(engine, pool, 2_000, CodeSpec())
    assert (report.generated, report.total, report.available) == (2_000, 2_000, 2_000)
    codes = codes_in(engine, pool)
    assert len(codes) == 2_000
    assert len(set(codes)) == 2_000
    assert {len(c) for c in codes} == {DEFAULT_LENGTH}
    used = set("".join(codes))
    assert used <= set(DEFAULT_ALPHABET)
    assert not used & set("0O1IL")
    # 2,000 codes of 10 characters use the whole alphabet (a uniform-ish spread).
    assert used == set(DEFAULT_ALPHABET)
    history = import_history(engine, pool)
    assert [(h.batch, h.format, h.accepted) for h in history] == [
        (report.batch, "generated", 2_000)
    ]


def test_default_alphabet_leaves_out_look_alikes() -> None:
    assert not set(DEFAULT_ALPHABET) & set("0O1IL")
    assert len(set(DEFAULT_ALPHABET)) == len(DEFAULT_ALPHABET) == 31


def test_length_alphabet_and_prefix(engine: Engine, pool: str) -> None:
    report = generate_codes(engine, pool, 300, CodeSpec(length=6, alphabet="abcdef", prefix="SP-"))
    assert report.generated == 300
    codes = codes_in(engine, pool)
    assert len(set(codes)) == 300
    for code in codes:
        assert code.startswith("SP-")
        assert len(code) == 9
        assert set(code[3:]) <= set("abcdef")


def test_check_digit(engine: Engine, pool: str) -> None:
    spec = CodeSpec(length=8, prefix="X", check_digit=True)
    generate_codes(engine, pool, 500, spec)
    codes = codes_in(engine, pool)
    assert len(codes) == 500 and {len(c) for c in codes} == {10}
    assert all(luhn_valid(code[1:], DEFAULT_ALPHABET) for code in codes)


def _typos(code: str, alphabet: str) -> list[str]:
    return [
        code[:i] + other + code[i + 1 :]
        for i in range(len(code))
        for other in alphabet
        if other != code[i]
    ]


def _swaps(code: str) -> list[str]:
    return [
        code[:i] + code[i + 1] + code[i] + code[i + 2 :]
        for i in range(len(code) - 1)
        if code[i] != code[i + 1]
    ]


@pytest.mark.parametrize("body", ["K7QZ3MPA", "AAAAAAAA", "2345678923", "ZZ9Y"])
def test_check_digit_catches_every_single_typo_and_swap(body: str) -> None:
    # The default alphabet has an odd number of characters (31).
    code = body + luhn_check_char(body, DEFAULT_ALPHABET)
    assert luhn_valid(code, DEFAULT_ALPHABET)
    assert not [t for t in _typos(code, DEFAULT_ALPHABET) if luhn_valid(t, DEFAULT_ALPHABET)]
    assert not [s for s in _swaps(code) if luhn_valid(s, DEFAULT_ALPHABET)]


def test_check_digit_is_luhn_for_decimal_digits() -> None:
    assert luhn_check_char("7992739871", "0123456789") == "3"
    code = "79927398713"
    assert luhn_valid(code, "0123456789")
    assert not [t for t in _typos(code, "0123456789") if luhn_valid(t, "0123456789")]
    assert not luhn_valid("", DEFAULT_ALPHABET)
    assert not luhn_valid("A", DEFAULT_ALPHABET)


def test_generated_codes_avoid_codes_already_in_the_pool(engine: Engine, pool: str) -> None:
    # 4^3 = 64 possible codes; 20 uploaded leave 44 unused, so at most 22 can be made.
    existing = [f"{a}{b}{c}" for a in "ABCD" for b in "ABCD" for c in "AB"][:20]
    data = "".join(f"{c}\n" for c in existing).encode()
    upload_codes(engine, pool, [Upload("seed.txt", FileFormat.TXT, stream=io.BytesIO(data))])
    told: list[int] = []
    report = generate_codes(engine, pool, 22, CodeSpec(length=3, alphabet="ABCD"), told.append)
    codes = codes_in(engine, pool)
    assert report.generated == 22
    # Progress counts the codes made, not the draws that collided with existing ones.
    assert sum(told) == 22 and all(n >= 0 for n in told)
    assert codes[:20] == existing
    assert len(set(codes)) == 42


def test_refuses_a_count_that_does_not_fit_comfortably(engine: Engine, pool: str) -> None:
    spec = CodeSpec(length=4, alphabet="AB")  # 16 possible codes
    with pytest.raises(GenerationError, match=r"do not fit comfortably.*at most 8"):
        generate_codes(engine, pool, 9, spec)
    assert codes_in(engine, pool) == []
    assert batch_count(engine) == 0

    assert generate_codes(engine, pool, 8, spec).generated == 8
    before = codes_in(engine, pool)
    # 8 of 16 used: 8 unused, so at most 4 more.
    with pytest.raises(GenerationError, match="at most 4"):
        generate_codes(engine, pool, 5, spec)
    assert codes_in(engine, pool) == before
    assert batch_count(engine) == 1
    assert generate_codes(engine, pool, 4, spec).generated == 4
    assert len(set(codes_in(engine, pool))) == 12


def test_refuses_huge_counts_in_small_spaces(engine: Engine, pool: str) -> None:
    with pytest.raises(GenerationError, match="do not fit"):
        generate_codes(engine, pool, 1_000_000, CodeSpec(length=4))  # 31^4 = 923,521
    assert codes_in(engine, pool) == []
    assert show_pool(engine, pool).counts.total == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alphabet": "AAB"}, "repeated"),
        ({"alphabet": "A"}, "at least 2"),
        ({"alphabet": "AB C"}, "no spaces"),
        ({"prefix": "P\n"}, "no spaces"),
        ({"length": 0}, "at least 1"),
        ({"length": 60, "prefix": "PROMO-"}, "at most 64"),
    ],
)
def test_spec_is_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(GenerationError, match=message):
        CodeSpec(**kwargs)  # type: ignore[arg-type]


def test_count_must_be_positive_and_pool_usable(engine: Engine, pool: str) -> None:
    with pytest.raises(GenerationError, match="at least 1"):
        generate_codes(engine, pool, 0, CodeSpec())
    with pytest.raises(PoolError, match="does not exist"):
        generate_codes(engine, "nope", 5, CodeSpec())
    archive_pool(engine, pool)
    with pytest.raises(PoolError, match="archived"):
        generate_codes(engine, pool, 5, CodeSpec())
    assert batch_count(engine) == 0


def test_non_ascii_alphabet(engine: Engine, pool: str) -> None:
    generate_codes(engine, pool, 50, CodeSpec(length=5, alphabet="αβγδεζηθ"))
    codes = codes_in(engine, pool)
    assert len(set(codes)) == 50
    assert all(set(c) <= set("αβγδεζηθ") and len(c) == 5 for c in codes)


def test_generated_codes_can_be_claimed(engine: Engine, pool: str) -> None:
    generate_codes(engine, pool, 10, CodeSpec())
    given = claim(engine, pool, "m1", [f"c{i}" for i in range(10)])
    assert sorted(given.values()) == sorted(codes_in(engine, pool))


def test_the_report_counts_the_pool_after_generating(engine: Engine, pool: str) -> None:
    """Counts before generating plus the new codes match a fresh count of the pool."""
    data = b"code,issue_start\nU1,\nU2,\nLATER,2999-01-01\n"
    upload_codes(engine, pool, [Upload("u.csv", FileFormat.CSV, stream=io.BytesIO(data))])
    claim(engine, pool, "m1", ["alice"])
    report = generate_codes(engine, pool, 50, CodeSpec())
    counts = show_pool(engine, pool).counts
    assert (counts.total, counts.available, counts.pending, counts.issued) == (53, 51, 1, 1)
    assert (report.total, report.available) == (53, 51)
