"""Request bodies: size limits enforced while they stream, content types, uploads.

The limit is checked against ``Content-Length`` before anything is read, and
again on every chunk received, so a body sent without a length (chunked) is
cut off as soon as it passes the limit rather than after it was buffered.
Going over raises :class:`BodyTooLarge` inside the reader; in an upload that
aborts the import transaction, so nothing is stored.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import anyio.from_thread
from starlette.exceptions import HTTPException
from starlette.types import Message, Receive, Scope, Send

from promomail.service.middleware import HttpMiddleware
from promomail.service.problems import Problem

MIB = 1024 * 1024
#: About two million codes; larger files go in several requests or through the CLI.
UPLOAD_LIMIT = 32 * MIB
BODY_LIMIT = 1 * MIB
_UPLOAD_PATH = re.compile(r"^/api/v1/pools/[^/]+/codes/?$")


class BodyTooLarge(HTTPException):
    """An HTTPException, so the framework's body parsing lets it through unchanged."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit // MIB} MiB")


def limit_for(method: str, path: str) -> int:
    return UPLOAD_LIMIT if method == "POST" and _UPLOAD_PATH.match(path) else BODY_LIMIT


class BodyLimit(HttpMiddleware):
    """ASGI middleware: at most :func:`limit_for` bytes of body per request."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = limit_for(scope["method"], scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await Problem(413, BodyTooLarge(limit).detail).response()(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_json(content_type: str | None) -> bool:
    kind = media_type(content_type)
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


def unsupported(content_type: str | None, wanted: str) -> Problem:
    given = media_type(content_type) or "none"
    return Problem(415, f"the request body must be {wanted}, not Content-Type {given}")


class StreamReader:
    """A blocking ``read()`` over the request body, for the import running in a worker thread.

    Each read waits on the event loop for the next chunk, so the body is
    imported while it arrives and never held whole in memory.
    """

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = bytearray()
        self._done = False

    async def _next(self) -> bytes | None:
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            return None

    def read(self, size: int = -1) -> bytes:
        while not self._done and (size < 0 or len(self._buffer) < size):
            chunk = anyio.from_thread.run(self._next)
            if chunk is None:
                self._done = True
            else:
                self._buffer += chunk
        if size < 0:
            size = len(self._buffer)
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data
