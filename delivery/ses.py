"""Amazon SES events delivered by Amazon SNS over HTTP(S).

SNS signs each message with the key of a certificate it names by URL. The
URL is the attacker's to choose, so it is fetched only when it matches the
configured rule (``PROMOMAIL_SNS_CERT_URL``), over a bounded fetch, and the
certificate is cached by URL. ``TopicArn`` must be one the server listens to.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from promomail.delivery._reading import (
    event_id,
    join,
    load_json,
    mapping,
    required_text,
    sequence,
    timestamp,
)
from promomail.delivery.config import WebhookConfig
from promomail.delivery.events import (
    DeliveryEvent,
    EventBatch,
    EventType,
    MalformedEvent,
    NotConfigured,
    SnsUnreachable,
    TopicNotAllowed,
    Unverified,
    clean_detail,
    valid_ref_or_none,
)

PROVIDER = "ses"

#: The fields SNS signs, in order (``Subject`` only when present).
_SIGNED_NOTIFICATION = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_SIGNED_CONFIRMATION = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)
_CONFIRMATIONS = ("SubscriptionConfirmation", "UnsubscribeConfirmation")
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}

#: SES sends a message to at most 50 recipients; a list far longer is no SES event.
MAX_RECIPIENTS = 1000
#: A signing certificate is a couple of KiB; a confirmation answer is small XML.
MAX_FETCH_BYTES = 64 * 1024
FETCH_TIMEOUT = 5.0

#: A URL getter: the bytes at ``url`` or :class:`FetchFailed`.
Fetcher = Callable[[str], bytes]


class FetchFailed(Exception):
    """A URL could not be fetched within the bounds; the message says why."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirect would lead the fetch to a URL the rule never saw.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class HttpFetcher:
    """GET over urllib with a deadline for the whole fetch, a size cap and no redirects."""

    def __init__(self, timeout: float = FETCH_TIMEOUT, max_bytes: int = MAX_FETCH_BYTES) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._opener = urllib.request.build_opener(_NoRedirects)

    def __call__(self, url: str) -> bytes:
        deadline = time.monotonic() + self.timeout
        try:
            with self._opener.open(url, timeout=self.timeout) as response:
                if response.status != 200:
                    raise FetchFailed(f"HTTP status {response.status}")
                length = response.headers.get("Content-Length")
                if length is not None and length.isdigit() and int(length) > self.max_bytes:
                    raise FetchFailed(f"larger than {self.max_bytes} bytes")
                data = bytearray()
                # The socket timeout bounds each receive, the deadline the sum of
                # them: read1 returns after one receive, so a server trickling a
                # byte at a time meets the deadline check between receives.
                while chunk := response.read1(min(16384, self.max_bytes + 1 - len(data))):
                    data += chunk
                    if len(data) > self.max_bytes:
                        raise FetchFailed(f"larger than {self.max_bytes} bytes")
                    if time.monotonic() > deadline:
                        raise FetchFailed(f"took more than {self.timeout:g} s")
                return bytes(data)
        except urllib.error.HTTPError as exc:
            raise FetchFailed(f"HTTP status {exc.code}") from None
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise FetchFailed(str(reason) or type(exc).__name__) from None


class SnsEndpoint:
    """What SES webhooks fetch from SNS: signing certificates (cached) and confirmations."""

    def __init__(self, fetch: Fetcher | None = None, *, cache_size: int = 32) -> None:
        self.fetch: Fetcher = fetch if fetch is not None else HttpFetcher()
        self._cache_size = cache_size
        self._certificates: OrderedDict[str, x509.Certificate] = OrderedDict()
        self._lock = threading.Lock()

    def certificate(self, url: str) -> x509.Certificate:
        with self._lock:
            found = self._certificates.get(url)
            if found is not None:
                self._certificates.move_to_end(url)
                return found
        try:
            pem = self.fetch(url)
        except FetchFailed as exc:
            raise SnsUnreachable(PROVIDER, f"SigningCertURL {_shown(url)}: {exc}") from None
        try:
            certificate = x509.load_pem_x509_certificate(pem)
        except ValueError:
            raise Unverified(
                PROVIDER, f"SigningCertURL {_shown(url)} holds no PEM certificate"
            ) from None
        with self._lock:
            self._certificates[url] = certificate
            while len(self._certificates) > self._cache_size:
                self._certificates.popitem(last=False)
        return certificate

    def confirm(self, url: str) -> None:
        try:
            self.fetch(url)
        except FetchFailed as exc:
            raise SnsUnreachable(PROVIDER, f"SubscribeURL {_shown(url)}: {exc}") from None


