"""A real ``promomail serve``: templates keep their time bound, the checkout keeps its threads.

The preview page checks and renders a template in the server's template
processes: the render's timer works there (it does not in the threads that
answer requests), a preview storm takes none of the threads the checkout
needs, and SIGTERM still stops the server within its grace period.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from promomail.service.preview import BUSY, WAIT_SECONDS
from promomail.service.server import GRACE_SECONDS
from promomail.templating.mailing.isolated import JOB_SECONDS
from promomail.templating.template.render_limits import LIMITS
from tests.support.service_helpers import (
    Server,
    Store,
    create_pool_over_api,
    open_store,
    start_server,
    stop_cleanly,
    token,
)

#: Within the work budget (comparing two long texts costs no unit): only the clock stops it.
SLOW = (
    "{% set s = 'x' * 100000 %}{% set a = s ~ s ~ s ~ s ~ 'a' %}{% set b = s ~ s ~ s ~ s ~ 'b' %}"
    "{% for i in range(10000) %}{% for j in range(10000) if a > b %}{% endfor %}{% endfor %}done"
)
TIMED_OUT = f"rendering took longer than {LIMITS.render_seconds:g} s"
#: The answer when the process itself had to be killed (the timer was late).
KILLED = f"took longer than {JOB_SECONDS:g} s to check and render; it was stopped"
#: More slow previews at once than the server has threads for requests (32).
STORM = 36
#: What one preview may take at most: waiting for a process, then its job.
PREVIEW_BOUND = WAIT_SECONDS + JOB_SECONDS + 15
#: A redemption answered later than this was stalled behind the previews.
REDEMPTION_BOUND = 5.0
POLL_SECONDS = 0.02


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    yield from open_store(request.param, tmp_path)


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "slow.j2").write_text(SLOW, encoding="utf-8")
    (folder / "fast.j2").write_text("Hello {{ client.id }}", encoding="utf-8")
    return folder


def _preview(server: Server, template: str) -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=PREVIEW_BOUND + 30) as client:
        return client.get("/preview/result", params={"template": template, "fields": "id=ann"})


def test_slow_previews_are_stopped_and_never_stall_redemptions(
    store: Store, templates: Path
) -> None:
    server = start_server(store.url, "--templates", str(templates))
    try:
        admin = token(store, "admin")
        codes = [f"STORM-{i:03}" for i in range(200)]
        with server.client(admin) as client:
            create_pool_over_api(client, "storm", codes)
        answers: list[tuple[float, httpx.Response]] = []

        def preview() -> None:
            started = time.monotonic()
            response = _preview(server, "slow.j2")
            answers.append((time.monotonic() - started, response))

        storm = [threading.Thread(target=preview) for _ in range(STORM)]
        for thread in storm:
            thread.start()
        redeemed = 0
        with server.client(token(store, "redeem")) as checkout:
            # The checkout goes on for as long as the storm lasts.
            while any(thread.is_alive() for thread in storm) and redeemed < len(codes):
                started = time.monotonic()
                response = checkout.post(
                    "/api/v1/redemptions",
                    json={
                        "code": codes[redeemed],
                        "customer": "c",
                        "order": uuid.uuid4().hex,
                        "pool": "storm",
                    },
                )
                took = time.monotonic() - started
                assert response.status_code == 201, response.text
                assert took < REDEMPTION_BOUND, f"a redemption waited {took:.1f} s for a thread"
                redeemed += 1
        for thread in storm:
            thread.join()
    finally:
        stop_cleanly(server)
    assert redeemed >= 1
    assert len(answers) == STORM
    stopped = 0
    for took, response in answers:
        assert response.status_code == 200, response.text
        assert took < PREVIEW_BOUND
        assert any(answer in response.text for answer in (TIMED_OUT, KILLED, BUSY)), response.text
        stopped += TIMED_OUT in response.text or KILLED in response.text
    assert stopped >= 1


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _template_processes(pid: int) -> list[int]:
    """The server's template processes (its children but multiprocessing's resource tracker)."""
    found = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in children.read_text().split():
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue  # it ended meanwhile
            if b"spawn_main" in command:
                found.append(int(child))
    return found


def _busy_seconds(pid: int) -> float:
    """CPU seconds the server and its template processes have used so far."""
    total = _cpu_seconds(pid)
    for child in _template_processes(pid):
        try:
            total += _cpu_seconds(child)
        except OSError:
            continue
    return total


def _wait_until_rendering(server: Server, before: float) -> None:
    """Until the server has spent CPU time since ``before``: the slow render runs."""
    deadline = time.monotonic() + 60
    while _busy_seconds(server.process.pid) - before < 0.5:
        assert time.monotonic() < deadline, "the server did not start rendering"
        time.sleep(POLL_SECONDS)


def test_sigterm_during_a_slow_preview_stops_promptly_with_status_0(
    store: Store, templates: Path
) -> None:
    server = start_server(store.url, "--templates", str(templates))
    try:
        # A first preview starts the template process the slow one will use.
        assert "Hello ann" in _preview(server, "fast.j2").text
        workers = _template_processes(server.process.pid)
        before = _busy_seconds(server.process.pid)
        answers: list[httpx.Response] = []
        slow = threading.Thread(target=lambda: answers.append(_preview(server, "slow.j2")))
        slow.start()
        _wait_until_rendering(server, before)
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        status = server.process.wait(GRACE_SECONDS + 10)
        took = time.monotonic() - started
        slow.join()
    finally:
        if server.process.poll() is None:
            server.process.kill()
        server.stop()
    assert status == 0, server.stderr
    assert "Traceback" not in server.stderr, server.stderr
    assert took < GRACE_SECONDS + 5
    # The request in flight was answered: its render stopped by the timer.
    [answer] = answers
    assert answer.status_code == 200
    assert TIMED_OUT in answer.text
    # The server stopped its template processes before it exited.
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]
