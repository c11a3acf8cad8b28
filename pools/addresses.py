"""E-mail addresses as promomail reads them: one rule for recipients, senders and relays.

A recipient's e-mail value, ``PROMOMAIL_FROM`` and the address a message is
sent to are decided by the same parser, the standard library's RFC 5322 one,
so what a render accepts is what ``.eml`` files hold and what the sender
hands to the relay.
"""

from __future__ import annotations

import re
import unicodedata
from email.errors import HeaderParseError, MessageDefect
from email.headerregistry import Address, Group, HeaderRegistry
from typing import Protocol, cast

import idna

from promomail.pools.identifiers import UNSAFE_ID, UNSAFE_VALUE, describe_unsafe

#: The plainest addr-spec (dot-atoms of letters, digits and ``._%+-``): the
#: common case, which the standard parser accepts exactly as written (a test
#: checks that) and which is written as it is. Everything else goes to the
#: standard parser, and so do domain labels that claim to be IDNA (``xn--``),
#: which are checked.
PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*"
    r"@(?![Xx][Nn]--)[A-Za-z0-9-]+(?:\.(?![Xx][Nn]--)[A-Za-z0-9-]+)*"
)
_headers = HeaderRegistry()


def one_address(value: object) -> str | None:
    """The recipient's address as it is written: None when empty, else exactly one.

    Raises ValueError with the reason when the value is not exactly one valid
    mailbox (several addresses, a group, a list, something that is no
    address). Decided by the standard library's RFC 5322 parser, so what is
    accepted here is what the ``.eml`` writer can put in ``To``.

    The one place an address is decided, so JSON Lines ``to`` and the
    ``.eml`` ``To`` always agree. An internationalised domain is written in
    its ASCII (IDNA) form, since no header may carry it otherwise (RFC 2047
    encoded words are not allowed in an address); see :func:`ascii_domain`.
    A local part that is not ASCII is refused: delivering it needs SMTPUTF8
    (RFC 6531), and promomail's messages are plain RFC 5322.
    """
    if value is None:
        return None
    text = value.strip() if isinstance(value, str) else str(value)
    if not text:
        return None
    if PLAIN_ADDRESS.fullmatch(text) is not None:
        return text
    return _parsed_address(text)


class ParsedAddresses(Protocol):
    """What the standard library's address header holds, as this module reads it."""

    @property
    def addresses(self) -> tuple[Address, ...]: ...
    @property
    def groups(self) -> tuple[Group, ...]: ...
    @property
    def defects(self) -> tuple[MessageDefect, ...]: ...


def address_header(text: str) -> ParsedAddresses:
    """``text`` parsed as a ``To`` header by the standard library (may raise)."""
    return cast(ParsedAddresses, _headers("To", text))


def _parsed_address(text: str) -> str:
    bad = UNSAFE_ID.search(text) or UNSAFE_VALUE.search(text)
    if bad is not None:
        raise ValueError(f"the address holds {describe_unsafe(bad.group())}")
    try:
        header = address_header(text)
    # Besides its own errors, the standard library's parser fails on some
    # malformed input from inside (AttributeError on '.<a@b.c>', TypeError on 'a .<a@b.c>', IndexError on
    # '.@'): each means the text is no address it can write.
    except (
        HeaderParseError,
        MessageDefect,
        ValueError,
        IndexError,
        AttributeError,
        TypeError,
    ) as exc:
        raise ValueError(f"{text!r} is not an e-mail address") from exc
    groups = [group for group in header.groups if group.display_name is not None]
    if groups:
        raise ValueError(f"{text!r} is a group ({groups[0].display_name!r}), not one address")
    addresses = header.addresses
    if len(addresses) > 1:
        listed = ", ".join(a.addr_spec for a in addresses)
        raise ValueError(
            f"{text!r} holds {len(addresses)} addresses ({listed}); a recipient has exactly one"
        )
    if addresses and not addresses[0].username.isascii():
        raise ValueError(
            f"{text!r}: the part before '@' is not ASCII; such an address needs SMTPUTF8, "
            "which promomail's messages do not use"
        )
    if not addresses or header.defects or not addresses[0].domain or not addresses[0].username:
        reason = f" ({header.defects[0]})" if header.defects else ""
        raise ValueError(f"{text!r} is not an e-mail address{reason}")
    address = addresses[0]
    domain = address.domain
    if domain.startswith("["):
        return text  # an address literal, [192.0.2.1]: no name to convert
    try:
        written = ascii_domain(domain)
    except ValueError as exc:
        raise ValueError(f"{text!r}: the domain {domain!r} {exc}") from None
    if written == domain:
        return text
    return str(Address(address.display_name, address.username, written))


def ascii_domain(domain: str) -> str:
    """``domain`` in the ASCII form a mail header carries, or ValueError saying why not.

    An ASCII domain is kept as written, but each label that claims to be
    IDNA (``xn--``) must be a valid one. Any other domain is converted by
    IDNA 2008 with the UTS #46 mapping (non-transitional, STD3 rules), as
    browsers and mail clients do: case and width are folded and ``ß`` stays
    ``ß`` (Python's own ``idna`` codec is IDNA 2003, which turns it into
    ``ss``, another domain). A character the mapping would silently drop (a
    zero-width space, a soft hyphen) is refused instead: such a domain is a
    typing or copying accident, not a name anyone registered.
    """
    if domain.isascii():
        if "xn--" in domain.lower():
            for label in domain.split("."):
                if label[:4].lower() == "xn--":
                    try:
                        idna.decode(label)
                    except idna.IDNAError as exc:
                        raise ValueError(
                            f"has a label {label!r} that is not valid IDNA ({exc})"
                        ) from None
        return domain
    for char in domain:
        if char.isascii():
            continue
        try:
            dropped = not idna.uts46_remap(char, std3_rules=True, transitional=False)
        except idna.IDNAError:
            dropped = False  # disallowed: idna.encode below says so
        if dropped or unicodedata.category(char) == "Cf":
            name = unicodedata.name(char, "an unnamed character").lower()
            raise ValueError(f"holds U+{ord(char):04X} ({name}), which a domain name cannot hold")
    try:
        encoded = idna.encode(domain, uts46=True, std3_rules=True, transitional=False)
    except (idna.IDNAError, UnicodeError) as exc:
        raise ValueError(f"is not a valid internationalised domain name ({exc})") from None
    return encoded.decode("ascii")


def envelope_address(text: str) -> str:
    """The bare address (``user@host``) of one address, for the SMTP envelope."""
    if PLAIN_ADDRESS.fullmatch(text) is not None:
        return text  # already bare: the common case, without the parser's cost
    return address_header(text).addresses[0].addr_spec
