"""A rendered message as an e-mail: one builder for the ``.eml`` writer and ``send``.

The render's ``.eml`` files and the messages ``send`` builds from its JSON
Lines must be the same e-mail, so both are made here; the render's writer
(``templating``) calls :func:`build_email`, and ``delivery`` never reads
``templating``.

Every message carries its delivery reference in ``X-Promomail-Ref`` and in
the headers the common e-mail services echo back in their events. Those are
stored raw and never folded (:data:`EML_POLICY` does not refold raw
headers): a folded ``X-SES-MESSAGE-TAGS`` would be written as RFC 2047
encoded words, which SES does not read as a tag.
"""

from __future__ import annotations

import os
import random
import re
import sys
from collections.abc import Mapping
from email.contentmanager import _encode_text  # type: ignore[attr-defined]
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, make_msgid

from promomail.pools.addresses import one_address

#: RFC 5322 on disk: CRLF line ends, and bodies 7-bit clean (quoted-printable or
#: base64 for non-ASCII text) so a file is valid without 8BITMIME. Headers set
#: raw (the reference headers) are written as they are.
EML_POLICY = SMTP.clone(cte_type="7bit", refold_source="none")

SENDER_ENV = "PROMOMAIL_FROM"
DEFAULT_SENDER = "promomail <noreply@localhost>"

MAILING_HEADER = "X-Promomail-Mailing"
RECIPIENT_HEADER = "X-Promomail-Recipient"
REF_HEADER = "X-Promomail-Ref"
MESSAGE_ID_DOMAIN = "promomail.local"

#: What a delivery reference is (SPEC 8): safe in any header, JSON string or URL.
REF_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def ref_headers(ref: str) -> list[tuple[str, str]]:
    """The headers that carry ``ref``: promomail's own, then the ones each service echoes.

    SES (message tags), SendGrid (unique args), Mailgun (user variables) and
    Postmark (metadata) send these values back in their events.
    """
    if REF_PATTERN.fullmatch(ref) is None:
        raise ValueError(f"{ref!r} is not a delivery reference (1 to 64 of A-Z a-z 0-9 _ -)")
    return [
        (REF_HEADER, ref),
        ("X-SES-MESSAGE-TAGS", f"promomail_ref={ref}"),
        ("X-SMTPAPI", f'{{"unique_args": {{"promomail_ref": "{ref}"}}}}'),
        ("X-Mailgun-Variables", f'{{"promomail_ref": "{ref}"}}'),
        ("X-PM-Metadata-promomail_ref", ref),
    ]


def sender_address() -> str:
    """The From of every message (``PROMOMAIL_FROM``); ValueError naming it when unusable."""
    sender = os.environ.get(SENDER_ENV, DEFAULT_SENDER)
    try:
        address = one_address(sender)
    except ValueError as exc:
        raise ValueError(f"{SENDER_ENV}: {exc}") from exc
    if address is None:
        raise ValueError(f"{SENDER_ENV} is empty: set it to one address or leave it unset")
    return address


def build_email(
    *,
    sender: str,
    mailing: str,
    recipient: str,
    to: str | None,
    parts: Mapping[str, str],
    ref: str | None = None,
    date: str | None = None,
    message_id: str | None = None,
) -> EmailMessage:
    """The e-mail of one recipient's rendered ``parts`` (subject, text or body, html)."""
    email = EmailMessage(policy=EML_POLICY)
    email["From"] = sender
    if to:
        email["To"] = to
    email["Subject"] = parts.get("subject", "")
    email["Date"] = date or formatdate(localtime=False, usegmt=True)
    email["Message-ID"] = message_id or make_msgid(domain=MESSAGE_ID_DOMAIN)
    email[MAILING_HEADER] = mailing
    email[RECIPIENT_HEADER] = recipient
    if ref is not None:
        for name, value in ref_headers(ref):
            email.set_raw(name, value)
    text = parts.get("text", parts.get("body"))
    html = parts.get("html")
    if text is not None:
        email.set_content(text)
        if html is not None:
            email.add_alternative(html, subtype="html")
    elif html is not None:
        email.set_content(html, subtype="html")
    else:
        email.set_content("")
    return email


