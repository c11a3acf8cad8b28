"""Pool life cycle: create, activate, edit, archive, delete, list, show."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, exists, insert, or_, select, update

from promomail.pools.admin.lookup import unknown_pool
from promomail.pools.codes.counts import PoolCounts, pool_counts
from promomail.pools.codes.webhooks import TargetRefused, check_webhook_url
from promomail.pools.errors import InvalidPoolSetting, PoolError, SettingLocked
from promomail.pools.identifiers import NOTIFY_EMAIL, NOTIFY_URL, POOL_ID, SLUGGABLE_NAME, is_blank
from promomail.pools.store.clock import utcnow
from promomail.pools.store.db import read_transaction, write_transaction
from promomail.pools.store.models import Code, CodeStatus, ImportBatch, Issuance, Pool, PoolStatus

#: The most codes a per-customer pool hands one customer.
MAX_PER_CUSTOMER = 100


def slugify(name: str) -> str:
    """``Spring Sale 30%`` → ``spring-sale-30``: ASCII, lower case, dashes."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:100]


class NothingToChange(InvalidPoolSetting):
    def __init__(self) -> None:
        super().__init__("nothing to change: give at least one setting")


#: Settings given as text, where an empty value means "no value" (it clears the setting).
TEXT_SETTINGS = ("description", "notify_url", "notify_email")


def cleared_text(value: str | None) -> str | None:
    """An empty text value clears the setting."""
    return value if value else None


@dataclass(frozen=True)
class PoolSettings:
    """Everything a user sets on a pool; validated on construction."""

    name: str
    description: str | None = None
    multi_use: bool = False
    #: Multi-use pools only: each customer may redeem the shared code once.
    once_per_customer: bool = False
    require_issued: bool = False
    issued_valid_days: int | None = None
    per_customer: int | None = None
    low_stock: int | None = None
    notify_url: str | None = None
    notify_email: str | None = None

    def __post_init__(self) -> None:
        if is_blank(self.name):
            raise InvalidPoolSetting("a pool needs a non-empty name")
        if self.multi_use and self.require_issued:
            raise InvalidPoolSetting("exclude each other", "multi_use", "require_issued")
        if self.multi_use and self.per_customer is not None:
            raise InvalidPoolSetting("exclude each other", "multi_use", "per_customer")
        if self.once_per_customer and not self.multi_use:
            raise InvalidPoolSetting(
                "applies only to {multi_use} pools: a single-use code is redeemed once anyway",
                "once_per_customer",
                "multi_use",
            )
        if self.issued_valid_days is not None:
            if self.issued_valid_days < 1:
                raise InvalidPoolSetting("must be at least 1", "issued_valid_days")
            if not self.require_issued:
                raise InvalidPoolSetting(
                    "{issued_valid_days} applies only to {require_issued} pools",
                    "issued_valid_days",
                    "require_issued",
                )
        if self.per_customer is not None and not 1 <= self.per_customer <= MAX_PER_CUSTOMER:
            raise InvalidPoolSetting(f"must be between 1 and {MAX_PER_CUSTOMER}", "per_customer")
        if self.low_stock is not None and self.low_stock < 0:
            raise InvalidPoolSetting("must be 0 or more", "low_stock")
        if self.notify_url is not None and not NOTIFY_URL.fullmatch(self.notify_url):
            raise InvalidPoolSetting(f"{self.notify_url!r} is not an http(s) URL", "notify_url")
        if self.notify_email is not None and not NOTIFY_EMAIL.fullmatch(self.notify_email):
            raise InvalidPoolSetting(
                f"{self.notify_email!r} is not an e-mail address", "notify_email"
            )

    @classmethod
    def from_options(cls, name: str, **options: Any) -> PoolSettings:
        """Settings as a front end received them: unset options are None, empty texts clear."""
        given = {key: value for key, value in options.items() if value is not None}
        for key in TEXT_SETTINGS:
            if key in given:
                given[key] = cleared_text(given[key])
        return cls(name=name, **given)

    def shown(self) -> list[tuple[str, Any]]:
        """Every setting but the name, in declaration order: nothing a pool was
        given is left out of what ``pool show`` prints."""
        return [(f.name, getattr(self, f.name)) for f in fields(self) if f.name != "name"]

    @property
    def mode(self) -> str:
        if self.multi_use:
            return "multi-use, once per customer" if self.once_per_customer else "multi-use"
        if self.per_customer is not None:
            return f"per-customer {self.per_customer}"
        return "single-use, require-issued" if self.require_issued else "single-use"


_SETTING_NAMES = tuple(f.name for f in fields(PoolSettings))


