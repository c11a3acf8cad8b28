"""Every environment variable promomail reads, and what it does: the one list.

``promomail --help`` shows it, the README's table says the same, and a test
checks that every variable the code reads is here (and nothing else is).
No imports: ``--help`` loads this without the store.
"""

from __future__ import annotations

from typing import NamedTuple


class Variable(NamedTuple):
    name: str
    #: Which commands read it.
    read_by: str
    does: str


VARIABLES: tuple[Variable, ...] = (
    Variable(
        "PROMOMAIL_DB",
        "every command",
        "SQLAlchemy URL of the issuance store (default sqlite:///promomail.db); --db overrides it.",
    ),
    Variable(
        "PROMOMAIL_FROM",
        "render (.eml), send",
        "The From of every message, one address (default: promomail <noreply@localhost>).",
    ),
    Variable(
        "PROMOMAIL_SMTP_URL",
        "send, low-stock notices",
        "The SMTP relay: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered; "
        "?starttls=require to insist), or smtps:// for TLS from the start; send's --smtp "
        "overrides it.",
    ),
    Variable(
        "PROMOMAIL_SMTP_CA",
        "send, low-stock notices",
        "A file of CA certificates to verify the relay with (default: the system's).",
    ),
    Variable(
        "PROMOMAIL_WEBHOOK_ALLOW_PRIVATE",
        "pool create/edit, low-stock notices",
        "Let low-stock webhooks reach private addresses: 1 for all, or networks "
        "(10.0.0.0/8,127.0.0.1).",
    ),
    Variable(
        "PROMOMAIL_SNS_TOPICS",
        "serve",
        "Amazon SES events: the SNS topic ARNs accepted, comma-separated.",
    ),
    Variable(
        "PROMOMAIL_SNS_CERT_URL",
        "serve",
        "Where SNS signing certificates may come from, a regular expression "
        "(default: https on sns.REGION.amazonaws.com).",
    ),
    Variable(
        "PROMOMAIL_SENDGRID_PUBLIC_KEY",
        "serve",
        "SendGrid events: the verification key of the Signed Event Webhook (base64).",
    ),
    Variable(
        "PROMOMAIL_MAILGUN_SIGNING_KEY",
        "serve",
        "Mailgun events: the HTTP webhook signing key.",
    ),
    Variable(
        "PROMOMAIL_POSTMARK_AUTH",
        "serve",
        "Postmark events: USER:PASSWORD of the webhook URL's basic auth.",
    ),
    Variable(
        "TMPDIR",
        "render (to stdout)",
        "Where render keeps its workers' output before writing it to stdout (default /tmp).",
    ),
)
