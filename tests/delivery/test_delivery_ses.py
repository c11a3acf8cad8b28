"""SES events through SNS: signatures of both versions with a real self-signed
certificate, the URL rule, the topic rule, confirmations, and a real loopback
server for the fetch's bounds."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from promomail.delivery import ses
from promomail.delivery.config import WebhookConfig
from promomail.delivery.events import (
    EventType,
    MalformedEvent,
    NotConfigured,
    SnsUnreachable,
    TopicNotAllowed,
    Unverified,
)
from promomail.delivery.ses import FetchFailed, HttpFetcher, SnsEndpoint
from tests.support.delivery_helpers import (
    CERT_URL,
    NOW,
    REF,
    SUBSCRIBE_URL,
    TOPIC,
    SnsSigner,
    ses_bounce,
    sns_confirmation,
    sns_notification,
)

CONFIG = WebhookConfig(sns_topics=frozenset({TOPIC}))


class FakeSns:
    """Serves one certificate at CERT_URL and records every URL fetched."""

    def __init__(self, signer: SnsSigner) -> None:
        self.pem = signer.pem
        self.fetched: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.fetched.append(url)
        if url == CERT_URL:
            return self.pem
        if url == SUBSCRIBE_URL:
            return b"<ConfirmSubscriptionResponse/>"
        raise FetchFailed("HTTP status 404")


@pytest.fixture(scope="module")
def signer() -> SnsSigner:
    return SnsSigner()


@pytest.fixture
def sns(signer: SnsSigner) -> FakeSns:
    return FakeSns(signer)


def parse(envelope: dict[str, Any], sns: FakeSns, config: WebhookConfig = CONFIG) -> Any:
    body = json.dumps(envelope).encode()
    return ses.verify_and_parse(body, {}, config, now=NOW, sns=SnsEndpoint(sns))


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_signed_permanent_bounce_gives_a_permanent_event_with_the_tag_reference(
    signer: SnsSigner, sns: FakeSns, version: str
) -> None:
    [event] = parse(sns_notification(signer, ses_bounce(), version=version), sns)
    assert (event.provider, event.event_id, event.ref) == ("ses", "5a1f-notification", REF)
    assert event.type is EventType.BOUNCE and event.permanent
    assert event.at is not None and event.at.isoformat() == "2026-12-07T11:59:55"
    assert "Permanent" in event.detail and "5.1.1" in event.detail
    assert sns.fetched == [CERT_URL]


def test_an_identity_notification_names_the_reference_in_its_headers(
    signer: SnsSigner, sns: FakeSns
) -> None:
    bounce = ses_bounce(bounce_type="Transient", event_publishing=False)
    [event] = parse(sns_notification(signer, bounce, subject="Amazon SES Bounce"), sns)
    assert event.ref == REF and event.type is EventType.BOUNCE and not event.permanent


def test_each_bounced_recipient_is_an_event_of_its_own(signer: SnsSigner, sns: FakeSns) -> None:
    events = parse(sns_notification(signer, ses_bounce(recipients=3)), sns)
    assert [e.event_id for e in events] == [f"5a1f-notification:{n}" for n in (1, 2, 3)]


def test_an_absurd_recipient_list_is_refused(signer: SnsSigner, sns: FakeSns) -> None:
    with pytest.raises(MalformedEvent, match="more than 1000 recipients"):
        parse(sns_notification(signer, ses_bounce(recipients=1001)), sns)


@pytest.mark.parametrize(
    ("kind", "details", "expected"),
    [
        ("Complaint", {"complainedRecipients": [{"emailAddress": "r@x"}]}, EventType.COMPLAINT),
        ("Delivery", {"recipients": ["r@x"], "smtpResponse": "250 ok"}, EventType.DELIVERED),
        ("DeliveryDelay", {"delayedRecipients": [{"emailAddress": "r@x"}]}, EventType.DEFERRED),
    ],
)
def test_complaints_deliveries_and_delays(
    signer: SnsSigner, sns: FakeSns, kind: str, details: dict[str, Any], expected: EventType
) -> None:
    key = kind[0].lower() + kind[1:]
    message = {"eventType": kind, key: details, "mail": {"tags": {"promomail_ref": [REF]}}}
    [event] = parse(sns_notification(signer, message), sns)
    assert (event.type, event.permanent, event.ref) == (expected, False, REF)


def test_other_kinds_and_bad_references_change_nothing(signer: SnsSigner, sns: FakeSns) -> None:
    opened = {"eventType": "Open", "open": {}, "mail": {}}
    assert parse(sns_notification(signer, opened), sns) == []
    [event] = parse(sns_notification(signer, ses_bounce(ref="not a ref!")), sns)
    assert event.ref is None


def test_a_changed_message_is_refused(signer: SnsSigner, sns: FakeSns) -> None:
    envelope = sns_notification(signer, ses_bounce())
    envelope["Message"] = envelope["Message"].replace("Permanent", "Transient")
    with pytest.raises(Unverified, match="signature does not match"):
        parse(envelope, sns)


def test_a_signature_by_another_key_is_refused(signer: SnsSigner, sns: FakeSns) -> None:
    with pytest.raises(Unverified):
        parse(sns_notification(SnsSigner(), ses_bounce()), sns)


@pytest.mark.parametrize("version", ["3", 2, None, ""])
def test_an_unknown_signature_version_is_refused(
    signer: SnsSigner, sns: FakeSns, version: Any
) -> None:
    envelope = sns_notification(signer, ses_bounce())
    envelope["SignatureVersion"] = version
    with pytest.raises(Unverified, match="SignatureVersion"):
        parse(envelope, sns)


def test_an_expired_certificate_is_refused(sns: FakeSns) -> None:
    old = SnsSigner(not_after=NOW.replace(year=2025))
    sns.pem = old.pem
    with pytest.raises(Unverified, match="not valid now"):
        parse(sns_notification(old, ses_bounce()), sns)


def test_a_topic_not_allowed_is_refused_before_anything_is_fetched(
    signer: SnsSigner, sns: FakeSns
) -> None:
    other = "arn:aws:sns:eu-west-1:123456789012:someone-else"
    with pytest.raises(TopicNotAllowed, match="someone-else"):
        parse(sns_notification(signer, ses_bounce(), topic=other), sns)
    assert sns.fetched == []


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.eu-west-1.amazonaws.com/cert.pem",
        "https://sns.eu-west-1.amazonaws.com.evil.example/cert.pem",
        "https://sns.eu-west-1.amazonaws.com@evil.example/cert.pem",
        "https://evil.example/sns.eu-west-1.amazonaws.com/cert.pem",
        "https://sqs.eu-west-1.amazonaws.com/cert.pem",
        "file:///etc/passwd",
        "https://sns.eu-west-1.amazonaws.com/cert.pem\nhttps://evil.example/",
    ],
)
def test_a_certificate_url_outside_the_rule_is_never_fetched(
    signer: SnsSigner, sns: FakeSns, url: str
) -> None:
    with pytest.raises(Unverified, match="SigningCertURL"):
        parse(sns_notification(signer, ses_bounce(), cert_url=url), sns)
    assert sns.fetched == []


def test_a_permissive_rule_still_fetches_only_http(signer: SnsSigner, sns: FakeSns) -> None:
    config = WebhookConfig(sns_cert_url=".*", sns_topics=frozenset({TOPIC}))
    with pytest.raises(Unverified, match="SigningCertURL"):
        parse(sns_notification(signer, ses_bounce(), cert_url="file:///etc/passwd"), sns, config)
    assert sns.fetched == []


def test_the_certificate_is_fetched_once_per_url(signer: SnsSigner, sns: FakeSns) -> None:
    endpoint = SnsEndpoint(sns)
    for n in range(3):
        body = json.dumps(sns_notification(signer, ses_bounce(), message_id=f"m{n}")).encode()
        assert len(ses.verify_and_parse(body, {}, CONFIG, now=NOW, sns=endpoint)) == 1
    assert sns.fetched == [CERT_URL]


def test_a_certificate_that_cannot_be_fetched_verifies_nothing(signer: SnsSigner) -> None:
    def unreachable(url: str) -> bytes:
        raise FetchFailed("timed out")

    body = json.dumps(sns_notification(signer, ses_bounce())).encode()
    with pytest.raises(SnsUnreachable, match="timed out"):
        ses.verify_and_parse(body, {}, CONFIG, now=NOW, sns=SnsEndpoint(unreachable))


def test_a_subscription_is_confirmed_and_gives_no_events(signer: SnsSigner, sns: FakeSns) -> None:
    assert parse(sns_confirmation(signer), sns) == []
    assert sns.fetched == [CERT_URL, SUBSCRIBE_URL]


def test_a_subscribe_url_outside_the_rule_is_never_fetched(signer: SnsSigner, sns: FakeSns) -> None:
    with pytest.raises(Unverified, match="SubscribeURL"):
        parse(sns_confirmation(signer, subscribe_url="https://evil.example/?confirm"), sns)
    assert SUBSCRIBE_URL not in sns.fetched and "https://evil.example/?confirm" not in sns.fetched


def test_an_unsigned_confirmation_is_not_confirmed(signer: SnsSigner, sns: FakeSns) -> None:
    envelope = sns_confirmation(signer)
    envelope["Token"] = "another-token"
    with pytest.raises(Unverified):
        parse(envelope, sns)
    assert SUBSCRIBE_URL not in sns.fetched


def test_without_topics_ses_is_not_configured(signer: SnsSigner, sns: FakeSns) -> None:
    with pytest.raises(NotConfigured, match="PROMOMAIL_SNS_TOPICS"):
        parse(sns_notification(signer, ses_bounce()), sns, WebhookConfig())


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ("not json", "Message is not valid JSON"),
        ({"mail": {}}, "Message.eventType or Message.notificationType"),
        ({"eventType": "Bounce", "mail": {}}, "Message.bounce must be an object"),
        ({"eventType": "Bounce", "bounce": {}, "mail": {}}, "bounce.bouncedRecipients"),
        ({"eventType": "Bounce", "bounce": {"bouncedRecipients": []}}, "Message.mail"),
        (
            {
                "eventType": "Bounce",
                "bounce": {"bouncedRecipients": [], "timestamp": "x"},
                "mail": {},
            },
            "Message.bounce.timestamp",
        ),
    ],
)
def test_a_malformed_message_names_its_field(
    signer: SnsSigner, sns: FakeSns, message: Any, field: str
) -> None:
    with pytest.raises(MalformedEvent, match=field.replace(".", r"\.")):
        parse(sns_notification(signer, message), sns)


# --- the real fetch, on loopback ---------------------------------------------


class _Server:
    def __init__(self, pem: bytes) -> None:
        self.pem = pem
        self.paths: list[str] = []
        self.release = threading.Event()


def _handler(state: _Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            state.paths.append(self.path)
            if self.path == "/certs/big.pem":
                self.send_response(200)
                self.end_headers()  # no Content-Length: the cap must hold while reading
                self.wfile.write(b"x" * (ses.MAX_FETCH_BYTES + 10))
            elif self.path == "/certs/slow.pem":
                self.send_response(200)
                self.send_header("Content-Length", "100")
                self.end_headers()
                self.wfile.flush()
                state.release.wait(30)  # until the test is done with it
            elif self.path == "/certs/trickle.pem":
                self.send_response(200)
                self.send_header("Content-Length", "1000")
                self.end_headers()
                # A byte every 0.1 s: each receive is within the socket's
                # timeout, only the deadline on the whole fetch ends it.
                while not state.release.wait(0.1):
                    self.wfile.write(b"-")
                    self.wfile.flush()
            elif self.path == "/certs/moved.pem":
                self.send_response(302)
                self.send_header("Location", "/certs/cert.pem")
                self.end_headers()
            elif self.path.startswith("/certs/cert.pem") or self.path.startswith("/other/"):
                self.send_response(200)
                self.send_header("Content-Length", str(len(state.pem)))
                self.end_headers()
                self.wfile.write(state.pem)
            else:
                self.send_response(404)
                self.end_headers()

    return Handler


@pytest.fixture
def loopback(signer: SnsSigner) -> Iterator[tuple[str, _Server]]:
    state = _Server(signer.pem)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join()


def test_the_real_fetch_holds_the_url_rule_the_size_cap_and_the_timeout(
    signer: SnsSigner, loopback: tuple[str, _Server]
) -> None:
    base, server = loopback
    rule = base.replace(".", r"\.") + "/certs/.*"
    config = WebhookConfig(sns_cert_url=rule, sns_topics=frozenset({TOPIC}))
    endpoint = SnsEndpoint(HttpFetcher(timeout=0.5))

    def verify(url: str) -> Any:
        body = json.dumps(sns_notification(signer, ses_bounce(), cert_url=url)).encode()
        return ses.verify_and_parse(body, {}, config, now=NOW, sns=endpoint)

    [event] = verify(f"{base}/certs/cert.pem")
    assert event.ref == REF
    with pytest.raises(Unverified, match="does not match the SNS URL rule"):
        verify(f"{base}/other/cert.pem")
    with pytest.raises(SnsUnreachable, match="larger than"):
        verify(f"{base}/certs/big.pem")
    with pytest.raises(SnsUnreachable, match=r"timed out|took more than"):
        verify(f"{base}/certs/slow.pem")
    with pytest.raises(SnsUnreachable, match="took more than"):
        verify(f"{base}/certs/trickle.pem")
    with pytest.raises(SnsUnreachable, match="302"):
        verify(f"{base}/certs/moved.pem")
    verify(f"{base}/certs/cert.pem")  # cached: no second request
    assert server.paths == [
        "/certs/cert.pem",
        "/certs/big.pem",
        "/certs/slow.pem",
        "/certs/trickle.pem",
        "/certs/moved.pem",
    ]


def test_the_default_rule_accepts_sns_hosts_only() -> None:
    config = WebhookConfig()
    assert ses.url_allowed(config, CERT_URL)
    assert ses.url_allowed(config, SUBSCRIBE_URL)
    assert ses.url_allowed(config, "https://sns.cn-north-1.amazonaws.com.cn/x.pem")
    assert not ses.url_allowed(config, "https://sns.amazonaws.com/x.pem")
    assert not ses.url_allowed(config, "https://sns.eu-west-1.amazonaws.com:8443/x.pem")
