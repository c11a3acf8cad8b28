"""Choices and defaults of a render that the command line declares as options.

Kept apart from the modules that use them so that declaring ``render``'s
options, and completing one in a shell, imports neither Jinja2 nor the store.
Plain constants and enums only.
"""

from __future__ import annotations

from enum import StrEnum


class OutputFormat(StrEnum):
    JSONL = "jsonl"
    EML = "eml"


class OnExhausted(StrEnum):
    STOP = "stop"
    SKIP = "skip"
    BLANK = "blank"


MAX_WORKERS = 64
#: Recipients rendered per store round trip unless told otherwise.
CHUNK_SIZE = 2000
