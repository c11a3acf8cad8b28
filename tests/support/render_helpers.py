"""Helpers for mailing-render tests: files, renders, reading back what happened.

Also the entry points of rendering processes the tests start (a render to be
killed, mailings racing each other), so everything here stays importable by a
spawned child: module-level functions, picklable arguments.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, inspect, select, text

from promomail.pools.admin.lifecycle import PoolSettings, create_pool
from promomail.pools.codes.counts import PoolCounts, pool_counts
from promomail.pools.codes.generation import CodeSpec, generate_codes
from promomail.pools.store.models import Code, Issuance, IssuanceKind
from promomail.templating.choices import OnExhausted, OutputFormat
from promomail.templating.mailing.outputs import OutputTarget
from promomail.templating.mailing.recipients import Shard
from promomail.templating.mailing.request import RenderRequest, RenderSummary
from promomail.templating.mailing.run import render_mailing

TESTS_DIR = Path(__file__).resolve().parents[1]
SAMPLES = TESTS_DIR.parent / "sample_templates"

#: Shows the recipient's code in every part, so each part can be cross-checked.
EVERY_PART = """\
{% block subject %}Your code {{ client.promocode('spring') }}{% endblock %}
{% block text %}Hi {{ client.first_name }}, your code is {{ client.promocode('spring') }}.
{% endblock %}
{% block html %}<p>Hi {{ client.first_name }}, your code is
<b>{{ client.promocode('spring') }}</b>.</p>
{% endblock %}
"""


def pool_with_codes(engine: Engine, pool_id: str, count: int, **settings: Any) -> None:
    """An active pool holding ``count`` generated codes."""
    create_pool(
        engine,
        PoolSettings(name=pool_id, description=f"test pool {pool_id}", **settings),
        pool_id=pool_id,
        activate=True,
    )
    if count:
        generate_codes(engine, pool_id, count, CodeSpec(length=12))


def write_template(folder: Path, source: str, name: str = "message.j2") -> str:
    path = folder / name
    path.write_text(source, encoding="utf-8")
    return str(path)


def customer_ids(count: int, start: int = 0) -> list[str]:
    return [f"cust-{i:05d}" for i in range(start, start + count)]


def write_recipients(
    folder: Path, ids: Iterable[str], name: str = "recipients.csv", **extra: str
) -> str:
    """A CSV with id, email, first_name (and ``extra`` constant columns)."""
    path = folder / name
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "email", "first_name", *extra])
        for recipient_id in ids:
            writer.writerow(
                [
                    recipient_id,
                    f"{recipient_id}@example.com",
                    f"Name {recipient_id}",
                    *extra.values(),
                ]
            )
    return str(path)


def write_jsonl_recipients(folder: Path, records: Sequence[Mapping[str, Any]]) -> str:
    path = folder / "recipients.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def request_for(
    db_url: str,
    template: str,
    recipients: str,
    mailing: str,
    out: Path,
    *,
    fmt: OutputFormat = OutputFormat.JSONL,
    on_exhausted: OnExhausted = OnExhausted.STOP,
    workers: int = 1,
    shard: Shard | None = None,
    chunk_size: int = 50,
    variables: dict[str, str] | None = None,
    store_process: bool | None = None,
) -> RenderRequest:
    return RenderRequest(
        template_path=template,
        recipients_path=recipients,
        mailing_id=mailing,
        db_url=db_url,
        output=OutputTarget(fmt, out),
        on_exhausted=on_exhausted,
        workers=workers,
        shard=shard or Shard(),
        variables=variables or {},
        chunk_size=chunk_size,
        store_process=store_process,
    )


def render(
    db_url: str, template: str, recipients: str, mailing: str, out: Path, **options: Any
) -> RenderSummary:
    return render_mailing(request_for(db_url, template, recipients, mailing, out, **options))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@dataclass(frozen=True)
class IssuanceRow:
    customer_id: str
    pool_id: str
    mailing_id: str
    kind: str
    code_id: int
    code: str


def issuances(engine: Engine, mailing: str | None = None) -> list[IssuanceRow]:
    query = (
        select(
            Issuance.customer_id,
            Issuance.pool_id,
            Issuance.mailing_id,
            Issuance.kind,
            Issuance.code_id,
            Code.code,
        )
        .join(Code, Code.id == Issuance.code_id)
        .order_by(Issuance.id)
    )
    if mailing is not None:
        query = query.where(Issuance.mailing_id == mailing)
    with engine.connect() as conn:
        return [IssuanceRow(*row) for row in conn.execute(query)]


def initial_codes(engine: Engine, mailing: str, pool: str) -> dict[str, str]:
    """customer → code of the mailing's initial issuances from the pool (each customer once)."""
    rows = [
        r
        for r in issuances(engine, mailing)
        if r.pool_id == pool and r.kind == IssuanceKind.INITIAL
    ]
    found = {r.customer_id: r.code for r in rows}
    assert len(found) == len(rows), "a customer has two initial codes in one mailing"
    return found


def counts(engine: Engine, pool: str) -> PoolCounts:
    with engine.connect() as conn:
        return pool_counts(conn, [pool])[pool]


def full_snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the store (whatever tables there are)."""
    tables = sorted(inspect(engine).get_table_names())
    assert "issuances" in tables and "mailings" in tables
    snap: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for table in tables:
            rows = conn.execute(text(f'SELECT * FROM "{table}"'))
            snap[table] = sorted((tuple(row) for row in rows), key=repr)
    return snap


def wait_until(
    condition: Callable[[], bool], *, timeout: float = 60.0, what: str = "the condition"
) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)


def processes_with(variable: str, value: str) -> list[int]:
    """Processes whose environment sets ``variable`` to ``value`` (a render's whole tree)."""
    wanted = f"{variable}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environment = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue  # ended meanwhile, or not ours to read
        if wanted in environment:
            found.append(int(entry.name))
    return found


# -- entry points of rendering processes -------------------------------------------


def render_when_released(barrier: Any, request: RenderRequest) -> dict[str, Any]:
    """For racing.run_together: wait for the others, render, return the summary."""
    barrier.wait()
    return render_mailing(request).as_dict()


def paced_render(request_json: str, pause: float) -> None:
    """Render slowly (``pause`` seconds per recipient, while the chunk's codes are
    reserved), so that a test can kill the process in the middle of a mailing."""
    from promomail.templating.template.message import MessageTemplate

    original = MessageTemplate.render

    def slowed(self: MessageTemplate, *args: Any, **kwargs: Any) -> dict[str, str]:
        time.sleep(pause)
        return original(self, *args, **kwargs)

    MessageTemplate.render = slowed  # type: ignore[method-assign]
    options = json.loads(request_json)
    render(
        options["db_url"],
        options["template"],
        options["recipients"],
        options["mailing"],
        Path(options["out"]),
        chunk_size=options["chunk_size"],
        store_process=options["store_process"],
    )


def paced_render_command(
    db_url: str,
    template: str,
    recipients: str,
    mailing: str,
    out: Path,
    *,
    chunk_size: int,
    pause: float,
    store_process: bool | None = None,
) -> list[str]:
    """argv of a separate Python process running :func:`paced_render`."""
    options = json.dumps(
        {
            "db_url": db_url,
            "template": template,
            "recipients": recipients,
            "mailing": mailing,
            "out": str(out),
            "chunk_size": chunk_size,
            "store_process": store_process,
        }
    )
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "from tests.support.render_helpers import paced_render; "
        "paced_render(sys.argv[2], float(sys.argv[3]))"
    )
    return [sys.executable, "-c", script, str(TESTS_DIR.parent), options, str(pause)]
