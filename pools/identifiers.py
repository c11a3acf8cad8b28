"""What an id may hold: one rule for every id that reaches a header, a file name or a file.

Recipient, customer and mailing ids end up in mail headers, ``.eml`` file
names, segment files read back as recipients, and terminals. The recipients
reader refuses the ids this module refuses, and the segment writer refuses to
write them, so whatever the store writes out reads back as the same id.
"""

from __future__ import annotations

import re

#: Longest id the store keeps (the customer and mailing id columns).
MAX_ID_LENGTH = 200

#: Never in any value: NUL, and lone surrogates (bytes that were not UTF-8,
#: read with ``surrogateescape``, or ``\\udXXX`` escapes in JSON).
UNSAFE_VALUE = re.compile("[\x00\ud800-\udfff]")
#: Never in an id: control characters (C0, DEL, C1) and the line and paragraph
#: separators, which break mail header lines, file names and terminals.
UNSAFE_ID = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")

_CHARACTER_NAMES = {
    "\x00": "a NUL character",
    "\t": "a tab",
    "\n": "a line feed",
    "\r": "a carriage return",
    "\x0b": "a vertical tab",
    "\x0c": "a form feed",
    "\x85": "a next-line character",
    "\u2028": "a line separator",
    "\u2029": "a paragraph separator",
}


def describe_character(char: str) -> str:
    """How an error message names a character that is not allowed somewhere."""
    name = _CHARACTER_NAMES.get(char, "a control character")
    return f"{name} (U+{ord(char):04X})"


def id_problem(value: str) -> str | None:
    """Why ``value`` cannot be an id (recipient, mailing), or None when it can."""
    if not value.strip():
        return "empty id"
    if value != value.strip():
        return "the id starts or ends with whitespace"
    if len(value) > MAX_ID_LENGTH:
        return f"the id is {len(value)} characters long, more than {MAX_ID_LENGTH}"
    bad = UNSAFE_ID.search(value) or UNSAFE_VALUE.search(value)
    if bad is not None:
        return f"the id holds {describe_unsafe(bad.group())}"
    return None


def value_problem(value: str) -> str | None:
    """Why ``value`` cannot be in a message (NUL, not UTF-8), or None when it can."""
    bad = UNSAFE_VALUE.search(value)
    return None if bad is None else f"holds {describe_unsafe(bad.group())}"


def describe_unsafe(char: str) -> str:
    if "\udc80" <= char <= "\udcff":
        return f"bytes that are not UTF-8 (byte 0x{ord(char) - 0xDC00:02X})"
    if "\ud800" <= char <= "\udfff":
        return f"a lone surrogate (\\u{ord(char):04x}), which is not Unicode text"
    return describe_character(char)
