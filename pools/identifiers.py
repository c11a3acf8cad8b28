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

# The forms below are written as JSON Schema patterns (no flags, ``^…$``) so
# that the API description states the very rule the library applies.

#: A pool id: lower-case letters, digits, '.', '_' and '-', at most 100.
MAX_POOL_ID_LENGTH = 100
POOL_ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,99}$"
POOL_ID = re.compile(POOL_ID_PATTERN)
#: What ``str.strip()`` removes, spelled out: ``\s`` means other things in
#: Python, JavaScript and Rust regular expressions.
_SPACE = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
#: A pool name: something besides spaces, never NUL.
MAX_POOL_NAME_LENGTH = 200
POOL_NAME_PATTERN = rf"^[^\x00]*[^\x00{_SPACE}][^\x00]*$"
#: A name a pool id can be made of (``Spring Sale 30%`` → ``spring-sale-30``)
#: holds an ASCII letter or digit somewhere (a pattern searched, not anchored).
SLUGGABLE_NAME_PATTERN = r"[A-Za-z0-9]"
SLUGGABLE_NAME = re.compile(SLUGGABLE_NAME_PATTERN)
#: A port, 0 to 65535.
_PORT = r"([0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_BYTE = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"({_BYTE}\.){{3}}{_BYTE}"
_H = r"[0-9A-Fa-f]{1,4}"
#: An IPv6 address as URLs write it (RFC 4291 forms, no zone).
_IPV6 = "|".join(
    (
        rf"({_H}:){{7}}{_H}",
        rf"({_H}:){{1,7}}:",
        rf"({_H}:){{1,6}}:{_H}",
        rf"({_H}:){{1,5}}(:{_H}){{1,2}}",
        rf"({_H}:){{1,4}}(:{_H}){{1,3}}",
        rf"({_H}:){{1,3}}(:{_H}){{1,4}}",
        rf"({_H}:){{1,2}}(:{_H}){{1,5}}",
        rf"{_H}:(:{_H}){{1,6}}",
        rf":((:{_H}){{1,7}}|:)",
        rf"::([Ff]{{4}}(:0{{1,4}})?:)?{_IPV4}",
        rf"({_H}:){{1,4}}:{_IPV4}",
    )
)
#: A pool's webhook: an http(s) URL (case-insensitive scheme), a host name or
#: IP address (IPv6 in brackets), a port if any, then a path, query or
#: fragment without spaces.
NOTIFY_URL_PATTERN = (
    rf"^[Hh][Tt][Tt][Pp][Ss]?://([A-Za-z0-9.-]+|\[({_IPV6})\])(:{_PORT})?"
    rf"([/?#][^\x00{_SPACE}]*)?$"
)
NOTIFY_URL = re.compile(NOTIFY_URL_PATTERN)
#: A pool's notice address: one address, no spaces or commas.
NOTIFY_EMAIL_PATTERN = rf"^[^@,\x00{_SPACE}]+@[^@,\x00{_SPACE}]+\.[^@,\x00{_SPACE}]+$"
NOTIFY_EMAIL = re.compile(NOTIFY_EMAIL_PATTERN)
#: ``segment --expiring-within``: whole hours, days or weeks (``36h``, ``7d``, ``2w``).
EXPIRY_WINDOW_PATTERN = r"^([0-9]{1,5})([hdw])$"
EXPIRY_WINDOW = re.compile(EXPIRY_WINDOW_PATTERN)
#: A page's ``next`` cursor: unpadded base64url, at most this long (longer than
#: any cursor a list gives out: a customer id is at most 200 characters).
MAX_CURSOR_LENGTH = 2000
CURSOR_PATTERN = r"^[A-Za-z0-9_-]+$"

#: Why a value does not match one of the patterns above, in words.
PATTERN_WORDS = {
    POOL_ID_PATTERN: "is not valid: use lower-case letters, digits, '.', '_' and '-' "
    "(a letter or digit first, at most 100)",
    NOTIFY_URL_PATTERN: "is not an http(s) URL",
    NOTIFY_EMAIL_PATTERN: "is not an e-mail address",
    EXPIRY_WINDOW_PATTERN: "is not an expiry window: a whole number of hours, days or weeks, "
    "e.g. 36h, 7d, 2w",
    CURSOR_PATTERN: "is not a cursor a list gives out",
}

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


def is_blank(text: str) -> bool:
    """Whether ``text`` is empty or only spaces: what :data:`POOL_NAME_PATTERN` refuses."""
    return not text.strip()


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
