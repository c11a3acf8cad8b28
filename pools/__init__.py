"""The issuance store: pools, codes, claims, mailings, redemption and alerts.

Knows nothing of Jinja2; the template side (:mod:`templating`) builds on it.

Every name below is imported from its module on first use (PEP 562): a
command that only redeems a code then loads the modules redemption needs,
not the whole store. Type checkers see the plain imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from pools.imports import (
        ImportReport,
        Upload,
        import_history,
        rejected_report,
        total_size,
        upload_codes,
        uploads_document,
    )
    from pools.leases import (
        Lease,
        LeaseHeld,
        LeaseHolder,
        LeaseKeeper,
        LeaseLost,
        acquire_lease,
        check_lease,
        lease_holder,
        release_lease,
        renew_lease,
    )
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

#: Where each public name lives.
_HOMES: dict[str, str] = {
    "Handout": "pools.claiming",
    "Reservation": "pools.claiming",
    "claim": "pools.claiming",
    "reclaim_expired": "pools.claiming",
    "reclaim_scope": "pools.claiming",
    "release": "pools.claiming",
    "reserve": "pools.claiming",
    "reserve_many": "pools.claiming",
    "settle": "pools.claiming",
    "FileFormat": "pools.code_files",
    "Whitespace": "pools.code_files",
    "CodeEntry": "pools.code_listing",
    "CodeState": "pools.code_listing",
    "list_codes": "pools.code_listing",
    "PoolCounts": "pools.counts",
    "available_count": "pools.counts",
    "pool_counts": "pools.counts",
    "CustomerHistory": "pools.customers",
    "customer_history": "pools.customers",
    "StoreConfig": "pools.db",
    "open_engine": "pools.db",
    "read_transaction": "pools.db",
    "upgrade": "pools.db",
    "write_transaction": "pools.db",
    "GenerationError": "pools.errors",
    "ImportRejected": "pools.errors",
    "LineProblem": "pools.errors",
    "PoolError": "pools.errors",
    "PoolExhausted": "pools.errors",
    "PoolNotFound": "pools.errors",
    "PromomailError": "pools.errors",
    "ReservationLost": "pools.errors",
    "StoreError": "pools.errors",
    "export_issuances": "pools.export",
    "CodeSpec": "pools.generation",
    "generate_codes": "pools.generation",
    "ImportReport": "pools.imports",
    "Upload": "pools.imports",
    "import_history": "pools.imports",
    "upload_codes": "pools.imports",
    "rejected_report": "pools.imports",
    "total_size": "pools.imports",
    "uploads_document": "pools.imports",
    "Lease": "pools.leases",
    "LeaseHeld": "pools.leases",
    "LeaseHolder": "pools.leases",
    "LeaseKeeper": "pools.leases",
    "LeaseLost": "pools.leases",
    "acquire_lease": "pools.leases",
    "check_lease": "pools.leases",
    "lease_holder": "pools.leases",
    "release_lease": "pools.leases",
    "renew_lease": "pools.leases",
    "MailingNotFound": "pools.mailings",
    "MailingView": "pools.mailings",
    "list_mailings": "pools.mailings",
    "show_mailing": "pools.mailings",
    "LowStockAlert": "pools.notifications",
    "check_low_stock": "pools.notifications",
    "PoolSettings": "pools.pool_admin",
    "PoolView": "pools.pool_admin",
    "activate_pool": "pools.pool_admin",
    "archive_pool": "pools.pool_admin",
    "create_pool": "pools.pool_admin",
    "delete_pool": "pools.pool_admin",
    "edit_pool": "pools.pool_admin",
    "list_pools": "pools.pool_admin",
    "show_pool": "pools.pool_admin",
    "slugify": "pools.pool_admin",
    "ALREADY_REDEEMED": "pools.redemption",
    "UNKNOWN_CODE": "pools.redemption",
    "RedemptionNotFound": "pools.redemption",
    "RedemptionResult": "pools.redemption",
    "RollbackResult": "pools.redemption",
    "redeem": "pools.redemption",
    "unredeem": "pools.redemption",
    "KeptCodes": "pools.returns",
    "ReturnList": "pools.returns",
    "ReturnListError": "pools.returns",
    "ReturnReport": "pools.returns",
    "cancel_mailing": "pools.returns",
    "match_addresses": "pools.returns",
    "read_return_list": "pools.returns",
    "return_codes": "pools.returns",
    "SegmentFormat": "pools.segments",
    "segment": "pools.segments",
    "write_segment": "pools.segments",
    "VoidReport": "pools.voiding",
    "void_batch": "pools.voiding",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'pools' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})


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
    "Lease",
    "LeaseHeld",
    "LeaseHolder",
    "LeaseKeeper",
    "LeaseLost",
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
    "acquire_lease",
    "activate_pool",
    "archive_pool",
    "available_count",
    "cancel_mailing",
    "check_lease",
    "check_low_stock",
    "claim",
    "create_pool",
    "customer_history",
    "delete_pool",
    "edit_pool",
    "export_issuances",
    "generate_codes",
    "import_history",
    "lease_holder",
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
    "rejected_report",
    "release",
    "release_lease",
    "renew_lease",
    "reserve",
    "reserve_many",
    "return_codes",
    "segment",
    "settle",
    "show_mailing",
    "show_pool",
    "slugify",
    "total_size",
    "unredeem",
    "upgrade",
    "upload_codes",
    "uploads_document",
    "void_batch",
    "write_segment",
    "write_transaction",
]