def setting_changes(*, cleared: Iterable[str] = (), **options: Any) -> dict[str, Any]:
    """The changes an edit asks for: unset options (None) are left out, empty texts clear.

    ``cleared`` names text settings to remove (a front end that refuses empty
    values asks for that by name). Refused with :class:`NothingToChange` when
    nothing is asked for, and with :class:`InvalidPoolSetting` when one setting is
    both set and cleared.
    """
    changes = {key: value for key, value in options.items() if value is not None}
    for key in TEXT_SETTINGS:
        if key in changes:
            changes[key] = cleared_text(changes[key])
    for key in cleared:
        if key not in TEXT_SETTINGS:
            raise InvalidPoolSetting(f"{key} cannot be cleared (only {', '.join(TEXT_SETTINGS)})")
        if key in changes:
            raise InvalidPoolSetting(f"{key} is both set and cleared: give one of the two")
        changes[key] = None
    if not changes:
        raise NothingToChange()
    return changes


_MODE_SETTINGS = ("multi_use", "once_per_customer", "require_issued", "per_customer")


@dataclass(frozen=True)
class PoolView:
    id: str
    status: str
    settings: PoolSettings
    created_at: datetime
    counts: PoolCounts = field(default_factory=PoolCounts)

    @property
    def name(self) -> str:
        return self.settings.name

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "mode": self.settings.mode,
            **asdict(self.settings),
            "created_at": self.created_at.isoformat(),
            **self.counts.as_dict(),
        }


def _view(row: Any, counts: PoolCounts | None = None) -> PoolView:
    settings = PoolSettings(**{name: getattr(row, name) for name in _SETTING_NAMES})
    return PoolView(row.id, row.status, settings, row.created_at, counts or PoolCounts())


def load_pool(
    conn: Connection, pool_ref: str, *, allow_name: bool = False, with_counts: bool = False
) -> PoolView:
    """The pool with this id (or, if allowed, this unambiguous name).

    Counts scan the pool's codes, so they are left at zero unless asked for:
    claiming and reserving load the pool on every chunk.
    """
    row = conn.execute(select(Pool).where(Pool.id == pool_ref)).first()
    if row is None and allow_name:
        named = conn.execute(select(Pool).where(Pool.name == pool_ref)).all()
        if len(named) > 1:
            ids = ", ".join(sorted(r.id for r in named))
            raise PoolError(f"pool name {pool_ref!r} is ambiguous ({ids}): use the pool id")
        row = named[0] if named else None
    if row is None:
        raise unknown_pool(conn, pool_ref)
    counts = pool_counts(conn, [row.id]).get(row.id) if with_counts else None
    return _view(row, counts)


def require_active(pool: PoolView) -> None:
    _require_active(pool.id, pool.status)


def not_issuing(pool_id: str, status: str) -> str:
    """Why a pool that is not active issues no codes, and what to do about it."""
    reason = f"pool {pool_id!r} is {status}, not active: it issues no codes"
    if status == PoolStatus.DRAFT:
        return f"{reason} until activated (pool activate {pool_id})"
    return reason


def _require_active(pool_id: str, status: str) -> None:
    if status != PoolStatus.ACTIVE:
        raise PoolError(not_issuing(pool_id, status))


def issuing_mode(conn: Connection, pool_id: str) -> bool:
    """Whether an active pool is multi-use; refuses a missing or inactive pool.

    What reserving needs to know of a pool its claim query took no code
    from, read without building the pool's whole view.
    """
    row = conn.execute(select(Pool.status, Pool.multi_use).where(Pool.id == pool_id)).first()
    if row is None:
        raise unknown_pool(conn, pool_id)
    _require_active(pool_id, row.status)
    return bool(row.multi_use)


def _check_notify_url(url: str | None) -> None:
    """A webhook must reach a public address (unless the operator allows others)."""
    if url is None or not NOTIFY_URL.fullmatch(url):
        return  # no URL, or one the settings' own check refuses with its reason
    try:
        check_webhook_url(url)
    except TargetRefused as exc:
        raise InvalidPoolSetting(f"{url!r} cannot be used: {exc}", "notify_url") from exc