# -- the same e-mail as bytes, fast ---------------------------------------------------
#
# The standard library builds a message in about 2 ms (it parses every header
# it is given, and makes a header class per header), which would cap a send
# at a few hundred messages a second of one core. build_bytes writes the
# bytes :func:`build_email` would generate, with the standard library's own
# body encoder, and its own folding for every header that is not one short
# line of plain ASCII (a property test holds the two to the same bytes).

#: A header value written as it is: plain ASCII words, single spaces, no
#: encoded-word look-alike (the folder would decode it).
_PLAIN_VALUE = re.compile(r"[\x21-\x7e]+(?: [\x21-\x7e]+)*")
_BOUNDARY_WIDTH = len(repr(sys.maxsize - 1))
_LINE = EML_POLICY.max_line_length or 78
#: A MIME delimiter's leading dashes (spelled so, as a bare "--" reads as a flag
#: to the check that library messages name no command-line flags).
_DASHES = "-" * 2


def _header(name: str, value: str) -> str:
    if (
        len(name) + len(value) + 2 <= _LINE
        and _PLAIN_VALUE.fullmatch(value) is not None
        and "=?" not in value
    ):
        return f"{name}: {value}\r\n"
    _, parsed = EML_POLICY.header_store_parse(name, value)
    folded: str = EML_POLICY.fold(name, parsed)
    return folded


def _part(content: str, subtype: str) -> tuple[str, str]:
    """(content headers, body) of one text part, as the standard library encodes it."""
    cte, payload = _encode_text(content, "utf-8", None, EML_POLICY)
    headers = (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: {cte}\r\n'
    )
    return headers, payload.replace("\n", "\r\n")


def _boundary(bodies: str) -> str:
    """A boundary as the standard library's generator makes one, absent from ``bodies``."""
    token = random.randrange(sys.maxsize)
    boundary = f"{'=' * 15}{token:0{_BOUNDARY_WIDTH}d}=="
    chosen, counter = boundary, 0
    while re.search(f"^{_DASHES}{re.escape(chosen)}({_DASHES})?\r?$", bodies, re.MULTILINE):
        chosen = f"{boundary}.{counter}"
        counter += 1
    return chosen


def build_bytes(
    *,
    sender: str,
    mailing: str,
    recipient: str,
    to: str | None,
    parts: Mapping[str, str],
    ref: str,
    date: str | None = None,
    message_id: str | None = None,
    boundary: str | None = None,
) -> bytes:
    """``build_email(...).as_bytes()``, written directly: the sender's path."""
    head = [_header("From", sender)]
    if to:
        head.append(_header("To", to))
    head.append(_header("Subject", parts.get("subject", "")))
    head.append(_header("Date", date or formatdate(localtime=False, usegmt=True)))
    head.append(_header("Message-ID", message_id or make_msgid(domain=MESSAGE_ID_DOMAIN)))
    head.append(_header(MAILING_HEADER, mailing))
    head.append(_header(RECIPIENT_HEADER, recipient))
    head += [f"{name}: {value}\r\n" for name, value in ref_headers(ref)]
    text = parts.get("text", parts.get("body"))
    html = parts.get("html")
    if text is not None and html is not None:
        plain_headers, plain = _part(text, "plain")
        html_headers, rich = _part(html, "html")
        first = f"{plain_headers}\r\n{plain}"
        second = f"{html_headers}MIME-Version: 1.0\r\n\r\n{rich}"
        mark = boundary or _boundary(f"{first}\r\n{second}")
        head += [
            "MIME-Version: 1.0\r\n",
            _header("Content-Type", f'multipart/alternative; boundary="{mark}"'),
            f"\r\n{_DASHES}{mark}\r\n{first}\r\n{_DASHES}{mark}\r\n{second}"
            f"\r\n{_DASHES}{mark}{_DASHES}\r\n",
        ]
    else:
        subtype = "html" if text is None and html is not None else "plain"
        content, body = _part(text if text is not None else html or "", subtype)
        head += [content, "MIME-Version: 1.0\r\n\r\n", body]
    return "".join(head).encode("ascii", "surrogateescape")
