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
import re
from collections.abc import Mapping
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, make_msgid

from pools.addresses import one_address

#: RFC 5322 on disk: CRLF line ends, and bodies 7-bit clean (quoted-printable or
#: base64 for non-ASCII text) so a file is valid without 8BITMIME. Headers set
#: raw (the reference headers) are written as they are.
EML_POLICY = SMTP.clone(cte_type="7bit", refold_source="none")

SENDER_ENV = "PROMOMAIL_FROM"
DEFAULT_SENDER = "promomail <noreply@localhost>"

MAILING_HEADER = "X-Promomail-Mailing"
RECIPIENT_HEADER = "X-Promomail-Recipient"
REF_HEADER = "X-Promomail-Ref"

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
) -> EmailMessage:
    """The e-mail of one recipient's rendered ``parts`` (subject, text or body, html)."""
    email = EmailMessage(policy=EML_POLICY)
    email["From"] = sender
    if to:
        email["To"] = to
    email["Subject"] = parts.get("subject", "")
    email["Date"] = formatdate(localtime=False, usegmt=True)
    email["Message-ID"] = make_msgid(domain="promomail.local")
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