_default_endpoint = SnsEndpoint()


def _shown(url: str) -> str:
    """A URL from the request, quoted and bounded for a message."""
    return repr(url[:200])


def url_allowed(config: WebhookConfig, url: str) -> bool:
    """Whether ``url`` may be fetched: it matches the configured rule in full and
    is plain http(s) with no user part (urllib would also open ``file:``)."""
    if config.sns_cert_pattern.fullmatch(url) is None:
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and "@" not in parts.netloc


def verify_and_parse(
    body: bytes,
    headers: Mapping[str, str],
    config: WebhookConfig,
    *,
    now: datetime,
    sns: SnsEndpoint | None = None,
) -> EventBatch:
    """The SES events of one SNS request, once its signature and topic are checked.

    A subscription confirmation is confirmed (its ``SubscribeURL`` fetched)
    and gives no events. ``sns`` fetches certificates and confirmations (a
    shared, caching one by default).
    """
    if not config.sns_topics:
        raise NotConfigured(PROVIDER, "no SNS topics are configured (PROMOMAIL_SNS_TOPICS)")
    endpoint = sns or _default_endpoint
    envelope = mapping(load_json(body, PROVIDER), PROVIDER, "body")
    kind = required_text(envelope, "Type", PROVIDER, "")
    signed: tuple[str, ...]
    if kind == "Notification":
        signed = _SIGNED_NOTIFICATION
    elif kind in _CONFIRMATIONS:
        signed = _SIGNED_CONFIRMATION
    else:
        raise MalformedEvent(PROVIDER, f"Type {kind[:40]!r} is not an SNS message type")
    topic = required_text(envelope, "TopicArn", PROVIDER, "", max_length=256)
    if topic not in config.sns_topics:
        raise TopicNotAllowed(PROVIDER, f"TopicArn {topic!r} is not one of the allowed topics")
    _verify(envelope, signed, config, endpoint, now)
    if kind == "SubscriptionConfirmation":
        url = required_text(envelope, "SubscribeURL", PROVIDER, "")
        if not url_allowed(config, url):
            raise Unverified(
                PROVIDER, f"SubscribeURL {_shown(url)} does not match the SNS URL rule"
            )
        endpoint.confirm(url)
    if kind != "Notification":
        return EventBatch()
    message_id = event_id(envelope, "MessageId", PROVIDER, "")
    sent_at = timestamp(envelope.get("Timestamp"), PROVIDER, "Timestamp")
    message = required_text(envelope, "Message", PROVIDER, "", max_length=1024 * 1024)
    event = mapping(load_json(message.encode(), PROVIDER, what="Message"), PROVIDER, "Message")
    return EventBatch(_ses_events(event, message_id, sent_at))


def _verify(
    envelope: Mapping[str, Any],
    signed: tuple[str, ...],
    config: WebhookConfig,
    endpoint: SnsEndpoint,
    now: datetime,
) -> None:
    version = envelope.get("SignatureVersion")
    algorithm = _HASHES.get(version) if isinstance(version, str) else None
    if algorithm is None:
        raise Unverified(PROVIDER, f"SignatureVersion {version!r} is not 1 or 2")
    url = required_text(envelope, "SigningCertURL", PROVIDER, "", max_length=2048)
    if not url_allowed(config, url):
        raise Unverified(PROVIDER, f"SigningCertURL {_shown(url)} does not match the SNS URL rule")
    signature_text = envelope.get("Signature")
    if not isinstance(signature_text, str) or len(signature_text) > 4096:
        raise Unverified(PROVIDER, "Signature is missing")
    try:
        signature = base64.b64decode(signature_text, validate=True)
    except binascii.Error:
        raise Unverified(PROVIDER, "Signature is not base64") from None
    lines: list[str] = []
    for name in signed:
        value = envelope.get(name)
        if value is None and name == "Subject":
            continue
        if not isinstance(value, str):
            raise MalformedEvent(PROVIDER, f"{name} is missing or not a string")
        lines += (name, value)
    certificate = endpoint.certificate(url)
    moment = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    if not certificate.not_valid_before_utc <= moment <= certificate.not_valid_after_utc:
        raise Unverified(PROVIDER, f"the certificate at {_shown(url)} is not valid now")
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise Unverified(PROVIDER, f"the certificate at {_shown(url)} has no RSA key")
    try:
        key.verify(
            signature,
            "".join(f"{line}\n" for line in lines).encode(),
            padding.PKCS1v15(),
            algorithm(),
        )
    except InvalidSignature:
        raise Unverified(PROVIDER, "the SNS signature does not match the message") from None


