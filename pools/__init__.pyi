# The public names of promomail.pools, for type checkers: written from EXPORTS in
# the __init__.py of promomail.pools by promomail.pools.lazy_exports.write_stubs(); do not edit.

from promomail.pools.addresses import (
    PLAIN_ADDRESS as PLAIN_ADDRESS,
    ParsedAddresses as ParsedAddresses,
    address_header as address_header,
    one_address as one_address,
)
from promomail.pools.admin.completion import (
    pool_choices as pool_choices,
)
from promomail.pools.admin.lifecycle import (
    PoolSettings as PoolSettings,
    PoolView as PoolView,
    activate_pool as activate_pool,
    archive_pool as archive_pool,
    create_pool as create_pool,
    delete_pool as delete_pool,
    edit_pool as edit_pool,
    list_pools as list_pools,
    load_pool as load_pool,
    not_issuing as not_issuing,
    setting_changes as setting_changes,
    show_pool as show_pool,
)
from promomail.pools.admin.lookup import (
    close_ids as close_ids,
    told_where as told_where,
)
from promomail.pools.admin.tokens import (
    Principal as Principal,
    authenticate as authenticate,
    create_token as create_token,
    list_tokens as list_tokens,
    revoke_token as revoke_token,
)
from promomail.pools.after_sending.deliveries import (
    list_deliveries as list_deliveries,
)
from promomail.pools.after_sending.delivery_events import (
    EventOutcome as EventOutcome,
    apply_delivery_event as apply_delivery_event,
)
from promomail.pools.after_sending.event_batches import (
    Applied as Applied,
    EventApplier as EventApplier,
)
from promomail.pools.after_sending.holds import (
    HoldResult as HoldResult,
    ReleaseResult as ReleaseResult,
    hold_code as hold_code,
    parse_hold_duration as parse_hold_duration,
    release_hold as release_hold,
)
from promomail.pools.after_sending.redemption import (
    RedemptionResult as RedemptionResult,
    UNKNOWN_CODE as UNKNOWN_CODE,
    redeem as redeem,
)
from promomail.pools.after_sending.references import (
    delivery_ref_key as delivery_ref_key,
    message_ref as message_ref,
)
from promomail.pools.after_sending.returns import (
    ReturnReport as ReturnReport,
    cancel_mailing as cancel_mailing,
    match_addresses as match_addresses,
    read_return_list as read_return_list,
    return_codes as return_codes,
)
from promomail.pools.after_sending.rollback import (
    RollbackResult as RollbackResult,
    unredeem as unredeem,
)
from promomail.pools.after_sending.send_runs import (
    send_run as send_run,
)
from promomail.pools.choices import (
    CodeState as CodeState,
    DEFAULT_ALPHABET as DEFAULT_ALPHABET,
    DEFAULT_HOLD as DEFAULT_HOLD,
    DEFAULT_LEASE_SECONDS as DEFAULT_LEASE_SECONDS,
    DEFAULT_LENGTH as DEFAULT_LENGTH,
    DELIVERY_STATUSES as DELIVERY_STATUSES,
    EMAIL_COLUMNS as EMAIL_COLUMNS,
    FileFormat as FileFormat,
    ID_COLUMNS as ID_COLUMNS,
    Scope as Scope,
    SegmentFormat as SegmentFormat,
    Whitespace as Whitespace,
)
from promomail.pools.codes.counts import (
    COUNTS_IDENTITY as COUNTS_IDENTITY,
    PoolCounts as PoolCounts,
    available_count as available_count,
)
from promomail.pools.codes.generation import (
    CodeSpec as CodeSpec,
    GenerationReport as GenerationReport,
    generate_codes as generate_codes,
)
from promomail.pools.codes.imports import (
    ImportRecord as ImportRecord,
    ImportReport as ImportReport,
    Upload as Upload,
    import_history as import_history,
    pool_document as pool_document,
    rejected_report as rejected_report,
    total_size as total_size,
    upload_codes as upload_codes,
    uploads_document as uploads_document,
)
from promomail.pools.codes.listing import (
    CodeEntry as CodeEntry,
    list_codes as list_codes,
)
from promomail.pools.codes.notifications import (
    LowStockAlert as LowStockAlert,
    check_low_stock as check_low_stock,
)
from promomail.pools.codes.voiding import (
    VoidReport as VoidReport,
    void_batch as void_batch,
)
from promomail.pools.digests import (
    Digest as Digest,
    digest as digest,
)
from promomail.pools.display import (
    counted as counted,
    json_for_terminal as json_for_terminal,
    printable as printable,
    redact_url as redact_url,
)
from promomail.pools.documents import (
    document_fields as document_fields,
)
from promomail.pools.errors import (
    DatabaseFailure as DatabaseFailure,
    ExportError as ExportError,
    ImportRejected as ImportRejected,
    InvalidCursor as InvalidCursor,
    InvalidSetting as InvalidSetting,
    LeaseLost as LeaseLost,
    NamesSettings as NamesSettings,
    NotFound as NotFound,
    PoolError as PoolError,
    PoolExhausted as PoolExhausted,
    PoolNotFound as PoolNotFound,
    PromomailError as PromomailError,
    ReplayedRequest as ReplayedRequest,
    ReservationLost as ReservationLost,
    ReturnListError as ReturnListError,
    RollbackAmbiguous as RollbackAmbiguous,
    SegmentError as SegmentError,
    StoreConflict as StoreConflict,
    StoreError as StoreError,
    StoreNotFound as StoreNotFound,
    StoreUnavailable as StoreUnavailable,
    TokenError as TokenError,
    UnreadableUpload as UnreadableUpload,
)
from promomail.pools.history.customers import (
    customer_history as customer_history,
)
from promomail.pools.history.export import (
    export_issuances as export_issuances,
)
from promomail.pools.history.pages import (
    DEFAULT_LIMIT as DEFAULT_LIMIT,
    MAX_LIMIT as MAX_LIMIT,
    code_pools as code_pools,
    customer_page as customer_page,
    issuance_page as issuance_page,
    segment_page as segment_page,
)
from promomail.pools.history.reminders import (
    parse_expiring_within as parse_expiring_within,
)
from promomail.pools.history.segments import (
    PreparedSegment as PreparedSegment,
    SegmentFilters as SegmentFilters,
    prepare_segment as prepare_segment,
    segment as segment,
    write_segment as write_segment,
)
from promomail.pools.identifiers import (
    MAX_ID_LENGTH as MAX_ID_LENGTH,
    UNSAFE_ID as UNSAFE_ID,
    UNSAFE_VALUE as UNSAFE_VALUE,
    describe_character as describe_character,
    describe_unsafe as describe_unsafe,
    id_problem as id_problem,
    value_problem as value_problem,
)
from promomail.pools.issuing.claiming import (
    Reservation as Reservation,
    reclaim_expired as reclaim_expired,
    release as release,
    reserve_many as reserve_many,
    settle as settle,
    shared_code as shared_code,
)
from promomail.pools.issuing.holdings import (
    ChunkHoldings as ChunkHoldings,
    chunk_holdings as chunk_holdings,
    has_returns as has_returns,
    latest_codes as latest_codes,
    untouched_pools as untouched_pools,
)
from promomail.pools.issuing.leases import (
    Lease as Lease,
    LeaseKeeper as LeaseKeeper,
    acquire_lease as acquire_lease,
    check_lease as check_lease,
    release_lease as release_lease,
)
from promomail.pools.issuing.mailings import (
    Failure as Failure,
    MailingView as MailingView,
    RunTotals as RunTotals,
    Skip as Skip,
    finish_run as finish_run,
    issued_customers_in as issued_customers_in,
    list_mailings as list_mailings,
    served_customers_in as served_customers_in,
    show_mailing as show_mailing,
    start_run as start_run,
)
from promomail.pools.local_files import (
    FileTooLarge as FileTooLarge,
    LineTooLong as LineTooLong,
    bounded_lines as bounded_lines,
    open_binary as open_binary,
    open_text as open_text,
    read_text as read_text,
    replaced_whole as replaced_whole,
)
from promomail.pools.sharding import (
    stable_hash as stable_hash,
)
from promomail.pools.store.clock import (
    utcnow as utcnow,
)
from promomail.pools.store.db import (
    StoreConfig as StoreConfig,
    current_revision as current_revision,
    head_revision as head_revision,
    open_engine as open_engine,
    read_transaction as read_transaction,
    snapshot_transaction as snapshot_transaction,
    store_connection as store_connection,
    upgrade as upgrade,
)
from promomail.pools.store.defaults import (
    DEFAULT_URL as DEFAULT_URL,
)
from promomail.pools.store.dialect_sql import (
    PromoCode as PromoCode,
)
from promomail.pools.store.models import (
    PoolStatus as PoolStatus,
)
from promomail.pools.tables import (
    TableError as TableError,
    delimiter_name as delimiter_name,
    describe_columns as describe_columns,
    find_columns as find_columns,
    has_column as has_column,
    sniff_delimiter as sniff_delimiter,
    take_sample as take_sample,
    utf16_problem as utf16_problem,
)

