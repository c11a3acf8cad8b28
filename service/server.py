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

from service.app import ServiceConfig, create_app

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
    shown = f"[{host}]" if ":" in host else host
    uv_config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=GRACE_SECONDS,
        lifespan="on",
        server_header=False,
    )
    logging.getLogger("promomail.service").setLevel(logging.INFO)
    print(f"promomail serve: listening on http://{shown}:{port}", file=sys.stderr, flush=True)
    _Server(uv_config).run(sockets=[sock])
