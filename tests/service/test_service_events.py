"""Delivery events over HTTP (SPEC 8) on a real ``promomail serve``, with real signatures.

One server per store, configured for every service: SNS with a self-signed
RSA certificate served from a loopback HTTP server (both signature
versions), SendGrid with a P-256 key, Mailgun with an HMAC key, Postmark
with basic auth, and promomail's own form with an ``events`` token. Each
test renders a small mailing of its own with the library, so the
references in the events are real ones.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from promomail.pools.after_sending.returns import return_codes
from promomail.service.routes_events import EVENT_THREADS
from tests.support.delivery_helpers import (
    MAILGUN_KEY,
    POSTMARK_AUTH,
    TOPIC,
    SendgridSigner,
    SnsSigner,
    basic_auth,
    mailgun_body,
    mailgun_event,
    postmark_bounce,
    sendgrid_event,
    ses_bounce,
    sns_confirmation,
    sns_notification,
)
from tests.support.invariants import check_invariants, check_message_returns
from tests.support.render_helpers import (
    EVERY_PART,
    customer_ids,
    read_jsonl,
    render,
    wait_until,
    write_recipients,
    write_template,
)
from tests.support.service_helpers import (
    PROMOMAIL,
    Server,
    Store,
    open_store,
    problem,
    start_server,
    stop_cleanly,
    token,
)
from tests.support.store_helpers import make_pool

MANUAL = "manual return"
PROVIDERS = ["ses-v1", "ses-v2", "sendgrid", "mailgun", "postmark", "promomail"]


# --- the loopback SNS ---------------------------------------------------------


@dataclass
class Loopback:
    """What SNS serves: the signing certificate, subscription confirmations, a slow path."""

    pem: bytes
    base: str = ""
    paths: list[str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    slow_now: int = 0
    slow_most: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def cert_url(self) -> str:
        return f"{self.base}/certs/cert.pem"


def _handler(state: Loopback) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            with state.lock:
                state.paths.append(self.path)
            if self.path.startswith("/certs/slow"):
                with state.lock:
                    state.slow_now += 1
                    state.slow_most = max(state.slow_most, state.slow_now)
                state.release.wait(60)
                with state.lock:
                    state.slow_now -= 1
                self.send_response(404)
                self.end_headers()
            elif self.path == "/certs/cert.pem":
                self.send_response(200)
                self.send_header("Content-Length", str(len(state.pem)))
                self.end_headers()
                self.wfile.write(state.pem)
            elif self.path.startswith("/confirm"):
                body = b"<ConfirmSubscriptionResponse/>"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self.send_response(404)
                self.end_headers()

    return Handler


@dataclass
class Setup:
    store: Store
    server: Server
    sns: Loopback
    signer: SnsSigner
    sendgrid: SendgridSigner
    events_token: str
    redeem_token: str
    folder: Path


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def setup(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Setup]:
    folder = tmp_path_factory.mktemp(f"events-{request.param}")
    signer, sendgrid = SnsSigner(), SendgridSigner()
    state = Loopback(signer.pem)
    http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    http.daemon_threads = True
    state.base = f"http://127.0.0.1:{http.server_address[1]}"
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    env = {
        "PROMOMAIL_SNS_CERT_URL": re.escape(state.base) + r"/(certs|confirm)[^\s#]*",
        "PROMOMAIL_SNS_TOPICS": f"{TOPIC},arn:aws:sns:eu-west-1:123456789012:other-listened",
        "PROMOMAIL_SENDGRID_PUBLIC_KEY": sendgrid.public_key,
        "PROMOMAIL_MAILGUN_SIGNING_KEY": MAILGUN_KEY,
        "PROMOMAIL_POSTMARK_AUTH": POSTMARK_AUTH,
    }
    try:
        for store in open_store(request.param, folder):
            server = start_server(store.url, env=env)
            try:
                yield Setup(
                    store,
                    server,
                    state,
                    signer,
                    sendgrid,
                    token(store, "events"),
                    token(store, "redeem"),
                    folder,
                )
            finally:
                state.release.set()
                stop_cleanly(server)
    finally:
        state.release.set()
        http.shutdown()
        http.server_close()
        thread.join()


# --- a small mailing, rendered by the library ----------------------------------


@dataclass
class Mailing:
    id: str
    pool: str
    refs: dict[str, str]
    folder: Path


def _mailing(setup: Setup, recipients: int = 2) -> Mailing:
    name = f"m{uuid.uuid4().hex[:8]}"
    folder = setup.folder / name
    folder.mkdir()
    pool = f"p-{name}"
    make_pool(setup.store.engine, pool, [f"{name.upper()}-{i}" for i in range(recipients * 2)])
    mailing = Mailing(name, pool, {}, folder)
    mailing.refs = _render(setup, mailing, "1", recipients)
    return mailing


def _render(setup: Setup, mailing: Mailing, run: str, recipients: int = 2) -> dict[str, str]:
    template = write_template(mailing.folder, EVERY_PART.replace("spring", mailing.pool))
    listed = write_recipients(mailing.folder, customer_ids(recipients))
    out = mailing.folder / f"out-{run}.jsonl"
    render(setup.store.url, template, listed, mailing.id, out)
    return {r["recipient"]: r["ref"] for r in read_jsonl(out)}


def _codes(setup: Setup, mailing: Mailing) -> dict[str, tuple[str, str, bool]]:
    """code -> (customer, code status, issuance still live), for the mailing's codes."""
    with setup.store.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT c.code, i.customer_id, c.status, i.returned_at IS NULL "
                "FROM issuances i JOIN codes c ON c.id = i.code_id WHERE i.mailing_id = :m"
            ),
            {"m": mailing.id},
        )
        return {row[0]: (row[1], row[2], bool(row[3])) for row in rows}