#: SES event kind -> (event type, key of its details, key of its recipient list).
_KINDS = {
    "Bounce": (EventType.BOUNCE, "bounce", "bouncedRecipients"),
    "Complaint": (EventType.COMPLAINT, "complaint", "complainedRecipients"),
    "Delivery": (EventType.DELIVERED, "delivery", "recipients"),
    "DeliveryDelay": (EventType.DEFERRED, "deliveryDelay", "delayedRecipients"),
}


def _ses_events(
    event: Mapping[str, Any], message_id: str, sent_at: datetime | None
) -> list[DeliveryEvent]:
    # Event publishing names the kind in eventType, identity notifications in
    # notificationType; kinds other than the four are of no concern here.
    kind = event.get("eventType", event.get("notificationType"))
    if not isinstance(kind, str):
        raise MalformedEvent(PROVIDER, "Message.eventType or Message.notificationType is missing")
    if kind not in _KINDS:
        return []
    event_type, key, recipients_key = _KINDS[kind]
    where = f"Message.{key}"
    details = mapping(event.get(key), PROVIDER, where)
    mail = mapping(event.get("mail"), PROVIDER, "Message.mail")
    ref = _reference(mail)
    at = timestamp(details.get("timestamp"), PROVIDER, f"{where}.timestamp") or sent_at
    permanent = event_type is EventType.BOUNCE and details.get("bounceType") == "Permanent"
    listed = details.get(recipients_key)
    if listed is None and event_type is not EventType.BOUNCE:
        recipients: list[Any] = [None]
    else:
        recipients = sequence(listed, PROVIDER, join(where, recipients_key)) or [None]
    if len(recipients) > MAX_RECIPIENTS:
        raise MalformedEvent(
            PROVIDER, f"{join(where, recipients_key)} names more than {MAX_RECIPIENTS} recipients"
        )
    shared = _shared_detail(details, kind)
    events = []
    for n, recipient in enumerate(recipients, 1):
        own = ""
        if isinstance(recipient, dict):
            own = " ".join(
                str(recipient[k])
                for k in ("status", "action", "diagnosticCode")
                if isinstance(recipient.get(k), str | int)
            )
        events.append(
            DeliveryEvent(
                provider=PROVIDER,
                event_id=message_id if len(recipients) == 1 else f"{message_id}:{n}",
                ref=ref,
                type=event_type,
                permanent=permanent,
                at=at,
                detail=clean_detail(" ".join(part for part in (shared, own) if part)),
            )
        )
    return events


def _shared_detail(details: Mapping[str, Any], kind: str) -> str:
    parts = [kind]
    for key in (
        "bounceType",
        "bounceSubType",
        "complaintFeedbackType",
        "smtpResponse",
        "delayType",
    ):
        value = details.get(key)
        if isinstance(value, str):
            parts.append(value)
    return " ".join(parts)


def _reference(mail: Mapping[str, Any]) -> str | None:
    """``promomail_ref`` from the message tags (event publishing), else from the
    ``X-Promomail-Ref`` header (identity notifications that include headers)."""
    tags = mail.get("tags")
    if isinstance(tags, dict):
        values = tags.get("promomail_ref")
        if isinstance(values, list) and values:
            return valid_ref_or_none(values[0])
    headers = mail.get("headers")
    if isinstance(headers, list):
        for header in headers:
            if (
                isinstance(header, dict)
                and isinstance(header.get("name"), str)
                and header["name"].lower() == "x-promomail-ref"
            ):
                value = header.get("value")
                return valid_ref_or_none(value.strip() if isinstance(value, str) else None)
    return None


__all__ = [
    "FetchFailed",
    "Fetcher",
    "HttpFetcher",
    "SnsEndpoint",
    "url_allowed",
    "verify_and_parse",
]
