"""Where a low-stock webhook may go: public addresses only, unless the operator allows more.

A pool's ``notify_url`` is set by whoever administers pools, through the
command line or the HTTP API, and the server posts to it. Left open, that
makes an admin token a way to reach the server's own network (the store,
internal services, the cloud's metadata address). So a webhook target must
resolve only to public addresses: every address its name resolves to is
checked, when the URL is set and again when the notice is sent (a name may
resolve elsewhere by then: DNS rebinding), and the request goes to the very
address that was checked, without following redirects.

The operator allows more with ``PROMOMAIL_WEBHOOK_ALLOW_PRIVATE``: ``1``
(or ``true``/``yes``) allows every address; otherwise a comma-separated list
of networks or addresses (``10.0.0.0/8, 127.0.0.1``) allows those.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

ALLOW_PRIVATE_ENV = "PROMOMAIL_WEBHOOK_ALLOW_PRIVATE"
_EVERYTHING = ("1", "true", "yes", "all")
#: IPv6 prefixes that carry an IPv4 address a router may deliver to (NAT64).
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class TargetRefused(ValueError):
    """A webhook URL that may not be posted to; the message says why."""


class Unresolvable(TargetRefused):
    """The URL's host name does not resolve (now)."""


@dataclass(frozen=True)
class Allowance:
    """The non-public addresses the operator lets webhooks reach."""

    everything: bool = False
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_env(cls) -> Allowance:
        value = os.environ.get(ALLOW_PRIVATE_ENV, "").strip()
        if not value or value.lower() in ("0", "false", "no"):
            return cls()
        if value.lower() in _EVERYTHING:
            return cls(everything=True)
        networks = []
        for item in value.split(","):
            if item.strip():
                try:
                    networks.append(ipaddress.ip_network(item.strip(), strict=False))
                except ValueError as exc:
                    raise TargetRefused(
                        f"{ALLOW_PRIVATE_ENV} holds {item.strip()!r}, which is not a network "
                        "or an address (use 1, or a list such as 10.0.0.0/8,127.0.0.1)"
                    ) from exc
        return cls(networks=tuple(networks))

    def allows(self, address: IPAddress) -> bool:
        return self.everything or any(address in network for network in self.networks)


def _embedded(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address stands for, when it stands for one."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def non_public(address: IPAddress) -> str | None:
    """What kind of non-public address this is, or None for a public one."""
    address = _embedded(address)
    for kind in ("loopback", "unspecified", "link_local", "multicast", "private", "reserved"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    if not address.is_global:
        return "not globally reachable"
    return None


def _host_and_port(url: str) -> tuple[str, int]:
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # brackets around something that is no IPv6 address
        raise TargetRefused("the URL's host is not valid") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise TargetRefused("not an http(s) URL")
    try:
        host, port = parts.hostname, parts.port
    except ValueError as exc:  # a port that is no number, or out of range
        raise TargetRefused("the URL's port is not valid") from exc
    if not host:
        raise TargetRefused("the URL names no host")
    return host, port or (443 if scheme == "https" else 80)


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (one, for an address literal)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    # The scope of a link-local IPv6 address ("fe80::1%eth0") is not part of the address.
    return list(
        dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in found)
    )


def checked_addresses(url: str, allowance: Allowance | None = None) -> list[IPAddress]:
    """The addresses to post ``url`` to: all of them allowed, or TargetRefused.

    One non-public address refuses the URL, even beside public ones: a
    name that resolves to both lets its owner pick which one is used.
    """
    allowed = allowance if allowance is not None else Allowance.from_env()
    host, port = _host_and_port(url)
    try:
        addresses = resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise Unresolvable(f"host {host!r} cannot be resolved") from exc
    if not addresses:
        raise Unresolvable(f"host {host!r} cannot be resolved")
    for address in addresses:
        kind = non_public(address)
        if kind is not None and not allowed.allows(address):
            raise TargetRefused(
                f"host {host!r} is a {kind} address ({address}): webhooks go to public "
                f"addresses only, unless {ALLOW_PRIVATE_ENV} allows it"
            )
    return addresses


def check_webhook_url(url: str) -> None:
    """Refuse a URL whose host resolves to a non-public address (when it is set).

    A name that does not resolve now is accepted: it is checked again, as
    every target is, when a notice is sent.
    """
    with contextlib.suppress(Unresolvable):
        checked_addresses(url)


def connection_to(
    url: str, addresses: Sequence[IPAddress], timeout: float
) -> http.client.HTTPConnection:
    """A connection for ``url`` that reaches only ``addresses`` (the ones checked).

    The host name stays the URL's, for the Host header and for TLS (SNI and
    the certificate check); only the socket goes to a checked address.
    """
    host, port = _host_and_port(url)
    kind = (
        http.client.HTTPSConnection
        if urlsplit(url).scheme.lower() == "https"
        else http.client.HTTPConnection
    )
    connection = kind(host, port, timeout=timeout)

    def pinned(
        _address: tuple[str, int],
        timeout: float | None = None,
        source_address: tuple[str, int] | None = None,
    ) -> socket.socket:
        last: OSError | None = None
        for address in addresses:
            try:
                return socket.create_connection((str(address), port), timeout, source_address)
            except OSError as exc:
                last = exc
        assert last is not None
        raise last

    connection._create_connection = pinned  # type: ignore[attr-defined]
    return connection