def _held(setup: Setup, mailing: Mailing) -> dict[str, str]:
    """customer -> code the customer holds now (live issuance) from the mailing."""
    return {
        customer: code
        for code, (customer, status, live) in _codes(setup, mailing).items()
        if live and status == "issued"
    }


def _snapshot(setup: Setup) -> tuple[list[Any], ...]:
    with setup.store.engine.connect() as conn:
        return tuple(
            sorted(map(tuple, conn.execute(text(f"SELECT * FROM {table}"))), key=repr)
            for table in ("codes", "issuances", "deliveries", "delivery_events", "webhook_tokens")
        )


def _checks(setup: Setup) -> None:
    check_invariants(setup.store.engine, redemptions_possible=True)
    check_message_returns(setup.store.engine, manual_reason=MANUAL)


# --- each service's request, signed as it signs it ------------------------------


def _now_stamp() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class Request:
    path: str
    body: bytes
    headers: dict[str, str]


def _ses_message(kind: str, ref: str | None) -> dict[str, Any]:
    if kind == "bounce":
        return ses_bounce(ref)
    if kind == "soft":
        return ses_bounce(ref, bounce_type="Transient")
    tags = {"promomail_ref": [ref]} if ref is not None else {}
    return {
        "eventType": "Delivery",
        "mail": {"timestamp": "2026-12-07T11:59:50.000Z", "messageId": "x", "tags": tags},
        "delivery": {"timestamp": "2026-12-07T11:59:59.000Z", "recipients": ["r@example.org"]},
    }


