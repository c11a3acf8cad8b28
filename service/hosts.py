"""The ``Host`` a request names must be this server's: no DNS rebinding on loopback.

On a loopback address the preview page is open (it shows customers' real
last codes). A web page the operator visits cannot read it directly (the
browser's same-origin rule), but it can re-point its own name at 127.0.0.1
(DNS rebinding) and read it as its own origin. Such a request still names
the attacker's host in its ``Host`` header, so a server on loopback answers
only requests that name it as a local client does: ``localhost``,
``127.0.0.1``, ``[::1]`` or the address it listens on, with its port.
Every route is covered, the API included: the check costs nothing.

On any other address (``--host 0.0.0.0``, a LAN address) every route needs a
token, the preview page included (kept in a host-bound, SameSite=Strict
cookie that a rebound name never receives), and the server cannot know the
names it is reached by (DNS names, proxies), so any ``Host`` is answered.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from promomail.service.preview import is_loopback
from promomail.service.problems import Problem

#: The names a local client reaches a loopback server by, whatever address it listens on.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


@dataclass(frozen=True)
class HostRule:
    """The ``Host`` values a loopback server answers: one of ``names``, with its port."""

    names: frozenset[str]
    #: None: any port (an app built without its socket, whose port is not known).
    port: int | None

    @classmethod
    def for_address(cls, host: str, port: int) -> HostRule | None:
        """The rule of a server listening on ``host:port``; None where any host is answered."""
        if not is_loopback(host):
            return None
        listening = f"[{host}]" if ":" in host else host
        return cls(frozenset({*LOOPBACK_NAMES, listening.lower()}), port or None)

    def accepts(self, value: str) -> bool:
        text = value.strip().lower()
        if text.startswith("["):
            name, bracket, rest = text.partition("]")
            name += bracket
        else:
            name, colon, port = text.partition(":")
            rest = colon + port
        if name not in self.names:
            return False
        if not rest:
            # Clients leave the default port out; any other port is always written.
            return self.port in (None, 80)
        if not rest.startswith(":") or not rest[1:].isdigit():
            return False
        return self.port is None or int(rest[1:]) == self.port

    def describe(self) -> str:
        port = f":{self.port}" if self.port else ""
        return ", ".join(f"{name}{port}" for name in sorted(self.names))


class HostCheck:
    """ASGI middleware: a request whose ``Host`` is not this loopback server answers 421."""

    def __init__(self, app: ASGIApp, rule: HostRule) -> None:
        self.app = app
        self.rule = rule

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            values = [v.decode("latin-1") for k, v in scope["headers"] if k == b"host"]
            # No Host at all (HTTP/1.0) cannot come from a browser; two are never right.
            if len(values) > 1 or (values and not self.rule.accepts(values[0])):
                shown = values[0] if len(values) == 1 else "(several)"
                problem = Problem(
                    421,
                    f"host {shown!r} is not this server: on a loopback address it answers "
                    f"only as {self.rule.describe()}",
                )
                if scope["type"] == "http":
                    await problem.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)