EXPORTS: dict[str, tuple[str, ...]]

__all__ = [
    "Applied",
    "COUNTS_IDENTITY",
    "ChunkHoldings",
    "CodeEntry",
    "CodeSpec",
    "CodeState",
    "DEFAULT_ALPHABET",
    "DEFAULT_HOLD",
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_LENGTH",
    "DEFAULT_LIMIT",
    "DEFAULT_URL",
    "DELIVERY_STATUSES",
    "DatabaseFailure",
    "Digest",
    "EMAIL_COLUMNS",
    "EventApplier",
    "EventOutcome",
    "ExportError",
    "Failure",
    "FileFormat",
    "FileTooLarge",
    "GenerationReport",
    "HoldResult",
    "ID_COLUMNS",
    "ImportRecord",
    "ImportRejected",
    "ImportReport",
    "InvalidCursor",
    "InvalidSetting",
    "Lease",
    "LeaseKeeper",
    "LeaseLost",
    "LineTooLong",
    "LowStockAlert",
    "MAX_ID_LENGTH",
    "MAX_LIMIT",
    "MailingView",
    "NamesSettings",
    "NotFound",
    "PLAIN_ADDRESS",
    "ParsedAddresses",
    "PoolCounts",
    "PoolError",
    "PoolExhausted",
    "PoolNotFound",
    "PoolSettings",
    "PoolStatus",
    "PoolView",
    "PreparedSegment",
    "Principal",
    "PromoCode",
    "PromomailError",
    "RedemptionResult",
    "ReleaseResult",
    "ReplayedRequest",
    "Reservation",
    "ReservationLost",
    "ReturnListError",
    "ReturnReport",
    "RollbackAmbiguous",
    "RollbackResult",
    "RunTotals",
    "Scope",
    "SegmentError",
    "SegmentFilters",
    "SegmentFormat",
    "Skip",
    "StoreConfig",
    "StoreConflict",
    "StoreError",
    "StoreNotFound",
    "StoreUnavailable",
    "TableError",
    "TokenError",
    "UNKNOWN_CODE",
    "UNSAFE_ID",
    "UNSAFE_VALUE",
    "UnreadableUpload",
    "Upload",
    "VoidReport",
    "Whitespace",
    "acquire_lease",
    "activate_pool",
    "address_header",
    "apply_delivery_event",
    "archive_pool",
    "authenticate",
    "available_count",
    "bounded_lines",
    "cancel_mailing",
    "check_lease",
    "check_low_stock",
    "chunk_holdings",
    "close_ids",
    "code_pools",
    "counted",
    "create_pool",
    "create_token",
    "current_revision",
    "customer_history",
    "customer_page",
    "delete_pool",
    "delimiter_name",
    "delivery_ref_key",
    "describe_character",
    "describe_columns",
    "describe_unsafe",
    "digest",
    "document_fields",
    "edit_pool",
    "export_issuances",
    "find_columns",
    "finish_run",
    "generate_codes",
    "has_column",
    "has_returns",
    "head_revision",
    "hold_code",
    "id_problem",
    "import_history",
    "issuance_page",
    "issued_customers_in",
    "json_for_terminal",
    "latest_codes",
    "list_codes",
    "list_deliveries",
    "list_mailings",
    "list_pools",
    "list_tokens",
    "load_pool",
    "match_addresses",
    "message_ref",
    "not_issuing",
    "one_address",
    "open_binary",
    "open_engine",
    "open_text",
    "parse_expiring_within",
    "parse_hold_duration",
    "pool_choices",
    "pool_document",
    "prepare_segment",
    "printable",
    "read_return_list",
    "read_text",
    "read_transaction",
    "reclaim_expired",
    "redact_url",
    "redeem",
    "rejected_report",
    "release",
    "release_hold",
    "release_lease",
    "replaced_whole",
    "reserve_many",
    "return_codes",
    "revoke_token",
    "segment",
    "segment_page",
    "send_run",
    "served_customers_in",
    "setting_changes",
    "settle",
    "shared_code",
    "show_mailing",
    "show_pool",
    "snapshot_transaction",
    "sniff_delimiter",
    "stable_hash",
    "start_run",
    "store_connection",
    "take_sample",
    "told_where",
    "total_size",
    "unredeem",
    "untouched_pools",
    "upgrade",
    "upload_codes",
    "uploads_document",
    "utcnow",
    "utf16_problem",
    "value_problem",
    "void_batch",
    "write_segment",
]