def make_request(
    setup: Setup, provider: str, kind: str, ref: str | None, event_id: str, *, forged: bool = False
) -> Request:
    """A ``kind`` event ("bounce": permanent, "soft": transient, "delivered") about ``ref``.

    ``forged``: the same request signed with a key the server does not trust
    (or wrong credentials, or no token).
    """
    if provider.startswith("ses"):
        signer = SnsSigner() if forged else setup.signer
        envelope = sns_notification(
            signer,
            _ses_message(kind, ref),
            version=provider[-1],
            cert_url=setup.sns.cert_url,
            message_id=event_id,
        )
        body = json.dumps(envelope).encode()
        return Request("/api/v1/events/ses", body, {"Content-Type": "text/plain; charset=UTF-8"})
    if provider == "sendgrid":
        name = {"bounce": "bounce", "soft": "deferred", "delivered": "delivered"}[kind]
        body = json.dumps([sendgrid_event(name, ref, sg_event_id=event_id)]).encode()
        signer_sg = SendgridSigner() if forged else setup.sendgrid
        headers = {
            **signer_sg.headers(body, str(int(_now_stamp().timestamp()))),
            "Content-Type": "application/json",
        }
        return Request("/api/v1/events/sendgrid", body, headers)
    if provider == "mailgun":
        data = {
            "bounce": lambda: mailgun_event("failed", "permanent", ref),
            "soft": lambda: mailgun_event("failed", "temporary", ref),
            "delivered": lambda: mailgun_event("delivered", None, ref),
        }[kind]()
        data["id"] = event_id
        body = mailgun_body(
            data,
            at=_now_stamp(),
            token=uuid.uuid4().hex * 2,
            key="key-not-the-right-one" if forged else MAILGUN_KEY,
        )
        return Request("/api/v1/events/mailgun", body, {"Content-Type": "application/json"})
    if provider == "postmark":
        if kind == "delivered":
            document: dict[str, Any] = {
                "RecordType": "Delivery",
                "MessageID": event_id,
                "Recipient": "r@example.org",
                "DeliveredAt": "2026-12-07T11:59:59Z",
                "Details": "Test delivery",
                "Metadata": {"promomail_ref": ref} if ref is not None else {},
            }
        else:
            document = postmark_bounce("HardBounce" if kind == "bounce" else "SoftBounce", ref)
            document["ID"] = int(uuid.UUID(event_id).int % 2**62) if _is_uuid(event_id) else 7
        auth = basic_auth("promomail:wrong" if forged else POSTMARK_AUTH)
        body = json.dumps(document).encode()
        return Request(
            "/api/v1/events/postmark", body, {**auth, "Content-Type": "application/json"}
        )
    assert provider == "promomail"
    event = {
        "ref": ref,
        "type": {"soft": "bounce"}.get(kind, kind),
        "permanent": kind == "bounce",
        "at": "2026-12-07T11:59:59Z",
        "id": event_id,
        "detail": f"{kind} reported by a script",
    }
    headers = {"Content-Type": "application/json"}
    if not forged:
        headers["Authorization"] = f"Bearer {setup.events_token}"
    return Request("/api/v1/events/promomail", json.dumps({"events": [event]}).encode(), headers)


def _is_uuid(text_: str) -> bool:
    try:
        uuid.UUID(text_)
    except ValueError:
        return False
    return True


def post(setup: Setup, request: Request) -> httpx.Response:
    with setup.server.client() as client:
        return client.post(request.path, content=request.body, headers=request.headers)


def applied(answer: httpx.Response) -> dict[str, int]:
    assert answer.status_code == 200, answer.text
    document: dict[str, int] = answer.json()
    assert set(document) == {"applied", "duplicates", "unmatched"}
    return document


