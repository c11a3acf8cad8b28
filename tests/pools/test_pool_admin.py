"""Pool life cycle and counts, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
from dataclasses import fields
from datetime import timedelta

import pytest
from sqlalchemy import Engine, func, select, update

from promomail.pools.admin.lifecycle import (
    PoolSettings,
    activate_pool,
    archive_pool,
    create_pool,
    delete_pool,
    edit_pool,
    list_pools,
    show_pool,
    slugify,
)
from promomail.pools.after_sending.redemption import redeem
from promomail.pools.choices import FileFormat
from promomail.pools.codes.counts import PoolCounts, available_count, pool_counts
from promomail.pools.codes.imports import Upload, import_history, upload_codes
from promomail.pools.codes.voiding import void_batch
from promomail.pools.errors import InvalidPoolSetting, PoolError, PoolNotFound, SettingLocked
from promomail.pools.issuing.claiming import claim, reserve
from promomail.pools.store.clock import utcnow
from promomail.pools.store.db import read_transaction, write_transaction
from promomail.pools.store.models import Code, ImportBatch, Issuance, Pool


def add_txt(engine: Engine, pool_id: str, *codes: str) -> int:
    data = "".join(f"{c}\n" for c in codes).encode()
    (report,) = upload_codes(
        engine, pool_id, [Upload("codes.txt", FileFormat.TXT, stream=io.BytesIO(data))]
    )
    assert report.batch is not None
    return report.batch


def add_csv(engine: Engine, pool_id: str, text: str) -> int:
    upload = Upload("codes.csv", FileFormat.CSV, stream=io.BytesIO(text.encode()))
    (report,) = upload_codes(engine, pool_id, [upload])
    assert report.batch is not None
    return report.batch


def active_pool(
    engine: Engine,
    pool_id: str = "spring",
    *,
    multi_use: bool = False,
    require_issued: bool = False,
    issued_valid_days: int | None = None,
) -> str:
    settings = PoolSettings(
        name=pool_id.title(),
        description="test pool",
        multi_use=multi_use,
        require_issued=require_issued,
        issued_valid_days=issued_valid_days,
    )
    create_pool(engine, settings, pool_id=pool_id, activate=True)
    return pool_id


def table_counts(engine: Engine) -> tuple[int, int, int, int]:
    with read_transaction(engine) as conn:
        return (
            conn.execute(select(func.count()).select_from(Pool)).scalar_one(),
            conn.execute(select(func.count()).select_from(Code)).scalar_one(),
            conn.execute(select(func.count()).select_from(ImportBatch)).scalar_one(),
            conn.execute(select(func.count()).select_from(Issuance)).scalar_one(),
        )


def assert_adds_up(counts: PoolCounts) -> None:
    parts = (
        counts.available
        + counts.pending
        + counts.reserved
        + counts.issued
        + counts.expired
        + counts.void
    )
    assert counts.total == parts, counts


# --------------------------------------------------------------------------
# settings and slugs (no database)


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Spring Sale 30%", "spring-sale-30"),
        ("  Été à Paris!  ", "ete-a-paris"),
        ("Black--Friday__2024", "black-friday-2024"),
        ("SUMMER20", "summer20"),
        ("100% off -- today", "100-off-today"),
        ("x" * 300, "x" * 100),
    ],
)
def test_slugify(name: str, slug: str) -> None:
    assert slugify(name) == slug


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"name": "  "}, "non-empty name"),
        ({"name": "p", "multi_use": True, "require_issued": True}, "exclude each other"),
        ({"name": "p", "multi_use": True, "per_customer": 3}, "exclude each other"),
        (
            {"name": "p", "issued_valid_days": 5},
            "^issued_valid_days applies only to require_issued pools$",
        ),
        ({"name": "p", "require_issued": True, "issued_valid_days": 0}, "at least 1"),
        ({"name": "p", "per_customer": 0}, "between 1 and 100"),
        ({"name": "p", "per_customer": 101}, "between 1 and 100"),
        ({"name": "p", "low_stock": -1}, "0 or more"),
        ({"name": "p", "notify_url": "ftp://example.com"}, "http"),
        ({"name": "p", "notify_email": "not-an-address"}, "e-mail"),
    ],
)
def test_settings_are_validated(settings: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidPoolSetting, match=message) as refused:
        PoolSettings(**settings)  # type: ignore[arg-type]
    # The settings at fault are named as PoolSettings calls them, for a front end to rename.
    assert set(refused.value.settings) <= {field.name for field in fields(PoolSettings)}


def test_settings_mode() -> None:
    assert PoolSettings("p").mode == "single-use"
    assert PoolSettings("p", multi_use=True).mode == "multi-use"
    assert PoolSettings("p", require_issued=True, issued_valid_days=30).mode == (
        "single-use, require-issued"
    )
    assert PoolSettings("p", per_customer=3).mode == "per-customer 3"


# --------------------------------------------------------------------------
# create / activate


def test_create_is_a_draft_with_a_slug_id(engine: Engine) -> None:
    pool = create_pool(engine, PoolSettings("Spring Sale 30%"))
    assert pool.id == "spring-sale-30"
    assert pool.status == "draft"
    assert pool.name == "Spring Sale 30%"
    assert pool.counts == PoolCounts()
    assert show_pool(engine, "spring-sale-30").settings == PoolSettings("Spring Sale 30%")
    assert [p.id for p in list_pools(engine)] == ["spring-sale-30"]


def test_create_with_an_explicit_id_and_settings(engine: Engine) -> None:
    settings = PoolSettings(
        "Referral",
        description="advocates",
        require_issued=True,
        issued_valid_days=30,
        low_stock=100,
        notify_url="https://hooks.example.com/x",
        notify_email="ops@example.com",
    )
    pool = create_pool(engine, settings, pool_id="ref-2024", activate=True)
    assert (pool.id, pool.status) == ("ref-2024", "active")
    assert show_pool(engine, "ref-2024").settings == settings
    as_dict = pool.as_dict()
    assert as_dict["mode"] == "single-use, require-issued"
    assert as_dict["total"] == 0
    assert as_dict["low_stock"] == 100


@pytest.mark.parametrize("bad_id", ["Upper", "-lead", "with space", "", "x" * 101, "ünï"])
def test_create_refuses_invalid_ids(engine: Engine, bad_id: str) -> None:
    with pytest.raises(PoolError, match="not valid"):
        create_pool(engine, PoolSettings("p"), pool_id=bad_id)
    assert table_counts(engine) == (0, 0, 0, 0)


def test_create_refuses_a_name_without_a_slug(engine: Engine) -> None:
    with pytest.raises(PoolError, match="give the id"):
        create_pool(engine, PoolSettings("!!!"))


def test_ids_are_unique(engine: Engine) -> None:
    create_pool(engine, PoolSettings("Spring Sale", description="first"))
    with pytest.raises(PoolError, match="already exists"):
        create_pool(engine, PoolSettings("Spring  sale!", description="second"))
    assert show_pool(engine, "spring-sale").settings.description == "first"


def test_activation_needs_a_description(engine: Engine) -> None:
    with pytest.raises(PoolError, match="without a description"):
        create_pool(engine, PoolSettings("spring"), activate=True)
    assert table_counts(engine) == (0, 0, 0, 0)

    create_pool(engine, PoolSettings("spring"))
    with pytest.raises(PoolError, match="no description"):
        activate_pool(engine, "spring")
    assert show_pool(engine, "spring").status == "draft"

    edit_pool(engine, "spring", description="30% off in spring")
    assert activate_pool(engine, "spring").status == "active"
    # Activating again is harmless.
    assert activate_pool(engine, "spring").status == "active"


def test_unknown_pool(engine: Engine) -> None:
    for operation in (activate_pool, archive_pool, delete_pool, show_pool):
        with pytest.raises(PoolNotFound, match="'nope' does not exist"):
            operation(engine, "nope")
    with pytest.raises(PoolNotFound):
        edit_pool(engine, "nope", low_stock=3)


# --------------------------------------------------------------------------
# edit


def test_mode_flags_change_freely_while_draft(engine: Engine) -> None:
    create_pool(engine, PoolSettings("spring"))
    assert edit_pool(engine, "spring", multi_use=True).settings.mode == "multi-use"
    edit_pool(engine, "spring", multi_use=False, require_issued=True, issued_valid_days=7)
    assert show_pool(engine, "spring").settings.mode == "single-use, require-issued"
    edit_pool(engine, "spring", require_issued=False, issued_valid_days=None, per_customer=2)
    assert show_pool(engine, "spring").settings.per_customer == 2


@pytest.mark.parametrize(
    ("change", "flag"),
    [
        ({"multi_use": True}, "multi_use"),
        ({"require_issued": True}, "require_issued"),
        ({"per_customer": 3}, "per_customer"),
    ],
)
def test_mode_flags_are_fixed_once_active(
    engine: Engine, change: dict[str, object], flag: str
) -> None:
    active_pool(engine)
    before = show_pool(engine, "spring")
    with pytest.raises(
        SettingLocked, match=f"^{flag} can no longer change: pool 'spring' is active$"
    ) as refused:
        edit_pool(engine, "spring", **change)
    assert refused.value.settings == (flag,)
    assert show_pool(engine, "spring") == before
    # Restating the current value is not a change.
    edit_pool(engine, "spring", multi_use=False, require_issued=False, per_customer=None)


def test_mode_flags_are_fixed_for_archived_pools_too(engine: Engine) -> None:
    active_pool(engine)
    archive_pool(engine, "spring")
    with pytest.raises(PoolError, match="archived"):
        edit_pool(engine, "spring", multi_use=True)
    with pytest.raises(PoolError, match="archived"):
        edit_pool(engine, "spring", low_stock=5)


def test_other_settings_stay_editable_when_active(engine: Engine) -> None:
    active_pool(engine, require_issued=True, issued_valid_days=10)
    pool = edit_pool(
        engine,
        "spring",
        name="Spring 2025",
        description="new text",
        low_stock=50,
        notify_url="http://hooks.example.com/low",
        notify_email="team@example.com",
        issued_valid_days=20,
    )
    assert pool.name == "Spring 2025"
    assert pool.settings.issued_valid_days == 20
    assert pool.settings.low_stock == 50
    assert pool.id == "spring"


def test_edit_validates_the_result_and_changes_nothing_when_refused(engine: Engine) -> None:
    active_pool(engine)
    before = show_pool(engine, "spring")
    with pytest.raises(PoolError, match="must keep a description"):
        edit_pool(engine, "spring", description="")
    with pytest.raises(PoolError, match="http"):
        edit_pool(engine, "spring", low_stock=5, notify_url="mailto:x@example.com")
    with pytest.raises(PoolError, match="issued_valid_days applies only to require_issued pools"):
        edit_pool(engine, "spring", issued_valid_days=5)
    with pytest.raises(PoolError, match="unknown pool settings: colour"):
        edit_pool(engine, "spring", colour="red")
    assert show_pool(engine, "spring") == before


def test_multi_use_and_require_issued_exclude_each_other(engine: Engine) -> None:
    with pytest.raises(PoolError, match="exclude each other"):
        create_pool(engine, PoolSettings("p", multi_use=True, require_issued=True))
    create_pool(engine, PoolSettings("a", require_issued=True))
    create_pool(engine, PoolSettings("b", multi_use=True))
    with pytest.raises(PoolError, match="exclude each other"):
        edit_pool(engine, "a", multi_use=True)
    with pytest.raises(PoolError, match="exclude each other"):
        edit_pool(engine, "b", require_issued=True)
    assert show_pool(engine, "a").settings.mode == "single-use, require-issued"
    assert show_pool(engine, "b").settings.mode == "multi-use"


# --------------------------------------------------------------------------
# archive / delete


def test_archive_stops_issuing_and_keeps_history(engine: Engine) -> None:
    active_pool(engine)
    add_txt(engine, "spring", "A1", "A2", "A3")
    claim(engine, "spring", "m1", ["alice"])
    archived = archive_pool(engine, "spring")
    assert archived.status == "archived"
    assert archived.counts.issued == 1
    with pytest.raises(PoolError, match="archived, not active"):
        claim(engine, "spring", "m2", ["bob"])
    with pytest.raises(PoolError, match="archived"):
        activate_pool(engine, "spring")
    assert [h.accepted for h in import_history(engine, "spring")] == [3]
    assert [(p.id, p.status) for p in list_pools(engine)] == [("spring", "archived")]
    # The issuance is still on record.
    assert table_counts(engine) == (1, 3, 1, 1)


def test_delete_a_pool_that_never_issued(engine: Engine) -> None:
    active_pool(engine)
    active_pool(engine, "other")
    add_txt(engine, "spring", "A1", "A2")
    add_txt(engine, "other", "B1")
    delete_pool(engine, "spring")
    with pytest.raises(PoolNotFound):
        show_pool(engine, "spring")
    assert table_counts(engine) == (1, 1, 1, 0)
    # The id is free again.
    create_pool(engine, PoolSettings("spring"))


def test_delete_is_refused_once_a_code_was_issued(engine: Engine) -> None:
    active_pool(engine)
    add_txt(engine, "spring", "A1", "A2")
    claim(engine, "spring", "m1", ["alice"])
    before = table_counts(engine)
    with pytest.raises(PoolError, match="archive it instead"):
        delete_pool(engine, "spring")
    assert table_counts(engine) == before


def test_delete_is_refused_while_codes_are_reserved(engine: Engine) -> None:
    active_pool(engine)
    add_txt(engine, "spring", "A1", "A2")
    reserve(engine, "spring", 1, scope="m1")
    with pytest.raises(PoolError, match="cannot be deleted"):
        delete_pool(engine, "spring")
    assert table_counts(engine) == (1, 2, 1, 0)


# --------------------------------------------------------------------------
# counts


def test_counts_add_up_in_every_state(engine: Engine) -> None:
    active_pool(engine)
    now = utcnow()
    future = (now + timedelta(days=30)).isoformat(timespec="seconds")
    past = (now - timedelta(days=1)).isoformat(timespec="seconds")
    long_ago = (now - timedelta(days=9)).isoformat(timespec="seconds")
    add_txt(engine, "spring", *(f"A{i}" for i in range(10)))
    add_csv(
        engine,
        "spring",
        "code,issue_start,issue_end,available_till\n"
        f"PENDING1,{future},,\n"
        f"PENDING2,{future},,\n"
        f"EXPIRED1,,{past},\n"
        f"EXPIRED2,,,{past}\n"
        f"EXPIRED3,{long_ago},{past},\n",
    )
    wrong = add_txt(engine, "spring", "W1", "W2", "W3")
    void_batch(engine, "spring", wrong)
    claim(engine, "spring", "m1", ["c1", "c2", "c3"])
    reserve(engine, "spring", 2, scope="m2")
    with write_transaction(engine) as conn:  # a redemption of one issued code
        conn.execute(update(Code).where(Code.code == "A0").values(redemptions=1))

    counts = show_pool(engine, "spring").counts
    assert counts == PoolCounts(
        total=18,
        available=5,
        pending=2,
        reserved=2,
        issued=3,
        redeemed=1,
        expired=3,
        void=3,
        redemptions=1,
    )
    assert_adds_up(counts)
    assert list_pools(engine)[0].counts == counts
    with read_transaction(engine) as conn:
        assert pool_counts(conn)["spring"] == counts
        assert available_count(conn, "spring") == 5
        # Later, the pending codes become available and everything else expires.
        later = pool_counts(conn, ["spring"], now=now + timedelta(days=31))["spring"]
    assert later.pending == 0
    assert later.available == 7
    assert_adds_up(later)


def test_counts_of_several_pools_are_separate(engine: Engine) -> None:
    active_pool(engine, "a")
    active_pool(engine, "b", multi_use=True)
    create_pool(engine, PoolSettings("empty"))
    add_txt(engine, "a", "X1", "X2", "X3")
    add_txt(engine, "b", "SUMMER20")
    claim(engine, "a", "m", ["c1"])
    claim(engine, "b", "m", ["c1", "c2"])
    views = {p.id: p.counts for p in list_pools(engine)}
    assert views["a"] == PoolCounts(total=3, available=2, issued=1)
    # A multi-use code is never consumed.
    assert views["b"] == PoolCounts(total=1, available=1)
    assert views["empty"] == PoolCounts()
    for counts in views.values():
        assert_adds_up(counts)


def test_an_unknown_pool_close_to_known_ones_suggests_them(engine: Engine) -> None:
    for name in ("Welcome", "Welcome VIP", "Summer"):
        create_pool(engine, PoolSettings(name=name, description="d"))

    with pytest.raises(PoolNotFound) as typo:
        show_pool(engine, "welcom")
    assert str(typo.value) == "pool 'welcom' does not exist (did you mean 'welcome'?)"
    assert typo.value.suggestions == ["welcome"]
    with pytest.raises(PoolNotFound) as two:
        show_pool(engine, "welcome-vp")
    assert two.value.suggestions == ["welcome-vip", "welcome"]
    # Case does not hide a match; nothing close, nothing suggested.
    with pytest.raises(PoolNotFound) as upper:
        show_pool(engine, "SUMMER")
    assert upper.value.suggestions == ["summer"]
    with pytest.raises(PoolNotFound) as far:
        show_pool(engine, "autumn-2027")
    assert str(far.value) == "pool 'autumn-2027' does not exist"
    # Every path that refuses an unknown pool suggests the same way.
    with pytest.raises(PoolNotFound, match=r"did you mean 'summer'\?"):
        claim(engine, "sumer", "m1", ["alice"])
    with pytest.raises(PoolNotFound, match=r"did you mean 'welcome'"):
        add_txt(engine, "welcme", "W-1")
    refused = redeem(engine, "W-1", pool="welcme")
    assert refused.reason == "unknown pool 'welcme' (did you mean 'welcome'?)"
    assert refused.not_found


def test_suggestions_come_only_from_the_pools_in_view(engine: Engine) -> None:
    from promomail.pools.history.pages import issuance_page, segment_page

    for name in ("Welcome", "Summer"):
        create_pool(engine, PoolSettings(name=name, description="d"), activate=True)
    with pytest.raises(PoolNotFound) as unlimited:
        segment_page(engine, issued_from=["welcom"])
    assert unlimited.value.suggestions == ["welcome"]
    with pytest.raises(PoolNotFound) as segment_limited:
        segment_page(engine, issued_from=["welcom"], pools={"summer"})
    with pytest.raises(PoolNotFound) as issuances_limited:
        issuance_page(engine, pool="welcom", pools={"summer"})
    for limited in (segment_limited, issuances_limited):
        assert limited.value.suggestions == []
        assert "welcome" not in str(limited.value)
