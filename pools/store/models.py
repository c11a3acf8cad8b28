"""The issuance store's tables.

The invariants live here as constraints, not only in Python: a single-use
code can be the subject of at most one live initial issuance (partial unique
index on ``issuances.code_id``), a mailing gives a customer at most one live
initial code per pool and slot, a single-use code has at most one live
redemption and an order at most one live redemption of a code, a customer at
most one live redemption of a ``--once-per-customer`` code, and a code's
pool/code pair is unique. A checkout hold lives on the code's own row, so a
code can carry one hold at most and every write that takes or ends it is a
conditional update of that row.

"Live" means not undone: an issuance whose message was never delivered is
marked ``returned_at`` (the code went back to its pool) and a redemption whose
order was cancelled is marked ``rolled_back_at``. Both stay in the history,
so the unique indexes are partial and cover live rows only.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Codes without an end to their issue window sort after every real date.
NO_END = datetime(9999, 12, 31)

CODE_MAX_LENGTH = 64
#: A delivery reference's column width (SPEC 8: at most 64 characters).
REF_MAX_LENGTH = 64

# SQLite only auto-increments INTEGER PRIMARY KEY; BigInteger elsewhere.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def where(condition: str) -> dict[str, Any]:
    """The keywords of an index over the rows meeting ``condition`` (a partial
    index), in both stores: SQLAlchemy takes the condition once per dialect."""
    clause = text(condition)
    return {"sqlite_where": clause, "postgresql_where": clause}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class PoolStatus(enum.StrEnum):
    DRAFT = "draft"
    ACTIVE = "active"
    ARCHIVED = "archived"


class CodeStatus(enum.StrEnum):
    """The stored state of a code row.

    A code held by a render's reservation is already ``issued``: the
    reservation writes the row once, in its final state, and the issuance
    recorded at settle names the holder. While its ``reserved_token`` names
    a live :class:`HeldCodes` row the code counts as reserved.
    """

    AVAILABLE = "available"
    ISSUED = "issued"
    VOID = "void"


class IssuanceKind(enum.StrEnum):
    INITIAL = "initial"
    REISSUE = "reissue"


class Pool(Base):
    __tablename__ = "pools"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=PoolStatus.DRAFT)
    multi_use: Mapped[bool] = mapped_column(Boolean, default=False)
    require_issued: Mapped[bool] = mapped_column(Boolean, default=False)
    issued_valid_days: Mapped[int | None] = mapped_column(Integer)
    per_customer: Mapped[int | None] = mapped_column(Integer)
    #: Multi-use pools: each customer may redeem the shared code once.
    once_per_customer: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    low_stock: Mapped[int | None] = mapped_column(Integer)
    notify_url: Mapped[str | None] = mapped_column(Text)
    notify_email: Mapped[str | None] = mapped_column(Text)
    low_stock_notified_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    activated_at: Mapped[datetime | None] = mapped_column(DateTime)
    archived_at: Mapped[datetime | None] = mapped_column(DateTime)


class ImportBatch(Base):
    __tablename__ = "import_batches"
    # The target of the codes' (batch, pool) key: a code's batch is in its pool.
    __table_args__ = (UniqueConstraint("id", "pool_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    pool_id: Mapped[str] = mapped_column(ForeignKey("pools.id", ondelete="CASCADE"), index=True)
    source: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(16))
    accepted: Mapped[int] = mapped_column(Integer, default=0)
    duplicates: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    voided_at: Mapped[datetime | None] = mapped_column(DateTime)


class Code(Base):
    __tablename__ = "codes"
    __table_args__ = (
        # Code first: the same index serves redemption, which looks a code up
        # by its string alone, and uniqueness within a pool.
        UniqueConstraint("code", "pool_id"),
        # Serves the claim query exactly: equality on pool, range on the end
        # of the issue window, then import order, over available codes only.
        Index(
            "ix_codes_claim",
            "pool_id",
            "issuable_until",
            "id",
            **where("status = 'available'"),
        ),
        Index("ix_codes_batch", "batch_id", "status"),
        # One key instead of one to pools and one to batches: it also makes
        # sure a code's batch belongs to its pool, and it halves the per-row
        # foreign-key checks of a bulk load (the batch's own key reaches pools).
        ForeignKeyConstraint(
            ["batch_id", "pool_id"],
            ["import_batches.id", "import_batches.pool_id"],
            ondelete="CASCADE",
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    pool_id: Mapped[str] = mapped_column(String(100))
    code: Mapped[str] = mapped_column(String(CODE_MAX_LENGTH))
    batch_id: Mapped[int] = mapped_column(BigId)
    status: Mapped[str] = mapped_column(String(16), default=CodeStatus.AVAILABLE)
    # Issue window (when the code may be handed out) and availability window
    # (when it may be redeemed). ``issuable_until`` is the earlier of the
    # issue window's end and ``available_till``, NO_END when neither is set,
    # so one indexed column orders codes soonest-expiring first.
    issue_start: Mapped[datetime | None] = mapped_column(DateTime)
    issue_end: Mapped[datetime | None] = mapped_column(DateTime)
    available_from: Mapped[datetime | None] = mapped_column(DateTime)
    available_till: Mapped[datetime | None] = mapped_column(DateTime)
    issuable_until: Mapped[datetime] = mapped_column(DateTime)
    #: The reservation that took the code out of ``available`` (see
    #: :class:`HeldCodes`); it stays after settle, when no live reservation
    #: carries that token any more. Not indexed: a reservation lists its codes.
    reserved_token: Mapped[str | None] = mapped_column(String(64))
    redeemed_at: Mapped[datetime | None] = mapped_column(DateTime)
    redemptions: Mapped[int] = mapped_column(Integer, default=0)
    #: A checkout hold (``promomail hold``): the order holding the code, and
    #: until when. A hold past ``hold_until`` no longer counts, so expiry needs
    #: nothing running; a code's one row carries one hold at most.
    hold_order: Mapped[str | None] = mapped_column(String(200))
    hold_until: Mapped[datetime | None] = mapped_column(DateTime)


class HeldCodes(Base):
    """Codes a render reserved for one chunk and has not settled yet.

    One row per pool and reserve call (a top-up adds a row under the same
    token). The codes themselves were marked ``issued`` with the token when
    reserved, so settling writes no code row a second time: it deletes these
    rows and inserts the issuances of the codes that still carry the token.
    Whoever takes reserved codes away from a render clears their token:
    release, reclaim and a new lease on the scope delete these rows first,
    voiding locks them first (so a settle running at the same moment either
    finishes before or finds the voided codes), a redemption clears the
    token of its one code. ``code_ids`` (a JSON list) lets a reclaim find
    the codes without an index on ``codes.reserved_token``.
    """

    __tablename__ = "held_codes"
    __table_args__ = (
        Index("ix_held_codes_token", "token"),
        Index("ix_held_codes_scope", "scope"),
        Index("ix_held_codes_until", "until"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    token: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(Text)
    pool_id: Mapped[str] = mapped_column(String(100))
    until: Mapped[datetime] = mapped_column(DateTime)
    code_ids: Mapped[str] = mapped_column(Text)


class Mailing(Base):
    __tablename__ = "mailings"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    template: Mapped[str] = mapped_column(Text)
    recipients_file: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    #: When ``mailing cancel`` gave its codes back; cleared by a later run.
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime)


class MailingRun(Base):
    """The latest run of one shard of a mailing (``all`` when not sharded)."""

    __tablename__ = "mailing_runs"

    mailing_id: Mapped[str] = mapped_column(
        ForeignKey("mailings.id", ondelete="CASCADE"), primary_key=True
    )
    shard: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    recipients: Mapped[int] = mapped_column(Integer, default=0)
    rendered: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    new_codes: Mapped[int] = mapped_column(Integer, default=0)
    reused_codes: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)


class ShardLease(Base):
    """Who is rendering one shard of a mailing right now (see :mod:`pools.issuing.leases`).

    No foreign key to ``mailings``: a lease is taken before the mailing row
    is written, so a refused run leaves the store exactly as it was.
    """

    __tablename__ = "shard_leases"

    mailing_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    shard: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    host: Mapped[str] = mapped_column(String(255))
    node: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime)
    renewed_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime)


class Issuance(Base):
    __tablename__ = "issuances"
    __table_args__ = (
        # Invariant 1: a single-use code has at most one initial issuance.
        Index(
            "uq_issuances_exclusive_code",
            "code_id",
            unique=True,
            **where("exclusive AND kind = 'initial' AND returned_at IS NULL"),
        ),
        # Invariant 2: one initial code per mailing, customer, pool and slot
        # (and one reissue record, so a re-run does not record it twice).
        # Returned issuances do not count: a re-run gives those recipients new codes.
        Index(
            "uq_issuances_mailing_customer",
            "mailing_id",
            "pool_id",
            "customer_id",
            "kind",
            "slot",
            unique=True,
            **where("returned_at IS NULL"),
        ),
        # The few returned rows of a mailing, found without a scan.
        Index(
            "ix_issuances_returned",
            "mailing_id",
            **where("returned_at IS NOT NULL"),
        ),
        Index("ix_issuances_customer", "customer_id", "pool_id", "issued_at"),
        Index("ix_issuances_code", "code_id"),
        Index("ix_issuances_pool_time", "pool_id", "issued_at"),
        # A delivery event names its message by reference alone.
        Index("ix_issuances_ref", "ref"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    pool_id: Mapped[str] = mapped_column(ForeignKey("pools.id", ondelete="CASCADE"))
    code_id: Mapped[int] = mapped_column(ForeignKey("codes.id", ondelete="CASCADE"))
    customer_id: Mapped[str] = mapped_column(String(200))
    mailing_id: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    slot: Mapped[int] = mapped_column(Integer, default=0)
    exclusive: Mapped[bool] = mapped_column(Boolean)
    issued_at: Mapped[datetime] = mapped_column(DateTime)
    #: Set when the message was never delivered and the code went back to its pool.
    returned_at: Mapped[datetime | None] = mapped_column(DateTime)
    return_reason: Mapped[str | None] = mapped_column(Text)
    #: The delivery reference of the message that showed the code
    #: (:func:`pools.after_sending.references.message_ref`); None for codes
    #: handed out without a rendered message (``claim``) or before references.
    ref: Mapped[str | None] = mapped_column(String(REF_MAX_LENGTH))


class Redemption(Base):
    __tablename__ = "redemptions"
    __table_args__ = (
        Index("ix_redemptions_code", "code_id"),
        # A mailing's redeemed count, without visiting each of its issuances.
        Index("ix_redemptions_mailing", "mailing_id"),
        # Invariant 8: one live redemption of a single-use code…
        Index(
            "uq_redemptions_single_use",
            "code_id",
            unique=True,
            **where("exclusive AND rolled_back_at IS NULL"),
        ),
        # …and one live redemption of any code per order, so a replay never counts twice.
        # It also serves the replay look-up.
        Index(
            "uq_redemptions_order",
            "code_id",
            "order_id",
            unique=True,
            **where("order_id IS NOT NULL AND rolled_back_at IS NULL"),
        ),
        # …and, in --once-per-customer pools, one live redemption per customer;
        # it also serves the look-up of the customer's earlier redemption.
        Index(
            "uq_redemptions_once_per_customer",
            "code_id",
            "redeemed_by",
            unique=True,
            **where("once_per_customer AND rolled_back_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    pool_id: Mapped[str] = mapped_column(ForeignKey("pools.id", ondelete="CASCADE"))
    code_id: Mapped[int] = mapped_column(ForeignKey("codes.id", ondelete="CASCADE"))
    issued_to: Mapped[str | None] = mapped_column(String(200))
    redeemed_by: Mapped[str | None] = mapped_column(String(200), index=True)
    order_id: Mapped[str | None] = mapped_column(String(200))
    redeemed_at: Mapped[datetime] = mapped_column(DateTime)
    #: The mailing that gave the code to ``issued_to`` (campaign attribution).
    mailing_id: Mapped[str | None] = mapped_column(String(200))
    #: Whether the code is single-use: the pool's mode, copied so an index can use it.
    exclusive: Mapped[bool] = mapped_column(Boolean)
    #: Whether the pool is ``--once-per-customer``, copied for the same reason.
    once_per_customer: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    #: Set when the order was cancelled or refunded and the redemption undone.
    rolled_back_at: Mapped[datetime | None] = mapped_column(DateTime)


class ServiceToken(Base):
    """A bearer token of the HTTP service; only its SHA-256 is stored."""

    __tablename__ = "service_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(16))
    #: The pool ids the token is limited to, as a JSON list; empty: every pool.
    pools: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)


class StoreSecret(Base):
    """A secret the store keeps for itself, made when the schema was (see migration 0006).

    ``delivery_ref_key`` keys the delivery references: whoever can read the
    store can compute them, nobody else can guess one from ids.
    """

    __tablename__ = "store_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Delivery(Base):
    """One rendered message's delivery state, named by its reference."""

    __tablename__ = "deliveries"
    __table_args__ = (Index("ix_deliveries_mailing_status", "mailing_id", "status"),)

    ref: Mapped[str] = mapped_column(String(REF_MAX_LENGTH), primary_key=True)
    mailing_id: Mapped[str] = mapped_column(String(200))
    recipient_id: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    #: The relay's or the service's last answer.
    answer: Mapped[str | None] = mapped_column(Text)
    #: Times the relay was handed the message.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: Whether a relay or service ever had it: set by ``sent`` and by any
    #: event. Such a message is never sent again, whatever its status (a
    #: ``deferred`` event means the service itself is retrying it).
    accepted: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    #: Codes given back because this message was never delivered (0 or more, once).
    codes_returned: Mapped[int] = mapped_column(Integer, default=0)


class DeliveryEvent(Base):
    """A delivery event already applied: the same one again changes nothing.

    Only events that named a known message are kept (see
    :func:`pools.after_sending.delivery_events.apply_event`).
    """

    __tablename__ = "delivery_events"

    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    ref: Mapped[str | None] = mapped_column(String(REF_MAX_LENGTH))
    type: Mapped[str] = mapped_column(String(16))
    #: When the service says it happened (if it says).
    occurred_at: Mapped[datetime | None] = mapped_column(DateTime)
    received_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class WebhookToken(Base):
    """A webhook's one-time token seen recently (Mailgun): a second use is a replay."""

    __tablename__ = "webhook_tokens"

    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    token: Mapped[str] = mapped_column(String(200), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(DateTime, index=True)
