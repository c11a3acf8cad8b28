"""The command groups of ``promomail``, one module per group or concern.

Each module defines click commands and imports only what they need; the
root group in :mod:`cli` imports a module when one of its commands runs.
"""
