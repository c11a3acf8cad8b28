"""The service's edges, against a real ``promomail serve`` on SQLite and PostgreSQL.

The ``Host`` a request names (DNS rebinding on loopback), what a token limited
to pools learns of mailings, cursors a client made up, things that do not
exist, and where low-stock webhooks may go and what their failures tell.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from promomail.pools.after_sending.redemption import redeem
from promomail.pools.codes.notifications import FAILED, check_low_stock
from promomail.pools.codes.webhooks import ALLOW_PRIVATE_ENV, non_public
from promomail.pools.history.pages import encode_cursor
from tests.support.cli_helpers import Cli
from tests.support.service_helpers import (
    Server,
    Store,
    create_pool_over_api,
    problem,
    start_server,
    stop_cleanly,
    token,
    upload,
)
from tests.support.sinks import Webhook, closed_port, webhook_receiver
from tests.support.store_helpers import make_pool as make_store_pool

NOT_PUBLIC = [
    "127.0.0.1",
    "127.8.9.10",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.0.10",
    "169.254.169.254",
    "100.64.0.1",
    "0.0.0.0",
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "[::1]",
    "[::]",
    "[fe80::1]",
    "[fc00::1]",
    "[ff02::1]",
    "[::ffff:127.0.0.1]",
    "[::ffff:10.0.0.1]",
    "[64:ff9b::a00:1]",
    "localhost",
]


def _port(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


# --- the Host header ------------------------------------------------------------


def test_on_loopback_only_the_names_a_local_client_uses_are_answered(
    served: tuple[Store, Server],
) -> None:
    store, server = served
    port = _port(server)
    secret = token(store, "read")
    others = [
        f"rebound.example:{port}",  # a web page's own name, pointed at 127.0.0.1
        "rebound.example",
        f"localhost:{port + 1}",
        "localhost",  # the server is not on port 80
        f"localhost.:{port}",
        f"127.0.0.2:{port}",
        f"[::2]:{port}",
        f"localhost:{port}@rebound.example",
    ]
    paths = ["/", "/healthz", "/api/v1/pools", "/api/v1/openapi.json", "/preview/login"]
    with server.client(secret) as client:
        for host in others:
            for path in paths:
                refused = problem(client.get(path, headers={"Host": host}), 421)
                assert host in refused["detail"] and f"localhost:{port}" in refused["detail"]
        for host in (
            f"localhost:{port}",
            f"127.0.0.1:{port}",
            f"[::1]:{port}",
            f"LocalHost:{port}",
        ):
            assert client.get("/healthz", headers={"Host": host}).status_code == 200
            assert client.get("/api/v1/pools", headers={"Host": host}).status_code == 200
            page = client.get("/", headers={"Host": host})
            assert page.status_code == 200 and "<html" in page.text.lower()

    # Off loopback the page asks for a token, and the server cannot know the
    # names it is reached by (DNS names, proxies): every host is answered.
    everywhere = start_server(store.url, "--host", "0.0.0.0")
    try:
        base = f"http://127.0.0.1:{_port(everywhere)}"
        with httpx.Client(base_url=base, timeout=60) as client:
            headers = {"Host": "promomail.internal.example"}
            assert client.get("/healthz", headers=headers).status_code == 200
            page = client.get("/", headers=headers)
            assert page.status_code == 401 and "token" in page.text.lower()
    finally:
        stop_cleanly(everywhere)


# --- what a token limited to pools sees of mailings ---------------------------------


def test_a_limited_token_sees_a_mailing_counted_over_its_pools(
    served: tuple[Store, Server], admin: httpx.Client, tmp_path: Path
) -> None:
    store, server = served
    create_pool_over_api(admin, "mix-own", ["MO-1", "MO-2", "MO-3"])
    create_pool_over_api(admin, "mix-other", ["MT-1", "MT-2", "MT-3"])
    create_pool_over_api(admin, "mix-third", ["MH-1"])
    template = tmp_path / "mix.j2"
    template.write_text(
        "{% if client.id == 'a' %}{{ client.promocode('mix-own') }}{% endif %}"
        "{{ client.promocode('mix-other') }}"
    )
    recipients = tmp_path / "mix.csv"
    recipients.write_text("id\na\nb\nc\n")
    Cli(store.url).ok(
        "render", template, "--recipients", recipients, "--mailing", "m-mix",
        "--out", tmp_path / "mix.jsonl",
    )  # fmt: skip
    (tmp_path / "third.j2").write_text("{{ client.promocode('mix-third') }}")
    (tmp_path / "third.csv").write_text("id\na\n")
    Cli(store.url).ok(
        "render", tmp_path / "third.j2", "--recipients", tmp_path / "third.csv",
        "--mailing", "m-third", "--out", tmp_path / "third.jsonl",
    )  # fmt: skip
    others = admin.get("/api/v1/issuances", params={"pool": "mix-other"}).json()["items"]
    for issued in others[:2]:
        assert redeem(store.engine, issued["code"], order=f"o-{issued['code']}").ok

    everything = admin.get("/api/v1/mailings/m-mix").json()
    assert (everything["codes_issued"], everything["redeemed"]) == (4, 2)
    assert everything["runs"][0]["new_codes"] == 4

    with server.client(token(store, "read", ["mix-own"])) as limited:
        listed = limited.get("/api/v1/mailings").json()["items"]
        assert [m["id"] for m in listed] == ["m-mix"]
        shown = limited.get("/api/v1/mailings/m-mix").json()
        assert shown == listed[0]
        assert (shown["codes_issued"], shown["redeemed"], shown["redemption_rate"]) == (1, 0, 0.0)
        assert (shown["reissues"], shown["returned"]) == (0, 0)
        # Counted over every pool the template drew from: not this token's to know.
        assert [(r["new_codes"], r["reused_codes"]) for r in shown["runs"]] == [(None, None)]
        hidden = problem(limited.get("/api/v1/mailings/m-third"), 404)
        missing = problem(limited.get("/api/v1/mailings/m-none"), 404)
        assert hidden["detail"] == missing["detail"].replace("m-none", "m-third")
    with server.client(token(store, "read", ["mix-other"])) as other:
        shown = other.get("/api/v1/mailings/m-mix").json()
        assert (shown["codes_issued"], shown["redeemed"], shown["redemption_rate"]) == (3, 2, 2 / 3)


# --- cursors ----------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**62, max_value=2**80)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
CURSORS = st.one_of(
    st.text().map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.binary(),
    st.binary().map(lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")),
    JSON_VALUES.map(lambda v: encode_cursor(v).encode()),
    st.lists(st.integers(min_value=-(2**70), max_value=2**70), max_size=3).map(
        lambda v: encode_cursor(v).encode()
    ),
    st.text(min_size=1).map(
        lambda t: base64.urlsafe_b64encode(json.dumps(t).encode()).rstrip(b"=")
    ),
)
PAGED = ["/api/v1/issuances", "/api/v1/segments", "/api/v1/customers/cursor-c1"]


@pytest.fixture(scope="module")
def reader(served: tuple[Store, Server]) -> Iterator[httpx.Client]:
    store, server = served
    with server.client(token(store, "read")) as client:
        yield client


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=CURSORS, path=st.sampled_from(PAGED))
def test_a_made_up_cursor_is_a_400_naming_it_never_a_500(
    served: tuple[Store, Server], reader: httpx.Client, raw: bytes, path: str
) -> None:
    server = served[1]
    answer = reader.get(f"{path}?after={quote(raw, safe='')}")
    if answer.status_code == 422:
        # Not of a cursor's form (base64url): refused by the document's pattern.
        refused = problem(answer, 422)
        assert refused["detail"].startswith("query.after: "), refused
        assert refused["errors"][0]["loc"] == ["query", "after"]
    elif answer.status_code != 200:
        refused = problem(answer, 400)
        assert (
            refused["detail"].startswith("cursor ")
            and "is not one this list gave out" in (refused["detail"])
        )
    assert "Traceback" not in server.stderr and "unexpected error" not in server.stderr


# --- what does not exist -----------------------------------------------------------


def test_voiding_a_batch_that_does_not_exist_is_a_404(
    served: tuple[Store, Server], admin: httpx.Client
) -> None:
    store, _ = served
    create_pool_over_api(admin, "void-a", ["VA-1"])
    create_pool_over_api(admin, "void-b")
    batch = upload(admin, "void-b", ["VB-1"])["batch"]
    own = admin.get("/api/v1/pools/void-a").json()["imports"][0]["batch"]
    for pool_id, number in (("void-a", 999_999), ("void-b", own), ("void-a", batch)):
        refused = problem(admin.post(f"/api/v1/pools/{pool_id}/batches/{number}/void"), 404)
        assert refused["detail"] == f"pool {pool_id!r} has no import batch {number}"
    result = Cli(store.url)("codes", "void", "void-b", "--batch", str(own))
    assert result.exit_code == 1
    assert result.stderr == f"Error: pool 'void-b' has no import batch {own}\n"
    refused = problem(admin.get("/api/v1/issuances", params={"mailing": "no-such-mailing"}), 404)
    assert refused["detail"] == "mailing 'no-such-mailing' does not exist"


# --- webhooks ---------------------------------------------------------------------


@pytest.mark.parametrize("host", NOT_PUBLIC)
def test_a_webhook_to_a_non_public_address_is_refused(admin: httpx.Client, host: str) -> None:
    url = f"http://{host}:8080/hook"
    body = {"name": "h", "id": f"hook-{abs(hash(host))}", "notify_url": url}
    refused = problem(admin.post("/api/v1/pools", json=body), 422)
    assert refused["detail"].startswith(f"notify_url {url!r} cannot be used: ")
    assert ALLOW_PRIVATE_ENV in refused["detail"]
    made = create_pool_over_api(admin, f"hook-ok-{abs(hash(host))}")
    edited = admin.patch(f"/api/v1/pools/{made['id']}", json={"notify_url": url})
    assert problem(edited, 422)["detail"] == refused["detail"]
    public = admin.patch(
        f"/api/v1/pools/{made['id']}", json={"notify_url": "http://93.184.216.34/"}
    )
    assert public.status_code == 200, public.text


def test_webhook_failures_are_answered_alike_and_logged_in_full(
    served: tuple[Store, Server],
) -> None:
    store, _ = served
    server = start_server(store.url, env={ALLOW_PRIVATE_ENV: "127.0.0.1"})
    try:
        with (
            webhook_receiver("/hook", status=401) as hook,
            server.client(token(store, "admin")) as admin,
        ):
            down = f"http://127.0.0.1:{closed_port()}/hook"
            answers = []
            for pool_id, url in (("hook-down", down), ("hook-401", hook.url)):
                create_pool_over_api(admin, pool_id, low_stock=5, notify_url=url)
                batch = upload(admin, pool_id, [f"{pool_id}-1"])["batch"]
                voided = admin.post(f"/api/v1/pools/{pool_id}/batches/{batch}/void")
                assert voided.status_code == 200, voided.text
                [alert] = voided.json()["low_stock"]
                answers.append([(d["ok"], d["error"]) for d in alert["deliveries"]])
            assert answers == [[(False, FAILED)], [(False, FAILED)]]
            assert len(hook.bodies) == 1
    finally:
        stop_cleanly(server)
    log = server.stderr
    assert "hook-down': low-stock webhook to " in log and "refused" in log.lower()
    assert "hook-401': low-stock webhook to " in log and "HTTP 401" in log


@pytest.fixture
def hook(monkeypatch: pytest.MonkeyPatch) -> Iterator[Webhook]:
    monkeypatch.setenv(ALLOW_PRIVATE_ENV, "127.0.0.1")
    with webhook_receiver("/hook") as received:
        yield received


def test_the_target_is_checked_again_when_the_notice_is_sent(
    engine: Engine, hook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_store_pool(engine, "later", ["L-1"], low_stock=5, notify_url=hook.url)
    # The operator withdrew the allowance since the URL was set.
    monkeypatch.delenv(ALLOW_PRIVATE_ENV)
    [alert] = check_low_stock(engine, ["later"])
    [delivery] = alert.deliveries
    assert not delivery.ok and delivery.error is not None
    assert delivery.error.startswith("refused: host '127.0.0.1' is a loopback address")
    assert hook.bodies == []


def test_a_name_that_rebinds_to_a_private_address_is_not_posted_to(
    engine: Engine, hook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ALLOW_PRIVATE_ENV)
    port = int(hook.url.split(":")[2].split("/")[0])
    answers = iter(["93.184.216.34", "127.0.0.1"])
    real = socket.getaddrinfo

    def rebinding(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "hooks.rebind.test":
            address = next(answers)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    url = f"http://hooks.rebind.test:{port}/hook"
    make_store_pool(engine, "rebind", ["R-1"], low_stock=5, notify_url=url)
    [alert] = check_low_stock(engine, ["rebind"])
    [delivery] = alert.deliveries
    assert delivery.error is not None and "loopback" in delivery.error
    assert hook.bodies == []


def test_a_webhook_goes_to_the_address_that_was_checked(
    engine: Engine, hook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = int(hook.url.split(":")[2].split("/")[0])
    real = socket.getaddrinfo
    looked_up: list[str] = []

    def resolving(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "hooks.local.test":
            looked_up.append(host)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolving)
    url = f"http://hooks.local.test:{port}/hook"
    make_store_pool(engine, "pinned", ["P-1"], low_stock=5, notify_url=url)
    [alert] = check_low_stock(engine, ["pinned"])
    assert [d.ok for d in alert.deliveries] == [True]
    assert [b["pool"] for b in hook.bodies] == ["pinned"]
    # Once when the URL was set, once when the notice was sent: the connection
    # itself resolved nothing.
    assert looked_up == ["hooks.local.test", "hooks.local.test"]


NETWORKS = [
    ipaddress.ip_network(n)
    for n in (
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "100.64.0.0/10",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "0.0.0.0/8",
        "::1/128",
        "fe80::/10",
        "fc00::/7",
        "ff00::/8",
    )
]


@given(network=st.sampled_from(NETWORKS), offset=st.integers(min_value=0, max_value=2**128))
def test_every_address_of_a_non_public_network_is_refused(
    network: ipaddress.IPv4Network | ipaddress.IPv6Network, offset: int
) -> None:
    address = network[offset % network.num_addresses]
    assert non_public(address) is not None
    for public in ("93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"):
        assert non_public(ipaddress.ip_address(public)) is None
    if isinstance(address, ipaddress.IPv4Address):
        assert non_public(ipaddress.IPv6Address(f"::ffff:{address}")) is not None
