"""One line per request in the server's log: method, path, status and milliseconds.

``GET /api/v1/pools 200 2.4 ms``. The path is written without its query
string (a client may put a secret in one) and with terminal controls escaped
(it is the client's text, and the log is read on a terminal); no header is
written, so no token. It wraps the app's other middleware, so every answer
is logged, a refused ``Host`` (421) or body (413) included.
"""

from __future__ import annotations

import logging
import time

from starlette.types import Message, Receive, Scope, Send

from promomail.pools import printable
from promomail.service.middleware import HttpMiddleware

log = logging.getLogger("promomail.access")


class AccessLog(HttpMiddleware):
    """ASGI middleware writing each HTTP request's line to :data:`log` once it is answered."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 0

        async def answering(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, answering)
        except Exception:
            # Not answered yet: the error handler outside answers 500.
            status = status or 500
            raise
        finally:
            milliseconds = (time.perf_counter() - started) * 1000
            # 0: the client went away before any answer started.
            log.info(
                "%s %s %d %.1f ms",
                printable(scope["method"]),
                printable(scope["path"]),
                status,
                milliseconds,
            )
