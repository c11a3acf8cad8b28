"""Reminder segments on ``GET /api/v1/segments``, against a real ``promomail serve``.

The pages give what ``promomail segment`` prints for the same filters; bad
filters are problems naming them; a token limited to some pools does not
see the others. On SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from promomail.pools.store.clock import utcnow
from tests.support.cli_helpers import Cli
from tests.support.service_helpers import (
    Server,
    Store,
    create_pool_over_api,
    problem,
    token,
)

SEGMENTS = "/api/v1/segments"


def _pages(client: httpx.Client, **params: Any) -> list[str]:
    items: list[str] = []
    after: str | None = None
    while True:
        page = client.get(SEGMENTS, params={**params, **({"after": after} if after else {})})
        assert page.status_code == 200, page.text
        items.extend(page.json()["items"])
        after = page.json()["next"]
        if after is None:
            return items


def _render(store: Store, folder: Path, pool: str, mailing: str, ids: list[str]) -> None:
    template = folder / f"{pool}.j2"
    template.write_text(f"{{{{ client.promocode('{pool}') }}}}", encoding="utf-8")
    recipients = folder / f"{mailing}.csv"
    recipients.write_text("id\n" + "".join(f"{i}\n" for i in ids), encoding="utf-8")
    Cli(store.url).ok(
        "render", str(template), "--recipients", str(recipients), "--mailing", mailing,
        "--out", str(folder / f"{mailing}.jsonl"),
    )  # fmt: skip


def test_reminder_segments_page_as_the_command_lists_them(
    served: tuple[Store, Server], tmp_path: Path
) -> None:
    store, server = served
    run = Cli(store.url)
    ids = [f"r-{i:02}" for i in range(7)]
    now = utcnow()
    with server.client(token(store, "admin")) as admin:
        create_pool_over_api(admin, "remind")
        create_pool_over_api(admin, "remind-other", ["O-1"])
        csv_text = "code,available_till\n" + "".join(
            f"R-{i},{(now + timedelta(days=2 + 10 * i)).isoformat(timespec='seconds')}\n"
            for i in range(7)
        )
        uploaded = admin.post(
            "/api/v1/pools/remind/codes",
            content=csv_text.encode(),
            headers={"Content-Type": "text/csv"},
        )
        assert uploaded.status_code == 200, uploaded.text
    _render(store, tmp_path, "remind", "remind-1", ids)
    _render(store, tmp_path, "remind-other", "other-1", ["r-00"])
    code = _codes(run, ids)
    used = ["r-01", "r-04"]
    with server.client(token(store, "redeem")) as checkout:
        for customer in used:
            redeemed = checkout.post(
                "/api/v1/redemptions",
                json={"code": code[customer], "customer": customer, "order": f"o-{customer}"},
            )
            assert redeemed.status_code == 201, redeemed.text

    with server.client(token(store, "read")) as reader:
        for filters, options in (
            ({"unredeemed_from": "remind"}, ["--unredeemed-from", "remind"]),
            (
                {"unredeemed_from": "remind", "expiring_within": "3w"},
                ["--unredeemed-from", "remind", "--expiring-within", "3w"],
            ),
            (
                {"unredeemed_from": ["remind", "remind-other"], "max_issued": 1},
                ["--unredeemed-from", "remind", "--unredeemed-from", "remind-other",
                 "--max-issued", "1"],
            ),
        ):  # fmt: skip
            listed = run.json("segment", *options)["ids"]
            assert _pages(reader, limit=2, **filters) == listed, filters
        # R-i ends 2 + 10 i days from now.
        ends = {c: 2 + 10 * int(value.removeprefix("R-")) for c, value in code.items()}
        for weeks in (1, 3, 5):
            expected = [c for c in ids if c not in used and ends[c] <= 7 * weeks]
            got = _pages(reader, unredeemed_from="remind", expiring_within=f"{weeks}w")
            assert got == expected, weeks
        assert _pages(reader, unredeemed_from="remind") == [c for c in ids if c not in used]

        detail = problem(reader.get(SEGMENTS, params={"expiring_within": "7d"}), 422)["detail"]
        assert detail.startswith("expiring_within narrows a reminder segment")
        bad = {"unredeemed_from": "remind", "expiring_within": "7 days"}
        assert (
            "'7 days' is not an expiry window"
            in problem(reader.get(SEGMENTS, params=bad), 422)["detail"]
        )
        unknown = reader.get(SEGMENTS, params={"unredeemed_from": "nope"})
        assert problem(unknown, 404)["detail"] == "pool 'nope' does not exist"

    with server.client(token(store, "read", ["remind-other"])) as limited:
        assert _pages(limited, unredeemed_from="remind-other") == ["r-00"]
        hidden = limited.get(SEGMENTS, params={"unredeemed_from": "remind"})
        assert problem(hidden, 404)["detail"] == "pool 'remind' does not exist"


def _codes(run: Cli, ids: list[str]) -> dict[str, str]:
    """Each customer's code from the remind pool."""
    return {
        c: i["code"]
        for c in ids
        for i in run.json("customer", c)["issuances"]
        if i["pool"] == "remind"
    }
