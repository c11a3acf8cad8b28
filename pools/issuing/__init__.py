"""Handing codes to customers: claims, what a chunk already holds, shard leases, mailing records."""
