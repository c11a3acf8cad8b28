"""Handing codes to customers: claims, per-chunk look-ups, shard leases, mailing records."""
