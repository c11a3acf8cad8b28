"""Delivery events from files: promomail's JSON Lines, and bounce messages
(``.eml`` files, an mbox, a Maildir) for self-hosted mail servers.

Reading yields events and problems in file order; a problem names the file,
the line or message, and the reason, and never stops the rest of the files.
"""

from __future__ import annotations

import mailbox
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from promomail.delivery import dsn, own
from promomail.delivery._reading import load_json
from promomail.delivery.events import DeliveryError, DeliveryEvent
from promomail.pools import Applied, EventOutcome

#: A line of promomail's own form is one small object.
MAX_LINE_BYTES = 64 * 1024
#: An mbox larger than this is not a bounce folder but a mail archive.
MAX_MBOX_BYTES = 1024 * 1024 * 1024
FILE_PROVIDERS = ("promomail", "dsn")


@dataclass(frozen=True)
class EventProblem:
    """An item of a file that gave no event: ``where`` is ``line 3``,
    ``message 2`` (an mbox), ``message KEY`` (a Maildir), or None for the file."""

    file: str
    where: str | None
    reason: str

    def __str__(self) -> str:
        place = f"{self.file}, {self.where}" if self.where else self.file
        return f"{place}: {self.reason}"


def default_provider(path: Path) -> str:
    """SPEC 8: ``promomail`` for ``.jsonl`` files, ``dsn`` otherwise."""
    return "promomail" if path.suffix.lower() == ".jsonl" else "dsn"


def read_event_files(
    paths: Iterable[str | Path], provider: str | None = None
) -> Iterator[DeliveryEvent | EventProblem]:
    """Every event in ``paths``, read as ``provider``'s form (by default by each
    file's kind), with a problem for each item that gives none."""
    for name in paths:
        path = Path(name)
        kind = provider or default_provider(path)
        if kind not in FILE_PROVIDERS:
            yield EventProblem(str(path), None, f"files hold no {kind!r} events")
        elif kind == "promomail":
            yield from _json_lines(path)
        else:
            yield from _bounces(path)


def _json_lines(path: Path) -> Iterator[DeliveryEvent | EventProblem]:
    try:
        stream = path.open("rb")
    except OSError as exc:
        yield EventProblem(str(path), None, exc.strerror or str(exc))
        return
    with stream:
        number = 0
        while line := stream.readline(MAX_LINE_BYTES + 1):
            number += 1
            where = f"line {number}"
            if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                _skip_rest_of_line(stream)
                yield EventProblem(str(path), where, f"longer than {MAX_LINE_BYTES} bytes")
                continue
            if number == 1:
                line = line.removeprefix(b"\xef\xbb\xbf")  # a BOM some editors write
            if not line.strip():
                continue
            try:
                yield own.parse_event(load_json(line, own.PROVIDER, what="the line"), "")
            except DeliveryError as exc:
                yield EventProblem(str(path), where, exc.detail)


@dataclass
class EventImport(Applied):
    """What importing event files did: each event applied, seen before or unmatched,
    and each item that gave no event."""

    problems: list[EventProblem] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        problems = [{"file": p.file, "where": p.where, "reason": p.reason} for p in self.problems]
        return {**super().as_dict(), "problems": problems}


def import_event_files(
    paths: Iterable[str | Path],
    provider: str | None,
    apply: Callable[[DeliveryEvent], EventOutcome],
) -> EventImport:
    """Apply every event of ``paths`` with ``apply`` (the store's, one transaction
    per event, answering ``applied``, ``duplicate`` or ``unmatched``), in file order.

    A problem never stops the rest: each event stands alone (applying it
    twice changes nothing), so a file fixed and imported again applies only
    what was missing.
    """
    report = EventImport()
    for item in read_event_files(paths, provider):
        if isinstance(item, EventProblem):
            report.problems.append(item)
            continue
        report.count(apply(item))
    return report


def _skip_rest_of_line(stream: BinaryIO) -> None:
    while chunk := stream.readline(MAX_LINE_BYTES):
        if chunk.endswith(b"\n"):
            return


def _bounces(path: Path) -> Iterator[DeliveryEvent | EventProblem]:
    if path.is_dir():
        if not all((path / sub).is_dir() for sub in ("cur", "new")):
            yield EventProblem(str(path), None, "a folder that is not a Maildir (no cur/ and new/)")
            return
        yield from _mailbox(path, mailbox.Maildir(path, factory=None, create=False), keyed=True)
        return
    try:
        with path.open("rb") as stream:
            start = stream.read(5)
            size = path.stat().st_size
            if start != b"From ":
                data = start + stream.read(dsn.MAX_MESSAGE_BYTES + 1 - len(start))
    except OSError as exc:
        yield EventProblem(str(path), None, exc.strerror or str(exc))
        return
    if start == b"From ":
        if size > MAX_MBOX_BYTES:
            yield EventProblem(str(path), None, f"an mbox larger than {MAX_MBOX_BYTES} bytes")
            return
        yield from _mailbox(path, mailbox.mbox(path, factory=None, create=False), keyed=False)
        return
    yield from _message(path, None, data)


def _mailbox(
    path: Path, box: mailbox.Maildir | mailbox.mbox, *, keyed: bool
) -> Iterator[DeliveryEvent | EventProblem]:
    try:
        yield from _messages(path, box, keyed=keyed)
    finally:
        box.close()


def _messages(
    path: Path, box: mailbox.Maildir | mailbox.mbox, *, keyed: bool
) -> Iterator[DeliveryEvent | EventProblem]:
    try:
        # A Maildir's keys are unique names in no order: sort them so a
        # re-import reports in the same order. An mbox's are its positions.
        keys = sorted(box.keys()) if keyed else list(box.keys())
    except OSError as exc:
        yield EventProblem(str(path), None, exc.strerror or str(exc))
        return
    for number, key in enumerate(keys, 1):
        where = f"message {key}" if keyed else f"message {number}"
        try:
            with box.get_file(key) as stream:
                data = stream.read(dsn.MAX_MESSAGE_BYTES + 1)
        except (OSError, KeyError) as exc:  # KeyError: a message removed while reading
            yield EventProblem(str(path), where, f"cannot be read: {exc}")
            continue
        yield from _message(path, where, data)


def _message(path: Path, where: str | None, data: bytes) -> Iterator[DeliveryEvent | EventProblem]:
    try:
        yield from dsn.parse_bounce(data)
    except DeliveryError as exc:
        yield EventProblem(str(path), where, exc.detail)


__all__ = [
    "FILE_PROVIDERS",
    "EventImport",
    "EventProblem",
    "default_provider",
    "import_event_files",
    "read_event_files",
]
