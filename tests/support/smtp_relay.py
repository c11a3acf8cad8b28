"""A real SMTP relay on 127.0.0.1 whose answers each recipient's address decides.

The local part of a recipient's address says how the relay treats it:

* ``ok…``: accepted (250).
* ``soft…``: 451 at the end of DATA on the first attempt, accepted after.
* ``hard…``: 550 to RCPT TO (the recipient is refused).
* ``late…``: 554 at the end of DATA (the message is refused).
* ``drop…``: the connection dropped in DATA on the first attempt, accepted after.
* ``never…``: 451 at the end of DATA, always.

A sender whose address starts with ``blocked`` is refused (550 to MAIL FROM).

Every accepted message is an :class:`Arrival` with the server's own clock,
and the relay counts the SMTP sessions open at once.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import ssl
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from aiosmtpd.smtp import SMTP, AuthResult

from tests.support.sinks import EphemeralController


class Arrival(NamedTuple):
    recipient: str
    ref: str
    at: float
    message: email.message.EmailMessage
    #: Whether the session had switched to TLS.
    tls: bool


@dataclass
class Relay:
    """What the relay at ``url`` received, and how many sessions it held at once."""

    url: str = ""
    arrivals: list[Arrival] = field(default_factory=list)
    attempts: Counter[str] = field(default_factory=Counter)
    sessions: int = 0
    most_sessions: int = 0
    session_count: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.arrivals.clear()
            self.attempts.clear()
            self.most_sessions = self.sessions
            self.session_count = 0

    def refs(self) -> Counter[str]:
        return Counter(arrival.ref for arrival in self.arrivals)

    # -- aiosmtpd's handler hooks ------------------------------------------------------

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address.startswith("blocked"):
            return "550 5.7.1 Sender not allowed"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address.startswith("hard"):
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        at = time.monotonic()
        [address] = envelope.rcpt_tos
        with self.lock:
            self.attempts[address] += 1
            attempt = self.attempts[address]
        if address.startswith("late"):
            return "554 5.7.1 Message refused"
        if address.startswith("never") or (address.startswith("soft") and attempt == 1):
            return "451 4.3.0 Try again later"
        if address.startswith("drop") and attempt == 1:
            server.transport.abort()
            return "451 dropped"
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, email.message.EmailMessage)
        with self.lock:
            self.arrivals.append(
                Arrival(
                    address,
                    str(message["X-Promomail-Ref"]),
                    at,
                    message,
                    server.transport.get_extra_info("ssl_object") is not None,
                )
            )
        return "250 2.0.0 Accepted"


class _CountingSMTP(SMTP):
    relay: Relay

    def connection_made(self, transport: Any) -> None:
        with self.relay.lock:
            self.relay.sessions += 1
            self.relay.session_count += 1
            self.relay.most_sessions = max(self.relay.most_sessions, self.relay.sessions)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        with self.relay.lock:
            self.relay.sessions -= 1
        super().connection_lost(error)


class _Controller(EphemeralController):
    def __init__(self, relay: Relay, **kwargs: Any) -> None:
        self.relay = relay
        super().__init__(relay, hostname="127.0.0.1", port=0, **kwargs)

    def factory(self) -> SMTP:
        server = _CountingSMTP(self.handler, **self.SMTP_kwargs)
        server.relay = self.relay
        return server


def _accept(user: str, password: str) -> Any:
    def authenticate(
        server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (data.login, data.password) == (user.encode(), password.encode())
        return AuthResult(success=ok, handled=False)

    return authenticate


@contextmanager
def smtp_relay(
    *,
    tls: ssl.SSLContext | None = None,
    implicit_tls: ssl.SSLContext | None = None,
    login: tuple[str, str] | None = None,
) -> Iterator[Relay]:
    """A relay until the block ends: STARTTLS offered with ``tls``, TLS from the start
    with ``implicit_tls`` (an ``smtps`` URL), AUTH required with ``login``."""
    relay = Relay()
    kwargs: dict[str, Any] = {}
    if tls is not None:
        kwargs["tls_context"] = tls
    if implicit_tls is not None:
        kwargs["ssl_context"] = implicit_tls
    if login is not None:
        kwargs.update(authenticator=_accept(*login), auth_required=True)
    controller = _Controller(relay, **kwargs)
    controller.start()
    scheme = "smtps" if implicit_tls is not None else "smtp"
    relay.url = f"{scheme}://127.0.0.1:{controller.port}"
    relay.reset()  # the controller's own start-up check is no session of a test
    try:
        yield relay
    finally:
        controller.stop()


class Certificates(NamedTuple):
    ca: Path
    server: ssl.SSLContext


def self_signed(folder: Path) -> Certificates:
    """A CA of its own, and a server context whose certificate it signed for 127.0.0.1."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=promomail test CA", "-keyout", "ca.key", "-out", "ca.pem",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", "server.key", "-out", "server.csr",
    )  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.pem",
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "server.pem", folder / "server.key")
    return Certificates(folder / "ca.pem", context)
