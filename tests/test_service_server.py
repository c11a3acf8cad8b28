"""The listening socket of ``promomail serve``."""

from __future__ import annotations

import socket

from service.server import bind


def test_accepted_connections_send_small_answers_at_once() -> None:
    listener = bind("127.0.0.1", 0)
    try:
        with socket.create_connection(listener.getsockname()[:2]) as _client:
            accepted, _ = listener.accept()
            with accepted:
                # No Nagle delay: headers and body written apart leave at once.
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        listener.close()


def test_port_zero_gets_a_real_port() -> None:
    listener = bind("127.0.0.1", 0)
    try:
        assert listener.getsockname()[1] > 0
    finally:
        listener.close()