def create_pool(
    engine: Engine, settings: PoolSettings, *, pool_id: str | None = None, activate: bool = False
) -> PoolView:
    if pool_id is None and not SLUGGABLE_NAME.search(settings.name):
        raise InvalidPoolSetting(
            f"pool name {settings.name!r} has no letter or digit a to z, 0 to 9 "
            "to make the pool's id of: give the id"
        )
    new_id = pool_id if pool_id is not None else slugify(settings.name)
    if not POOL_ID.fullmatch(new_id):
        raise InvalidPoolSetting(
            f"pool id {new_id!r} is not valid: use lower-case letters, digits, '.', '_' and '-'"
        )
    if activate and not settings.description:
        raise InvalidPoolSetting(f"pool {new_id!r} cannot be activated without a description")
    _check_notify_url(settings.notify_url)
    now = utcnow()
    with write_transaction(engine) as conn:
        if conn.execute(select(exists().where(Pool.id == new_id))).scalar():
            raise PoolError(f"pool {new_id!r} already exists")
        conn.execute(
            insert(Pool).values(
                id=new_id,
                status=PoolStatus.ACTIVE if activate else PoolStatus.DRAFT,
                created_at=now,
                activated_at=now if activate else None,
                **asdict(settings),
            )
        )
        return load_pool(conn, new_id, with_counts=True)


def activate_pool(engine: Engine, pool_id: str) -> PoolView:
    with write_transaction(engine) as conn:
        pool = load_pool(conn, pool_id)
        if pool.status == PoolStatus.ARCHIVED:
            raise PoolError(f"pool {pool_id!r} is archived and cannot be activated again")
        if pool.status == PoolStatus.ACTIVE:
            return pool
        if not pool.settings.description:
            raise PoolError(f"pool {pool_id!r} has no description: set one before activating")
        conn.execute(
            update(Pool)
            .where(Pool.id == pool_id)
            .values(status=PoolStatus.ACTIVE, activated_at=utcnow())
        )
        return load_pool(conn, pool_id, with_counts=True)


def edit_pool(engine: Engine, pool_id: str, **changes: Any) -> PoolView:
    """Change settings; mode settings only while the pool is a draft."""
    unknown = set(changes) - set(_SETTING_NAMES)
    if unknown:
        raise InvalidPoolSetting(f"unknown pool settings: {', '.join(sorted(unknown))}")
    # Resolved before the write lock is taken: a lookup may take a while.
    _check_notify_url(changes.get("notify_url"))
    with write_transaction(engine) as conn:
        pool = load_pool(conn, pool_id)
        if pool.status == PoolStatus.ARCHIVED:
            raise PoolError(f"pool {pool_id!r} is archived and cannot be edited")
        changed_modes = [
            name
            for name in _MODE_SETTINGS
            if name in changes and changes[name] != getattr(pool.settings, name)
        ]
        if changed_modes and pool.status != PoolStatus.DRAFT:
            raise SettingLocked(
                f"can no longer change: pool {pool_id!r} is {pool.status}", *changed_modes
            )
        if (
            pool.status == PoolStatus.ACTIVE
            and "description" in changes
            and not changes["description"]
        ):
            raise PoolError(f"pool {pool_id!r} is active and must keep a description")
        PoolSettings(**{**asdict(pool.settings), **changes})  # validates the result
        conn.execute(update(Pool).where(Pool.id == pool_id).values(**changes))
        return load_pool(conn, pool_id, with_counts=True)


def archive_pool(engine: Engine, pool_id: str) -> PoolView:
    with write_transaction(engine) as conn:
        load_pool(conn, pool_id)
        conn.execute(
            update(Pool)
            .where(Pool.id == pool_id)
            .values(status=PoolStatus.ARCHIVED, archived_at=utcnow())
        )
        return load_pool(conn, pool_id, with_counts=True)


def delete_pool(engine: Engine, pool_id: str) -> None:
    with write_transaction(engine) as conn:
        load_pool(conn, pool_id)
        ever_issued = conn.execute(
            select(
                or_(
                    exists().where(Issuance.pool_id == pool_id),
                    exists().where(
                        Code.pool_id == pool_id,
                        # Reserved codes are stored as issued too.
                        Code.status == CodeStatus.ISSUED,
                    ),
                )
            )
        ).scalar()
        if ever_issued:
            raise PoolError(
                f"pool {pool_id!r} has issued codes and cannot be deleted: archive it instead"
            )
        conn.execute(delete(Code).where(Code.pool_id == pool_id))
        conn.execute(delete(ImportBatch).where(ImportBatch.pool_id == pool_id))
        conn.execute(delete(Pool).where(Pool.id == pool_id))


def list_pools(engine: Engine) -> list[PoolView]:
    with read_transaction(engine) as conn:
        counts = pool_counts(conn)
        rows = conn.execute(select(Pool).order_by(Pool.created_at, Pool.id)).all()
        return [_view(row, counts.get(row.id)) for row in rows]


def show_pool(engine: Engine, pool_id: str) -> PoolView:
    with read_transaction(engine) as conn:
        return load_pool(conn, pool_id, with_counts=True)
