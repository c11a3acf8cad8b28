"""``check`` and ``preview``: looking at a template without writing anything."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from promomail.pools import (
    PoolStatus,
    PromomailError,
    load_pool,
    not_issuing,
    read_transaction,
    told_where,
)
from promomail.templating.errors import InvalidTemplate, RecipientFailed
from promomail.templating.mailing.columns import check_columns
from promomail.templating.mailing.recipients import Recipient, read_recipients
from promomail.templating.mailing.sources import PreviewCodes
from promomail.templating.template.client import Client
from promomail.templating.template.files import read_template
from promomail.templating.template.message import MessageTemplate


@dataclass(frozen=True)
class Problem:
    line: int | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "message": self.message}


@dataclass(frozen=True)
class PoolUse:
    ref: str
    usage: str  # "issue" or "reissue"
    line: int
    pool_id: str | None = None
    status: str | None = None
    available: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "pool": self.ref,
            "id": self.pool_id,
            "usage": self.usage,
            "line": self.line,
            "status": self.status,
            "available": self.available,
        }


@dataclass
class CheckReport:
    template: str
    parts: tuple[str, ...] = ()
    pools: list[PoolUse] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    #: Partials included or imported, from the template's own folder.
    partials: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    #: Whether the template compiled: without that its parts, pools and
    #: columns are unknown (not empty), and there is nothing to show of them.
    compiled: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem_lines(self) -> list[str]:
        """Each problem as one line naming the template and, when known, the line."""
        return [
            f"{self.template}, line {p.line}: {p.message}"
            if p.line
            else f"{self.template}: {p.message}"
            for p in self.problems
        ]

    def failure(self) -> str | None:
        """The one-line verdict of a failed check: the first problem, and how many more."""
        lines = self.problem_lines()
        if not lines:
            return None
        more = len(lines) - 1
        if more == 0:
            return lines[0]
        return f"{lines[0]} (and {more:,} more problem{'' if more == 1 else 's'})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "template": self.template,
            "ok": self.ok,
            "compiled": self.compiled,
            "parts": list(self.parts),
            "pools": [p.as_dict() for p in self.pools],
            "columns": self.columns,
            "partials": self.partials,
            "problems": [p.as_dict() for p in self.problems],
        }


def check_template(
    engine: Engine,
    template_path: str,
    recipients_path: str | None = None,
    *,
    within: Path | None = None,
) -> CheckReport:
    """The ``check`` report; ``within``: the folder the template file must really be in."""
    name, source = read_template(template_path, within=within)
    report = CheckReport(name)
    try:
        template = MessageTemplate(name, source)
    except InvalidTemplate as exc:
        report.problems.append(_problem(name, exc))
        return report
    report.compiled = True
    usage = template.usage
    report.parts = template.parts
    report.columns = list(usage.columns)
    report.partials = usage.partials
    for call in usage.non_literal:
        report.problems.append(
            Problem(call.line, f"client.{call.function}() needs the pool as a string literal")
        )
    uses = [(ref, "issue", line) for ref, line in usage.issues_from.items()]
    uses += [(ref, "reissue", line) for ref, line in usage.reissues_from.items()]
    with read_transaction(engine) as conn:
        for ref, kind, line in uses:
            try:
                pool = load_pool(conn, ref, allow_name=True, with_counts=True)
            except PromomailError as exc:
                report.pools.append(PoolUse(ref, kind, line))
                report.problems.append(Problem(line, told_where(exc, engine)))
                continue
            report.pools.append(
                PoolUse(ref, kind, line, pool.id, pool.status, pool.counts.available)
            )
            if kind == "issue" and pool.status != PoolStatus.ACTIVE:
                report.problems.append(Problem(line, not_issuing(pool.id, pool.status)))
            elif kind == "issue" and pool.counts.available == 0:
                report.problems.append(
                    Problem(
                        line,
                        f"pool {pool.id!r} has no available codes (add some: codes upload "
                        f"{pool.id} FILE, or codes generate {pool.id})",
                    )
                )
    if recipients_path is not None:
        columns = check_columns(name, usage, recipients_path)
        report.problems.extend(Problem(m.line, columns.problem(m)) for m in columns.missing)
    return report


def _problem(name: str, exc: InvalidTemplate) -> Problem:
    """A problem of the template itself, or of one of its partials (named)."""
    if exc.template == name:
        return Problem(exc.line, exc.reason)
    return Problem(None, str(exc))


@dataclass(frozen=True)
class Preview:
    recipient: str
    parts: dict[str, str] | None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"recipient": self.recipient, "parts": self.parts, "error": self.error}


def preview_recipients(
    recipients_path: str | None, single: Mapping[str, str] | None, limit: int
) -> Iterable[Recipient]:
    if recipients_path is not None:
        return islice(read_recipients(recipients_path), limit)
    fields = dict(single or {})
    fields.setdefault("id", "preview")
    return [Recipient(fields["id"], fields, 0)]


def preview(
    engine: Engine,
    template_path: str,
    recipients: Iterable[Recipient],
    *,
    part: str | None = None,
    variables: Mapping[str, Any] | None = None,
    within: Path | None = None,
) -> list[Preview]:
    """Render without writing: placeholders for new codes, real last codes.

    ``within``: the folder the template file must really be in (see :func:`read_template`).
    """
    template = MessageTemplate.from_file(template_path, within=within)
    if part is not None and part not in template.parts:
        raise InvalidTemplate(
            f"has no part {part!r} (parts: {', '.join(template.parts)})", template=template.name
        )
    usage = template.usage
    refs: dict[str, str] = {}
    with read_transaction(engine) as conn:
        for ref in usage.pool_refs:
            try:
                refs[ref] = load_pool(conn, ref, allow_name=True).id
            except PromomailError:
                refs[ref] = ref
    source = PreviewCodes(engine, refs)
    previews = []
    for recipient in recipients:
        client = Client(recipient.id, recipient.fields, source)
        try:
            parts = template.render({**(variables or {}), "client": client}, only=part)
        except RecipientFailed as exc:
            previews.append(Preview(recipient.id, None, str(exc)))
            continue
        previews.append(Preview(recipient.id, parts))
    return previews
