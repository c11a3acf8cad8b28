"""Real low-stock sinks on 127.0.0.1: a webhook receiver and an SMTP inbox.

Both are context managers that start a server on a free port, yield what it
received (with the URL to reach it), and shut the server down when the block
ends; test modules wrap them in fixtures of their own.
"""

from __future__ import annotations

import asyncio
import email
import email.message
import email.policy
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple

from aiosmtpd.controller import Controller

# --- a webhook receiver --------------------------------------------------------


@dataclass
class Webhook:
    """The JSON bodies POSTed to ``url``; each POST is answered with ``status``.

    A test may change ``status`` at any time to make the receiver fail.
    """

    url: str = ""
    bodies: list[dict[str, Any]] = field(default_factory=list)
    status: int = 204


@contextmanager
def webhook_receiver(path: str = "/hook", *, status: int = 204) -> Iterator[Webhook]:
    """An HTTP server recording the JSON it is POSTed at ``path``, until the block ends."""
    received = Webhook(status=status)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            assert self.headers["Content-Type"] == "application/json"
            received.bodies.append(json.loads(self.rfile.read(length)))
            self.send_response(received.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    received.url = f"http://127.0.0.1:{server.server_address[1]}{path}"
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# --- an SMTP inbox -------------------------------------------------------------


class Mail(NamedTuple):
    """One message as the SMTP server received it."""

    sender: str
    recipients: list[str]
    message: email.message.EmailMessage


@dataclass
class Inbox:
    """The messages an SMTP server at ``url`` received; an aiosmtpd handler."""

    url: str = ""
    messages: list[Mail] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, email.message.EmailMessage)
        self.messages.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"


class EphemeralController(Controller):
    """aiosmtpd's Controller on port 0: learn the real port before its self-check."""

    def _trigger_server(self) -> None:
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


@contextmanager
def smtp_inbox(sender: str) -> Iterator[Inbox]:
    """An SMTP server recording every message, until the block ends.

    Its ``url`` names ``sender`` as the address notices come from.
    """
    inbox = Inbox()
    controller = EphemeralController(inbox, hostname="127.0.0.1", port=0)
    controller.start()
    inbox.url = f"smtp://127.0.0.1:{controller.port}?from={sender}"
    try:
        yield inbox
    finally:
        controller.stop()


# --- a sink that is down -------------------------------------------------------


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
