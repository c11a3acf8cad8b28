"""Pools and who may touch them: pool life cycle and settings, service tokens."""