# --- what an event does ------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_permanent_bounce_returns_that_messages_codes_once(setup: Setup, provider: str) -> None:
    mailing = _mailing(setup)
    held = _held(setup, mailing)
    ann, bob = customer_ids(2)
    event_id = str(uuid.uuid4())
    answer = post(setup, make_request(setup, provider, "bounce", mailing.refs[ann], event_id))
    assert applied(answer) == {"applied": 1, "duplicates": 0, "unmatched": 0}
    codes = _codes(setup, mailing)
    assert codes[held[ann]] == (ann, "available", False)
    assert _held(setup, mailing) == {bob: held[bob]}
    # The service sends the same event again (Mailgun: signed anew, with a new token).
    before = _snapshot(setup)
    again = post(setup, make_request(setup, provider, "bounce", mailing.refs[ann], event_id))
    assert applied(again) == {"applied": 0, "duplicates": 1, "unmatched": 0}
    after = _snapshot(setup)
    assert after[:4] == before[:4]  # codes, issuances, deliveries, events: unchanged
    _checks(setup)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_delivery_keeps_the_codes_whatever_comes_after(setup: Setup, provider: str) -> None:
    mailing = _mailing(setup)
    held = _held(setup, mailing)
    ann = customer_ids(1)[0]
    ref = mailing.refs[ann]
    answer = post(setup, make_request(setup, provider, "delivered", ref, str(uuid.uuid4())))
    assert applied(answer)["applied"] == 1
    soft = post(setup, make_request(setup, provider, "soft", ref, str(uuid.uuid4())))
    assert applied(soft)["applied"] == 1
    # A failure reported after the delivery (out of order) is recorded and returns nothing.
    late = post(setup, make_request(setup, provider, "bounce", ref, str(uuid.uuid4())))
    assert applied(late)["applied"] == 1
    assert _held(setup, mailing) == held
    with setup.store.engine.connect() as conn:
        status = conn.execute(text("SELECT status FROM deliveries WHERE ref = :r"), {"r": ref})
        assert status.scalar() == "delivered"
    _checks(setup)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_transient_failure_returns_nothing(setup: Setup, provider: str) -> None:
    mailing = _mailing(setup)
    held = _held(setup, mailing)
    ref = mailing.refs[customer_ids(1)[0]]
    answer = post(setup, make_request(setup, provider, "soft", ref, str(uuid.uuid4())))
    assert applied(answer)["applied"] == 1
    assert _held(setup, mailing) == held
    _checks(setup)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_bad_signature_is_refused_and_changes_nothing(setup: Setup, provider: str) -> None:
    mailing = _mailing(setup)
    ref = mailing.refs[customer_ids(1)[0]]
    before = _snapshot(setup)
    answer = post(
        setup, make_request(setup, provider, "bounce", ref, str(uuid.uuid4()), forged=True)
    )
    document = problem(answer, 401)
    assert _snapshot(setup) == before
    if provider == "postmark":
        assert answer.headers["www-authenticate"].startswith("Basic")
    if provider == "promomail":
        assert answer.headers["www-authenticate"] == "Bearer"
    else:
        assert provider.split("-")[0] in document["detail"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_unknown_references_are_answered_200_and_counted_unmatched(
    setup: Setup, provider: str
) -> None:
    before = _snapshot(setup)[:4]
    unknown = post(
        setup, make_request(setup, provider, "bounce", "NoSuchMessage_42", str(uuid.uuid4()))
    )
    assert applied(unknown) == {"applied": 0, "duplicates": 0, "unmatched": 1}
    if provider != "promomail":  # promomail's own form requires a reference
        bare = post(setup, make_request(setup, provider, "bounce", None, str(uuid.uuid4())))
        assert applied(bare) == {"applied": 0, "duplicates": 0, "unmatched": 1}
    assert _snapshot(setup)[:4] == before


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_event_about_an_earlier_message_leaves_the_new_code_alone(
    setup: Setup, provider: str
) -> None:
    mailing = _mailing(setup)
    ann = customer_ids(1)[0]
    old_ref, old_code = mailing.refs[ann], _held(setup, mailing)[ann]
    return_codes(setup.store.engine, mailing.id, [ann], reason=MANUAL)
    new_refs = _render(setup, mailing, "2")
    new_code = _held(setup, mailing)[ann]
    # Often the very code given back: the new issuance, not the code, is what counts.
    assert new_refs[ann] != old_ref
    assert new_code == old_code or _codes(setup, mailing)[old_code][1] == "available"
    for kind in ("bounce", "soft", "delivered"):
        answer = post(setup, make_request(setup, provider, kind, old_ref, str(uuid.uuid4())))
        assert applied(answer)["applied"] == 1
    assert _held(setup, mailing)[ann] == new_code
    # An event about the new message does return the new code.
    answer = post(setup, make_request(setup, provider, "bounce", new_refs[ann], str(uuid.uuid4())))
    assert applied(answer)["applied"] == 1
    assert ann not in _held(setup, mailing)
    _checks(setup)


# --- each service's own rules ------------------------------------------------------


def test_a_replayed_mailgun_request_is_refused_before_anything_is_applied(setup: Setup) -> None:
    mailing = _mailing(setup)
    ann, bob = customer_ids(2)
    first = make_request(setup, "mailgun", "delivered", mailing.refs[ann], str(uuid.uuid4()))
    assert applied(post(setup, first))["applied"] == 1
    before = _snapshot(setup)
    assert "was seen before" in problem(post(setup, first), 401)["detail"]
    # A replay cannot be dressed up with other events: the token is signed, not the body.
    bounce = json.loads(
        make_request(setup, "mailgun", "bounce", mailing.refs[bob], str(uuid.uuid4())).body
    )
    forged = {**bounce, "signature": json.loads(first.body)["signature"]}
    replay = Request(first.path, json.dumps(forged).encode(), first.headers)
    problem(post(setup, replay), 401)
    assert _snapshot(setup) == before
    # A request signed more than five minutes ago is refused too.
    stale = mailgun_body(
        mailgun_event("failed", "permanent", mailing.refs[bob]),
        at=datetime(2026, 1, 1),
        token=uuid.uuid4().hex,
    )
    assert (
        "5 minutes"
        in problem(post(setup, Request(first.path, stale, first.headers)), 401)["detail"]
    )
    assert _snapshot(setup) == before


def test_a_subscription_is_confirmed_by_fetching_its_url(setup: Setup) -> None:
    url = f"{setup.sns.base}/confirm?Action=ConfirmSubscription&Token={uuid.uuid4().hex}"
    envelope = sns_confirmation(setup.signer, subscribe_url=url, cert_url=setup.sns.cert_url)
    request = Request("/api/v1/events/ses", json.dumps(envelope).encode(), {})
    assert applied(post(setup, request)) == {"applied": 0, "duplicates": 0, "unmatched": 0}
    assert url.removeprefix(setup.sns.base) in setup.sns.paths
    # One signed by another key is not confirmed.
    forged = sns_confirmation(SnsSigner(), subscribe_url=url + "x", cert_url=setup.sns.cert_url)
    problem(post(setup, Request(request.path, json.dumps(forged).encode(), {})), 401)
    assert url.removeprefix(setup.sns.base) + "x" not in setup.sns.paths


def test_a_topic_not_allowed_is_403_and_fetches_nothing(setup: Setup) -> None:
    mailing = _mailing(setup)
    fetched = len(setup.sns.paths)
    envelope = sns_notification(
        setup.signer,
        ses_bounce(mailing.refs[customer_ids(1)[0]]),
        topic="arn:aws:sns:eu-west-1:123456789012:someone-elses",
        cert_url=f"{setup.sns.base}/certs/never.pem",
    )
    before = _snapshot(setup)
    answer = post(setup, Request("/api/v1/events/ses", json.dumps(envelope).encode(), {}))
    assert "someone-elses" in problem(answer, 403)["detail"]
    assert _snapshot(setup) == before
    assert "/certs/never.pem" not in setup.sns.paths[fetched:]


def test_a_certificate_outside_the_rule_or_unreachable_verifies_nothing(setup: Setup) -> None:
    mailing = _mailing(setup)
    ref = mailing.refs[customer_ids(1)[0]]
    before = _snapshot(setup)
    elsewhere = sns_notification(
        setup.signer, ses_bounce(ref), cert_url="https://evil.example/SimpleNotificationService.pem"
    )
    answer = post(setup, Request("/api/v1/events/ses", json.dumps(elsewhere).encode(), {}))
    assert "does not match the SNS URL rule" in problem(answer, 401)["detail"]
    missing = sns_notification(
        setup.signer, ses_bounce(ref), cert_url=f"{setup.sns.base}/certs/missing.pem"
    )
    answer = post(setup, Request("/api/v1/events/ses", json.dumps(missing).encode(), {}))
    # SNS's fault, not the request's: a 5xx, so SNS sends it again later.
    assert "SigningCertURL" in problem(answer, 502)["detail"]
    assert _snapshot(setup) == before


def test_malformed_bodies_are_refused_naming_the_field(setup: Setup) -> None:
    events = {"Authorization": f"Bearer {setup.events_token}", "Content-Type": "application/json"}
    before = _snapshot(setup)
    with setup.server.client() as client:
        answer = client.post("/api/v1/events/promomail", content=b"{not json", headers=events)
        assert "not valid JSON" in problem(answer, 400)["detail"]
        bad = {"events": [{"ref": "Abc", "type": "bounce", "id": "1"}, {"ref": "Abc", "id": "2"}]}
        answer = client.post("/api/v1/events/promomail", json=bad, headers=events)
        assert "events[1].type" in problem(answer, 422)["detail"]
        answer = client.post(
            "/api/v1/events/promomail",
            content=b"events",
            headers={**events, "Content-Type": "text/plain"},
        )
        problem(answer, 415)
        # Signed correctly, but not SendGrid's form.
        body = json.dumps([{"event": 5}]).encode()
        headers = {**setup.sendgrid.headers(body), "Content-Type": "application/json"}
        answer = client.post("/api/v1/events/sendgrid", content=body, headers=headers)
        assert "[0].event" in problem(answer, 422)["detail"]
        answer = client.post("/api/v1/events/nosuch", content=b"{}")
        assert "nosuch" in problem(answer, 404)["detail"]
        too_big = b"[" + b" " * (1024 * 1024) + b"]"
        problem(client.post("/api/v1/events/sendgrid", content=too_big), 413)
    assert _snapshot(setup) == before


def test_only_an_events_or_admin_token_posts_promomail_events(setup: Setup) -> None:
    mailing = _mailing(setup)
    request = make_request(
        setup, "promomail", "bounce", mailing.refs[customer_ids(1)[0]], str(uuid.uuid4())
    )
    before = _snapshot(setup)
    for scope, status in (("read", 403), ("redeem", 403)):
        headers = {**request.headers, "Authorization": f"Bearer {token(setup.store, scope)}"}
        problem(post(setup, Request(request.path, request.body, headers)), status)
    assert _snapshot(setup) == before
    admin = {**request.headers, "Authorization": f"Bearer {token(setup.store, 'admin')}"}
    assert applied(post(setup, Request(request.path, request.body, admin)))["applied"] == 1
    # And the events token may do nothing else.
    with setup.server.client(setup.events_token) as client:
        problem(client.get("/api/v1/pools"), 403)
        problem(client.get(f"/api/v1/mailings/{mailing.id}"), 403)


# --- the rest of the service keeps its threads ---------------------------------------


def test_slow_sns_fetches_leave_the_checkout_its_threads(setup: Setup) -> None:
    state = setup.sns
    state.release.clear()
    requests = 40  # more than the service's 32 worker threads
    done: list[int] = []

    def slow_event(n: int) -> int:
        envelope = sns_notification(
            setup.signer, ses_bounce(), cert_url=f"{state.base}/certs/slow-{uuid.uuid4().hex}.pem"
        )
        with setup.server.client() as client:
            status = client.post("/api/v1/events/ses", content=json.dumps(envelope)).status_code
        done.append(status)
        return status

    with concurrent.futures.ThreadPoolExecutor(requests) as pool:
        futures = [pool.submit(slow_event, n) for n in range(requests)]
        try:
            wait_until(lambda: state.slow_now >= EVENT_THREADS, what="the slow fetches")
            # The slow fetches are all held now; the checkout is answered meanwhile.
            with setup.server.client(setup.redeem_token) as client:
                assert client.get("/healthz").status_code == 200
                assert client.get("/api/v1/codes/NO-SUCH-CODE").status_code == 404
            assert done == [], "the checkout was answered only after SNS fetches gave up"
            # No fetch gave up yet, so the count of fetches held is exact.
            most = state.slow_most
        finally:
            state.release.set()
        statuses = [future.result() for future in futures]
    assert statuses == [502] * requests
    assert most == EVENT_THREADS


# --- configuration --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("PROMOMAIL_SENDGRID_PUBLIC_KEY", "not-a-key", "PROMOMAIL_SENDGRID_PUBLIC_KEY"),
        ("PROMOMAIL_SNS_CERT_URL", "https://(unclosed", "PROMOMAIL_SNS_CERT_URL"),
        ("PROMOMAIL_SNS_TOPICS", "not-an-arn", "PROMOMAIL_SNS_TOPICS"),
        ("PROMOMAIL_POSTMARK_AUTH", "no-colon", "PROMOMAIL_POSTMARK_AUTH"),
    ],
)
def test_a_bad_setting_stops_serve_with_an_error(
    tmp_path: Path, name: str, value: str, said: str
) -> None:
    done = subprocess.run(
        [PROMOMAIL, "--db", f"sqlite:///{tmp_path / 'p.db'}", "serve", "--port", "0"],
        env={**_environ(), name: value},
        capture_output=True,
        timeout=120,
        check=False,
    )
    stderr = done.stderr.decode()
    assert done.returncode == 1, stderr
    assert stderr.startswith("Error: ") and said in stderr, stderr
    assert "Traceback" not in stderr and "listening" not in stderr


def _environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PROMOMAIL_")}
