"""What the server needs to verify each mail service's webhooks, read from the environment."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from promomail.pools.errors import InvalidSetting

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

#: SPEC 8: https on an ``sns.REGION.amazonaws.com`` host (``.com.cn`` in China).
#: Matched against the whole URL; ``/`` must follow the host, so
#: ``sns.x.amazonaws.com.evil.example`` and ``…amazonaws.com@evil.example`` fail.
DEFAULT_SNS_CERT_URL = r"https://sns\.[a-z0-9-]+\.amazonaws\.com(?:\.cn)?/[^\s#]*"

ENVIRONMENT = {
    "sns_cert_url": "PROMOMAIL_SNS_CERT_URL",
    "sns_topics": "PROMOMAIL_SNS_TOPICS",
    "sendgrid_public_key": "PROMOMAIL_SENDGRID_PUBLIC_KEY",
    "mailgun_signing_key": "PROMOMAIL_MAILGUN_SIGNING_KEY",
    "postmark_auth": "PROMOMAIL_POSTMARK_AUTH",
}


@dataclass(frozen=True)
class WebhookConfig:
    """Each provider's secret or trust rule; a provider left empty is not configured.

    Validated when built, so a server with a bad key fails at start, not at
    the first webhook. Secrets never appear in ``repr``.
    """

    sns_cert_url: str = DEFAULT_SNS_CERT_URL
    sns_topics: frozenset[str] = frozenset()
    sendgrid_public_key: str | None = field(default=None, repr=False)
    mailgun_signing_key: str | None = field(default=None, repr=False)
    postmark_auth: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        try:
            re.compile(self.sns_cert_url)
        except re.error as exc:
            raise InvalidSetting(f"is not a regular expression: {exc}", "sns_cert_url") from None
        for topic in self.sns_topics:
            if not topic.startswith("arn:") or any(ch.isspace() for ch in topic):
                raise InvalidSetting(f"names {topic!r}, which is not a topic ARN", "sns_topics")
        if self.sendgrid_public_key is not None:
            _ = self.sendgrid_key  # refuses a key that is not base64 DER P-256
        if self.mailgun_signing_key is not None and not self.mailgun_signing_key:
            raise InvalidSetting("is empty", "mailgun_signing_key")
        if self.postmark_auth is not None and ":" not in self.postmark_auth:
            raise InvalidSetting("must be user:password", "postmark_auth")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> WebhookConfig:
        """The configuration in ``environ``; an empty variable counts as unset."""

        def value(name: str) -> str | None:
            found = environ.get(ENVIRONMENT[name], "").strip()
            return found or None

        topics = value("sns_topics")
        try:
            return cls(
                sns_cert_url=value("sns_cert_url") or DEFAULT_SNS_CERT_URL,
                sns_topics=frozenset(t.strip() for t in (topics or "").split(",") if t.strip()),
                sendgrid_public_key=value("sendgrid_public_key"),
                mailgun_signing_key=value("mailgun_signing_key"),
                postmark_auth=value("postmark_auth"),
            )
        except InvalidSetting as exc:  # name the variables the operator set
            raise InvalidSetting(exc.naming(ENVIRONMENT.__getitem__)) from None

    @cached_property
    def sns_cert_pattern(self) -> re.Pattern[str]:
        return re.compile(self.sns_cert_url)

    @cached_property
    def sendgrid_key(self) -> ec.EllipticCurvePublicKey:
        """The SendGrid verification key, loaded once."""
        # Imported here: reading event files (the CLI) needs no cryptography.
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.serialization import load_der_public_key

        assert self.sendgrid_public_key is not None
        try:
            der = base64.b64decode(self.sendgrid_public_key, validate=True)
            key = load_der_public_key(der)
        except (binascii.Error, ValueError):
            raise InvalidSetting("is not a base64 DER public key", "sendgrid_public_key") from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(
            key.curve, ec.SECP256R1
        ):
            raise InvalidSetting("is not a P-256 (ECDSA) public key", "sendgrid_public_key")
        return key
