"""The SMTP relay URL and session: TLS as asked, certificates verified, logins refused early."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from promomail.delivery.outgoing import read_output
from promomail.delivery.sending import MemoryLog, SendAborted, send_messages
from promomail.pools.relay import (
    InvalidSmtpUrl,
    RelayError,
    RelayRefusedLogin,
    SmtpRelay,
    TlsMode,
    relay_from_environment,
)
from tests.support.outgoing_helpers import addresses, jsonl_output
from tests.support.smtp_relay import Certificates, self_signed, smtp_relay

MAILING = "spring-sale"
SECRET = "s3cret-pw"


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMOMAIL_FROM", "shop@example.test")
    monkeypatch.delenv("PROMOMAIL_SMTP_CA", raising=False)
    monkeypatch.delenv("PROMOMAIL_SMTP_URL", raising=False)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.mark.parametrize(
    ("url", "host", "port", "tls", "user", "password"),
    [
        ("smtp://relay.example", "relay.example", 25, TlsMode.STARTTLS_IF_OFFERED, None, None),
        (f"smtp://u:{SECRET}@relay.example:2525", "relay.example", 2525, TlsMode.STARTTLS_IF_OFFERED, "u", SECRET),
        ("smtp://relay.example?starttls=require", "relay.example", 25, TlsMode.STARTTLS, None, None),
        ("smtp+starttls://relay.example", "relay.example", 587, TlsMode.STARTTLS, None, None),
        ("SMTPS://me%40shop:p%2Fw@relay.example", "relay.example", 465, TlsMode.TLS, "me@shop", "p/w"),
    ],
)  # fmt: skip
def test_smtp_urls(
    url: str, host: str, port: int, tls: TlsMode, user: str | None, password: str | None
) -> None:
    relay = SmtpRelay.parse(url)
    assert (relay.host, relay.port, relay.tls, relay.user, relay.password) == (
        host,
        port,
        tls,
        user,
        password,
    )
    assert password is None or password not in repr(relay) + relay.shown


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://relay.example", "is not an SMTP URL"),
        ("smtp://", "is not an SMTP URL"),
        (f"smtp://u:{SECRET}@relay.example:99999", "the port is not a number"),
        (f"smtp://u:{SECRET}@relay.example?starttls=yes", "starttls may only be 'require'"),
        (f"smtps://u:{SECRET}@relay.example?starttls=require", "TLS from the start"),
        (f"smtp://u:{SECRET}@relay.example?tls=1", "unknown setting 'tls'"),
    ],
)
def test_bad_smtp_urls_are_refused_without_showing_the_password(url: str, reason: str) -> None:
    with pytest.raises(InvalidSmtpUrl) as caught:
        SmtpRelay.parse(url)
    assert reason in str(caught.value)
    assert "s3cr" not in str(caught.value)


def test_the_relay_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RelayError, match="set PROMOMAIL_SMTP_URL"):
        relay_from_environment()
    monkeypatch.setenv("PROMOMAIL_SMTP_URL", "smtp://relay.example:1025")
    assert relay_from_environment().port == 1025
    assert relay_from_environment("smtps://other.example").host == "other.example"


@pytest.fixture
def log() -> MemoryLog:
    return MemoryLog()


def send(tmp_path: Path, url: str, log: MemoryLog, count: int = 3) -> int:
    path = jsonl_output(tmp_path / "out.jsonl", MAILING, addresses("ok", count=count))
    return send_messages(read_output(path, MAILING), SmtpRelay.parse(url), log).sent


@pytest.fixture
def tls_relay(certificates: Certificates) -> Iterator[str]:
    with smtp_relay(tls=certificates.server) as relay:
        yield relay.url


def test_starttls_verified_against_the_ca_file(
    tmp_path: Path,
    certificates: Certificates,
    log: MemoryLog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with smtp_relay(tls=certificates.server) as relay:
        # The system's trust store does not know the test's CA.
        with pytest.raises(SendAborted, match="CERTIFICATE_VERIFY_FAILED"):
            send(tmp_path, relay.url + "?starttls=require", log)
        assert log.events == []

        monkeypatch.setenv("PROMOMAIL_SMTP_CA", str(certificates.ca))
        assert send(tmp_path, relay.url, log) == 3
        assert [arrival.tls for arrival in relay.arrivals] == [True] * 3


def test_smtps_is_tls_from_the_start(
    tmp_path: Path, certificates: Certificates, log: MemoryLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    with smtp_relay(implicit_tls=certificates.server) as relay:
        assert relay.url.startswith("smtps://")
        with pytest.raises(SendAborted, match="CERTIFICATE_VERIFY_FAILED"):
            send(tmp_path, relay.url, log)
        monkeypatch.setenv("PROMOMAIL_SMTP_CA", str(certificates.ca))
        assert send(tmp_path, relay.url, log) == 3
        assert [arrival.tls for arrival in relay.arrivals] == [True] * 3


def test_an_unreadable_ca_file_is_named(
    tmp_path: Path, log: MemoryLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMOMAIL_SMTP_CA", str(tmp_path / "missing.pem"))
    with smtp_relay() as relay, pytest.raises(RelayError, match=r"PROMOMAIL_SMTP_CA .*missing"):
        send(tmp_path, relay.url, log)


def test_required_starttls_is_refused_by_a_relay_without_it(tmp_path: Path, log: MemoryLog) -> None:
    with smtp_relay() as relay:
        with pytest.raises(RelayError, match="does not offer STARTTLS"):
            send(tmp_path, relay.url + "?starttls=require", log)
        assert (log.events, relay.arrivals) == ([], [])
        # Without the requirement, a relay without STARTTLS gets plain SMTP.
        assert send(tmp_path, relay.url, log) == 3
        assert [arrival.tls for arrival in relay.arrivals] == [False] * 3


def test_a_refused_login_fails_the_run_before_anything_is_marked(
    tmp_path: Path, certificates: Certificates, log: MemoryLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMOMAIL_SMTP_CA", str(certificates.ca))
    password = "p/w:" + SECRET
    with smtp_relay(tls=certificates.server, login=("shop", password)) as relay:
        host = relay.url.removeprefix("smtp://")
        with pytest.raises(RelayRefusedLogin) as caught:
            send(tmp_path, f"smtp://shop:wrong-{SECRET}@{host}", log)
        assert "refused the login of 'shop'" in str(caught.value)
        assert "s3cr" not in str(caught.value)
        assert (log.events, relay.arrivals) == ([], [])

        # No user given: the relay's demand for a login stops the run too.
        with pytest.raises(SendAborted, match="530"):
            send(tmp_path, relay.url, log)
        assert (log.events, relay.arrivals) == ([], [])

        quoted = password.replace("/", "%2F").replace(":", "%3A")
        assert send(tmp_path, f"smtp://shop:{quoted}@{host}", log) == 3
        assert [arrival.tls for arrival in relay.arrivals] == [True] * 3
