"""The issuance store: pools, codes, claims, mailings, redemption and alerts.

Knows nothing of Jinja2; the template side (:mod:`templating`) builds on it.
"""

from pools.claiming import (
    Handout,
    Reservation,
    claim,
    reclaim_expired,
    reclaim_scope,
    release,
    reserve,
    reserve_many,
    settle,
)
from pools.code_files import FileFormat, Whitespace
from pools.code_listing import CodeEntry, CodeState, list_codes
from pools.counts import PoolCounts, available_count, pool_counts
from pools.customers import CustomerHistory, customer_history
from pools.db import StoreConfig, open_engine, read_transaction, upgrade, write_transaction
from pools.errors import (
    GenerationError,
    ImportRejected,
    LineProblem,
    PoolError,
    PoolExhausted,
    PoolNotFound,
    PromomailError,
    ReservationLost,
    StoreError,
)
from pools.export import export_issuances
from pools.generation import CodeSpec, generate_codes
from pools.imports import ImportReport, Upload, import_history, upload_codes
from pools.mailings import MailingNotFound, MailingView, list_mailings, show_mailing
from pools.notifications import LowStockAlert, check_low_stock
from pools.pool_admin import (
    PoolSettings,
    PoolView,
    activate_pool,
    archive_pool,
    create_pool,
    delete_pool,
    edit_pool,
    list_pools,
    show_pool,
    slugify,
)
from pools.redemption import (
    ALREADY_REDEEMED,
    UNKNOWN_CODE,
    RedemptionNotFound,
    RedemptionResult,
    RollbackResult,
    redeem,
    unredeem,
)
from pools.returns import (
    KeptCodes,
    ReturnList,
    ReturnListError,
    ReturnReport,
    cancel_mailing,
    match_addresses,
    read_return_list,
    return_codes,
)
from pools.segments import SegmentFormat, segment, write_segment
from pools.voiding import VoidReport, void_batch

__all__ = [
    "ALREADY_REDEEMED",
    "UNKNOWN_CODE",
    "CodeEntry",
    "CodeSpec",
    "CodeState",
    "CustomerHistory",
    "FileFormat",
    "GenerationError",
    "Handout",
    "ImportRejected",
    "ImportReport",
    "KeptCodes",
    "LineProblem",
    "LowStockAlert",
    "MailingNotFound",
    "MailingView",
    "PoolCounts",
    "PoolError",
    "PoolExhausted",
    "PoolNotFound",
    "PoolSettings",
    "PoolView",
    "PromomailError",
    "RedemptionNotFound",
    "RedemptionResult",
    "Reservation",
    "ReservationLost",
    "ReturnList",
    "ReturnListError",
    "ReturnReport",
    "RollbackResult",
    "SegmentFormat",
    "StoreConfig",
    "StoreError",
    "Upload",
    "VoidReport",
    "Whitespace",
    "activate_pool",
    "archive_pool",
    "available_count",
    "cancel_mailing",
    "check_low_stock",
    "claim",
    "create_pool",
    "customer_history",
    "delete_pool",
    "edit_pool",
    "export_issuances",
    "generate_codes",
    "import_history",
    "list_codes",
    "list_mailings",
    "list_pools",
    "match_addresses",
    "open_engine",
    "pool_counts",
    "read_return_list",
    "read_transaction",
    "reclaim_expired",
    "reclaim_scope",
    "redeem",
    "release",
    "reserve",
    "reserve_many",
    "return_codes",
    "segment",
    "settle",
    "show_mailing",
    "show_pool",
    "slugify",
    "unredeem",
    "upgrade",
    "upload_codes",
    "void_batch",
    "write_segment",
    "write_transaction",
]
