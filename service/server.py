"""Running the app under uvicorn, and stopping it cleanly.

SIGTERM and SIGINT stop accepting connections, let the requests in flight
finish (up to :data:`GRACE_SECONDS`) and end with exit status 0. uvicorn by
itself re-raises the signal after its shutdown, which would end the process
"killed by SIGTERM"; a supervisor that asked it to stop should see success.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
from dataclasses import replace
from types import FrameType

import uvicorn

from promomail.pools import redact_url
from promomail.service.api_docs import DOCS_URL
from promomail.service.app import ServiceConfig, create_app

GRACE_SECONDS = 10


class _Server(uvicorn.Server):
    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not recorded as captured: the stop is the normal end of the process.
        # A second Ctrl-C gives up waiting for the requests in flight.
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the server starts so port 0 gets a real port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Inherited by accepted connections. Without it a small answer written in
    # two parts (headers, then body) waits for the client's delayed ACK: about
    # 40 ms per request on a keep-alive connection.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(config: ServiceConfig) -> None:
    """Serve until SIGTERM/SIGINT; a store or address problem raises before serving."""
    sock = bind(config.host, config.port)
    host, port = sock.getsockname()[:2]
    try:
        # Built for the port actually bound (port 0 picks one): requests must name it.
        app = create_app(replace(config, port=port))
    except BaseException:
        sock.close()
        raise
    uv_config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=GRACE_SECONDS,
        lifespan="on",
        server_header=False,
    )
    _log_to_stderr()
    print(_banner(host, port, config.db_url), file=sys.stderr, flush=True)
    _Server(uv_config).run(sockets=[sock])


def _banner(host: str, port: int, db_url: str) -> str:
    """Where the server listens, where a browser finds its pages, and its store."""
    listening = f"http://{_bracketed(host)}:{port}"
    # A wildcard address is no place to browse to: this machine is reached by loopback.
    local = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    browse = f"http://{_bracketed(local)}:{port}"
    return (
        f"promomail serve: listening on {listening}\n"
        f"  preview page  {browse}/\n"
        f"  API docs      {browse}{DOCS_URL}\n"
        f"  store         {redact_url(db_url)}"
    )


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _log_to_stderr() -> None:
    """The server's log on stderr: warnings and errors, and a line per request
    (:mod:`service.access_log`)."""
    logger = logging.getLogger("promomail")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
