"""E-mail addresses as promomail reads them: one rule for recipients, senders and relays.

A recipient's e-mail value, ``PROMOMAIL_FROM`` and the address a message is
sent to are decided by the same parser, the standard library's RFC 5322 one,
so what a render accepts is what ``.eml`` files hold and what the sender
hands to the relay.
"""

from __future__ import annotations

import re
from email.errors import HeaderParseError, MessageDefect
from email.headerregistry import Address, Group, HeaderRegistry
from typing import Protocol, cast

from pools.identifiers import UNSAFE_ID, UNSAFE_VALUE, describe_unsafe

#: The plainest addr-spec (dot-atoms of letters, digits and ``._%+-``): the
#: common case, which the standard parser accepts exactly as written (a test
#: checks that). Everything else goes to the standard parser.
PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
)
_headers = HeaderRegistry()


def one_address(value: object) -> str | None:
    """The recipient's address from its e-mail value: None when empty, else exactly one.

    Raises ValueError with the reason when the value is not exactly one valid
    mailbox (several addresses, a group, a list, something that is no
    address). Decided by the standard library's RFC 5322 parser, so what is
    accepted here is what the ``.eml`` writer can put in ``To``.
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
    if not addresses or header.defects or not addresses[0].domain or not addresses[0].username:
        reason = f" ({header.defects[0]})" if header.defects else ""
        raise ValueError(f"{text!r} is not an e-mail address{reason}")
    return text


def envelope_address(text: str) -> str:
    """The bare address (``user@host``) of one address, for the SMTP envelope."""
    if PLAIN_ADDRESS.fullmatch(text) is not None:
        return text  # already bare: the common case, without the parser's cost
    return address_header(text).addresses[0].addr_spec
