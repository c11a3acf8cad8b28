"""Real signatures for delivery event tests: each service's request made as it makes it.

SNS: a self-signed RSA certificate (``cryptography.x509``) and messages
signed with SignatureVersion 1 or 2; SendGrid: a P-256 key; Mailgun: an
HMAC key; Postmark: basic auth. Also the bounce messages a mail server
returns (RFC 3464 DSNs and a qmail one). The service's webhook tests can
use the same builders.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

NOW = datetime(2026, 12, 7, 12, 0, 0)
TOPIC = "arn:aws:sns:eu-west-1:123456789012:promomail-events"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-test.pem"
SUBSCRIBE_URL = "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=x&Token=t"
REF = "Zr4_x-9QpL2mN7vB"


def _self_signed(key: rsa.RSAPrivateKey, not_after: datetime) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
        .not_valid_after(not_after.replace(tzinfo=UTC))
        .sign(key, hashes.SHA256())
    )


@dataclass
class SnsSigner:
    """Signs SNS messages as SNS does, with a certificate of its own."""

    not_after: datetime = datetime(2030, 1, 1)
    key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )

    @property
    def pem(self) -> bytes:
        return _self_signed(self.key, self.not_after).public_bytes(serialization.Encoding.PEM)

    def sign(self, envelope: dict[str, Any], version: str = "2") -> dict[str, Any]:
        if envelope["Type"] == "Notification":
            names = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
        else:
            names = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn"]
            names.append("Type")
        text = "".join(f"{n}\n{envelope[n]}\n" for n in names if n in envelope)
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = self.key.sign(text.encode(), padding.PKCS1v15(), algorithm)
        return {
            **envelope,
            "SignatureVersion": version,
            "Signature": base64.b64encode(signature).decode(),
        }


def sns_notification(
    signer: SnsSigner,
    message: dict[str, Any] | str,
    *,
    version: str = "2",
    topic: str = TOPIC,
    cert_url: str = CERT_URL,
    message_id: str = "5a1f-notification",
    subject: str | None = None,
) -> dict[str, Any]:
    envelope: dict[str, Any] = {
        "Type": "Notification",
        "MessageId": message_id,
        "TopicArn": topic,
        "Message": message if isinstance(message, str) else json.dumps(message),
        "Timestamp": "2026-12-07T11:59:58.123Z",
        "SigningCertURL": cert_url,
        "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe",
    }
    if subject is not None:
        envelope["Subject"] = subject
    return signer.sign(envelope, version)


def sns_confirmation(
    signer: SnsSigner, *, subscribe_url: str = SUBSCRIBE_URL, cert_url: str = CERT_URL
) -> dict[str, Any]:
    return signer.sign(
        {
            "Type": "SubscriptionConfirmation",
            "MessageId": "165545c9-confirm",
            "Token": "2336412f37fb687f5d51e6e241d",
            "TopicArn": TOPIC,
            "Message": "You have chosen to subscribe to the topic.",
            "SubscribeURL": subscribe_url,
            "Timestamp": "2026-12-07T11:59:58.123Z",
            "SigningCertURL": cert_url,
        }
    )


def ses_bounce(
    ref: str | None = REF,
    *,
    bounce_type: str = "Permanent",
    recipients: int = 1,
    event_publishing: bool = True,
) -> dict[str, Any]:
    mail: dict[str, Any] = {
        "timestamp": "2026-12-07T11:59:50.000Z",
        "messageId": "0102018c-ses",
        "destination": [f"r{n}@example.org" for n in range(recipients)],
    }
    if ref is not None:
        if event_publishing:
            mail["tags"] = {"promomail_ref": [ref], "ses:configuration-set": ["promo"]}
        else:
            mail["headers"] = [
                {"name": "Subject", "value": "Spring"},
                {"name": "X-Promomail-Ref", "value": ref},
            ]
    kind = {"eventType": "Bounce"} if event_publishing else {"notificationType": "Bounce"}
    return {
        **kind,
        "bounce": {
            "bounceType": bounce_type,
            "bounceSubType": "General",
            "bouncedRecipients": [
                {
                    "emailAddress": f"r{n}@example.org",
                    "action": "failed",
                    "status": "5.1.1",
                    "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                }
                for n in range(recipients)
            ],
            "timestamp": "2026-12-07T11:59:55.000Z",
            "feedbackId": "0102018c-feedback",
        },
        "mail": mail,
        "somethingNew": {"ignored": True},
    }


@dataclass
class SendgridSigner:
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    @property
    def public_key(self) -> str:
        """As SendGrid shows it: base64 DER SubjectPublicKeyInfo."""
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    def headers(self, body: bytes, timestamp: str = "1796644800") -> dict[str, str]:
        signature = self.key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        }


def sendgrid_event(kind: str, ref: str | None = REF, n: int = 0, **extra: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "email": "r@example.org",
        "timestamp": 1796644790,
        "event": kind,
        "sg_event_id": f"sg-{kind}-{n}",
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
        **extra,
    }
    if ref is not None:
        event["promomail_ref"] = ref
    return event


MAILGUN_KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"


def mailgun_body(
    event_data: Any,
    *,
    key: str = MAILGUN_KEY,
    at: datetime = NOW,
    token: str = "c2f1e9bd0fe0b39b2f82c9b0e6a0d2b5f4a0c8e2d1b3a4f5e6",
    signature: str | None = None,
) -> bytes:
    stamp = str(int(at.replace(tzinfo=UTC).timestamp()))
    if signature is None:
        signature = hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    return json.dumps(
        {
            "signature": {"timestamp": stamp, "token": token, "signature": signature},
            "event-data": event_data,
        }
    ).encode()


def mailgun_event(
    kind: str = "failed", severity: str | None = "permanent", ref: str | None = REF
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "event": kind,
        "id": f"mg-{kind}-{severity}",
        "timestamp": 1796644790.52,
        "recipient": "r@example.org",
        "reason": "bounce",
        "delivery-status": {"code": 550, "message": "5.1.1 user unknown", "description": ""},
        "user-variables": {"promomail_ref": ref} if ref is not None else {},
    }
    if severity is not None:
        data["severity"] = severity
    return data


POSTMARK_AUTH = "promomail:s3cret-hook"


def basic_auth(credentials: str = POSTMARK_AUTH) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


def postmark_bounce(kind: str = "HardBounce", ref: str | None = REF) -> dict[str, Any]:
    return {
        "RecordType": "Bounce",
        "ID": 4323372036854775807,
        "Type": kind,
        "TypeCode": 1 if kind == "HardBounce" else 4096,
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Description": "The server was unable to deliver your message",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": "r@example.org",
        "BouncedAt": "2026-12-07T11:59:55.9070259Z",
        "Metadata": {"promomail_ref": ref} if ref is not None else {},
        "MessageStream": "outbound",
    }


# --- bounce messages ---------------------------------------------------------


def dsn(
    recipients: list[tuple[str, str]] | None = None,
    *,
    ref: str | None = REF,
    returned: str = "message/rfc822",
    message_id: str = "<dsn-1@mx.example.org>",
) -> bytes:
    """A multipart/report DSN; ``recipients`` are (Action, Status) pairs."""
    recipients = recipients or [("failed", "5.1.1")]
    blocks = "\n".join(
        f"Final-Recipient: rfc822; r{n}@example.org\nAction: {action}\nStatus: {status}\n"
        f"Diagnostic-Code: smtp; {status[0]}50 {status} mailbox says no\n"
        f"Last-Attempt-Date: Mon, 7 Dec 2026 11:5{n}:00 +0100\n"
        for n, (action, status) in enumerate(recipients)
    )
    ref_header = f"X-Promomail-Ref: {ref}\n" if ref is not None else ""
    if returned == "message/rfc822":
        returned_part = (
            "Content-Type: message/rfc822\n\n"
            f"From: shop@example.com\nTo: r0@example.org\n{ref_header}Subject: Spring\n\n"
            "Your code: SPRING-1234\n"
        )
    else:
        returned_part = (
            "Content-Type: text/rfc822-headers\n\n"
            f"From: shop@example.com\nTo: r0@example.org\n{ref_header}Subject: Spring\n"
        )
    return (
        "From: MAILER-DAEMON@mx.example.org\n"
        "To: shop@example.com\n"
        f"Message-ID: {message_id}\n"
        "Date: Mon, 7 Dec 2026 12:00:00 +0100\n"
        "Subject: Undelivered Mail Returned to Sender\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B0"\n'
        "\n--B0\nContent-Type: text/plain\n\nYour message could not be delivered.\n"
        "\n--B0\nContent-Type: message/delivery-status\n\n"
        "Reporting-MTA: dns; mx.example.org\n"
        "Arrival-Date: Mon, 7 Dec 2026 11:00:00 +0100\n\n"
        f"{blocks}"
        f"\n--B0\n{returned_part}"
        "\n--B0--\n"
    ).encode()


def qmail_bounce(ref: str = REF) -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example.org\nTo: shop@example.com\n"
        "Message-ID: <qmail-1@mx.example.org>\nSubject: failure notice\n\n"
        "Hi. This is the qmail-send program at mx.example.org.\n"
        "I'm afraid I wasn't able to deliver your message to the following addresses.\n"
        "This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
        "<r@example.org>:\nSorry, no mailbox here by that name. (#5.1.1)\n\n"
        "--- Below this line is a copy of the message.\n\n"
        f"Return-Path: <shop@example.com>\nX-Promomail-Ref: {ref}\nSubject: Spring\n\nhello\n"
    ).encode()


def plain_mail() -> bytes:
    return (
        b"From: friend@example.org\nTo: shop@example.com\nMessage-ID: <hello@example.org>\n"
        b"Subject: About my order\n\nWhere is my parcel?\n"
    )


def later(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)
