"""The messages to send: a render's output, read back and checked whole before any is sent.

A render writes JSON Lines (one message object a line) or a folder of
``.eml`` files. :func:`read_output` reads all of it once and refuses, naming
the file and line, anything that is not this version's render output for
this mailing: a line that is not a message object, a message of another
mailing, a message without a delivery reference (a file written before
references existed: render it again), a reference or recipient seen twice.
Only then does it hand out the messages, reading the output a second time,
so a file of a million messages is never held in memory.

A JSON Lines message is built into the same e-mail the ``.eml`` writer makes
(:func:`delivery.message.build_email`, written by its fast twin
:func:`~delivery.message.build_bytes`). An ``.eml`` file is sent byte for
byte as the render wrote it, with any of the reference headers it lacks put
in front.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.errors import MessageError
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import default
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import orjson

from promomail.delivery.message import (
    MAILING_HEADER,
    RECIPIENT_HEADER,
    REF_HEADER,
    REF_PATTERN,
    build_bytes,
    ref_headers,
    sender_address,
)
from promomail.pools.addresses import envelope_address, one_address
from promomail.pools.errors import PromomailError
from promomail.pools.identifiers import describe_unsafe, id_problem
from promomail.pools.sharding import in_shard

#: What a subject (one header line) may not hold, as the render's writer refuses it.
_HEADER_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_read_headers = BytesHeaderParser(policy=default)


class OutgoingError(PromomailError):
    """The file or folder is not this mailing's render output; nothing was sent."""


class ShardOf(Protocol):
    """Shard ``index`` (1-based) of ``count``; the render's ``Shard`` is one."""

    @property
    def index(self) -> int: ...
    @property
    def count(self) -> int: ...


class OutputKind(StrEnum):
    JSONL = "jsonl"
    EML = "eml"


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One recipient's message of the mailing, ready to be built and sent."""

    mailing: str
    recipient: str
    ref: str
    #: The ``To`` as rendered, or None: a message without one is not sent.
    to: str | None
    #: Where it was read (``FILE, line N`` or the ``.eml`` file), for messages.
    where: str
    #: The envelope sender (``PROMOMAIL_FROM``'s bare address).
    sender: str
    _make: Callable[[], bytes] = field(repr=False, compare=False)

    def build(self) -> bytes:
        """The message as it goes to the relay (RFC 5322, CRLF, with the reference headers)."""
        return self._make()

    @property
    def envelope_to(self) -> str:
        """The bare address for ``RCPT TO``."""
        if self.to is None:
            raise ValueError(f"{self.where}: the message has no address")
        return envelope_address(self.to)


@dataclass(frozen=True)
class RenderOutput:
    """A render's output that passed the whole check; iterate for the shard's messages."""

    path: Path
    kind: OutputKind
    mailing: str
    sender: str
    #: Messages of the mailing in the output, in every shard.
    total: int
    shard_index: int = 1
    shard_count: int = 1
    #: For ``.eml``: (file, recipient, ref, to, headers to add) of the shard, in order.
    _files: tuple[tuple[Path, str, str, str | None, bytes], ...] = field(default=(), repr=False)

    def __iter__(self) -> Iterator[OutgoingMessage]:
        bare = envelope_address(self.sender)
        if self.kind is OutputKind.EML:
            for path, recipient, ref, to, extra in self._files:
                yield OutgoingMessage(
                    self.mailing, recipient, ref, to, str(path), bare, _eml_maker(path, extra)
                )
            return
        for line, record in _jsonl_records(self.path, self.mailing):
            if in_shard(record["recipient"], self.shard_index, self.shard_count):
                yield self._jsonl_message(line, record, bare)

    def _jsonl_message(self, line: int, record: dict[str, Any], bare: str) -> OutgoingMessage:
        sender = self.sender

        def make() -> bytes:
            return build_bytes(
                sender=sender,
                mailing=record["mailing"],
                recipient=record["recipient"],
                to=record["to"],
                parts=record["parts"],
                ref=record["ref"],
            )

        return OutgoingMessage(
            record["mailing"],
            record["recipient"],
            record["ref"],
            record["to"],
            f"{self.path}, line {line}",
            bare,
            make,
        )


def _eml_maker(path: Path, extra: bytes) -> Callable[[], bytes]:
    def make() -> bytes:
        try:
            return extra + path.read_bytes()
        except OSError as exc:
            raise OutgoingError(f"{path}: cannot be read: {exc.strerror or exc}") from exc

    return make


def read_output(path: str | Path, mailing: str, *, shard: ShardOf | None = None) -> RenderOutput:
    """Check the whole render output at ``path`` for ``mailing``; OutgoingError if it is not."""
    path = Path(path)
    try:
        sender = sender_address()
    except ValueError as exc:
        raise OutgoingError(str(exc)) from exc
    index, count = (shard.index, shard.count) if shard is not None else (1, 1)
    if path.is_dir():
        files = _check_eml_folder(path, mailing)
        kept = tuple(f for f in files if in_shard(f[1], index, count))
        return RenderOutput(path, OutputKind.EML, mailing, sender, len(files), index, count, kept)
    if not path.exists():
        raise OutgoingError(f"{path}: no such file or folder")
    refs: set[str] = set()
    recipients: set[str] = set()
    total = 0
    for line, record in _jsonl_records(path, mailing):
        _unique(path, f"line {line}", record["ref"], record["recipient"], refs, recipients)
        total += 1
    return RenderOutput(path, OutputKind.JSONL, mailing, sender, total, index, count)


def _unique(
    path: Path, where: str, ref: str, recipient: str, refs: set[str], recipients: set[str]
) -> None:
    if ref in refs:
        raise OutgoingError(
            f"{path}, {where}: delivery reference {ref!r} appears twice; nothing was sent"
        )
    if recipient in recipients:
        raise OutgoingError(
            f"{path}, {where}: recipient {recipient!r} appears twice; nothing was sent"
        )
    refs.add(ref)
    recipients.add(recipient)


# -- JSON Lines ----------------------------------------------------------------------


def _jsonl_records(path: Path, mailing: str) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise OutgoingError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    with handle:
        line = 0
        try:
            for line, raw in enumerate(handle, start=1):
                yield line, _checked(path, line, raw, mailing)
        except OSError as exc:
            raise OutgoingError(
                f"{path}, line {line + 1}: cannot be read: {exc.strerror or exc}"
            ) from exc


def _checked(path: Path, line: int, raw: bytes, mailing: str) -> dict[str, Any]:
    def refuse(reason: str) -> OutgoingError:
        return OutgoingError(f"{path}, line {line}: {reason}; nothing was sent")

    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise refuse(f"not a rendered message (not JSON: {exc})") from None
    if not isinstance(record, dict):
        raise refuse("not a rendered message (not a JSON object)")
    for key, kinds in _FIELDS.items():
        if key not in record:
            raise refuse(f"not a rendered message (no {key!r})")
        if not isinstance(record[key], kinds):
            raise refuse(f"not a rendered message ({key!r} is {_kind(record[key])})")
    if record["mailing"] != mailing:
        raise refuse(f"a message of mailing {record['mailing']!r}, not {mailing!r}")
    problem = id_problem(record["recipient"])
    if problem is not None:
        raise refuse(f"recipient {record['recipient']!r}: {problem}")
    if "ref" not in record:
        raise refuse(
            "the message has no delivery reference ('ref'): the file was rendered by a "
            "promomail that did not write them; render the mailing again"
        )
    ref = record["ref"]
    if not isinstance(ref, str) or REF_PATTERN.fullmatch(ref) is None:
        raise refuse(f"{ref!r} is not a delivery reference (1 to 64 of A-Z a-z 0-9 _ -)")
    for name, value in record["parts"].items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise refuse(f"part {name!r} is {_kind(value)}, not text")
    subject = record["parts"].get("subject")
    if subject is not None and (bad := _HEADER_UNSAFE.search(subject)) is not None:
        raise refuse(f"the subject holds {describe_unsafe(bad.group())}")
    to = record["to"]
    if to is not None:
        try:
            record["to"] = one_address(to)
        except ValueError as exc:
            raise refuse(f"'to': {exc}") from None
    return record


_FIELDS: dict[str, type | tuple[type, ...]] = {
    "mailing": str,
    "recipient": str,
    "to": (str, type(None)),
    "parts": dict,
    "codes": dict,
}


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


# -- .eml folders --------------------------------------------------------------------


def _check_eml_folder(folder: Path, mailing: str) -> list[tuple[Path, str, str, str | None, bytes]]:
    try:
        names = sorted(
            entry for entry in folder.iterdir() if entry.suffix == ".eml" and entry.name[0] != "."
        )
    except OSError as exc:
        raise OutgoingError(f"{folder}: cannot be read: {exc.strerror or exc}") from exc
    if not names:
        raise OutgoingError(
            f"{folder}: no .eml files: not a render's output folder; nothing was sent"
        )
    refs: set[str] = set()
    recipients: set[str] = set()
    files = []
    for path in names:
        recipient, ref, to, extra = _check_eml(path, mailing)
        _unique(path, "header", ref, recipient, refs, recipients)
        files.append((path, recipient, ref, to, extra))
    return files


def _check_eml(path: Path, mailing: str) -> tuple[str, str, str | None, bytes]:
    """(recipient, ref, to, headers to add) of one ``.eml`` file, or OutgoingError."""

    def refuse(reason: str) -> OutgoingError:
        return OutgoingError(f"{path}: {reason}; nothing was sent")

    try:
        headers = _read_headers.parsebytes(path.read_bytes())
    except OSError as exc:
        raise OutgoingError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    try:
        found_mailing = _one(headers, MAILING_HEADER, refuse)
        recipient = _one(headers, RECIPIENT_HEADER, refuse)
        ref = _one(headers, REF_HEADER, refuse)
        to_header = headers.get_all("To") or []
        texts = [str(value) for value in to_header]
    except (MessageError, ValueError, LookupError, AttributeError, TypeError) as exc:
        raise refuse(f"its headers cannot be read ({exc})") from None
    if found_mailing is None or recipient is None:
        raise refuse(f"not a rendered message (no {MAILING_HEADER} and {RECIPIENT_HEADER})")
    if found_mailing != mailing:
        raise refuse(f"a message of mailing {found_mailing!r}, not {mailing!r}")
    problem = id_problem(recipient)
    if problem is not None:
        raise refuse(f"recipient {recipient!r}: {problem}")
    if ref is None:
        raise refuse(
            f"the message has no delivery reference ({REF_HEADER}): it was rendered by a "
            "promomail that did not write them; render the mailing again"
        )
    if REF_PATTERN.fullmatch(ref) is None:
        raise refuse(f"{ref!r} is not a delivery reference (1 to 64 of A-Z a-z 0-9 _ -)")
    if len(texts) > 1:
        raise refuse("it has more than one To header")
    try:
        to = one_address(texts[0]) if texts else None
    except ValueError as exc:
        raise refuse(f"To: {exc}") from None
    missing = []
    for name, value in ref_headers(ref)[1:]:
        present = headers.get_all(name) or []
        if not present:
            missing.append(f"{name}: {value}\r\n")
        elif [str(v).strip() for v in present] != [value]:
            raise refuse(f"its {name} header does not carry its reference {ref!r}")
    return recipient, ref, to, "".join(missing).encode()


def _one(headers: Message, name: str, refuse: Callable[[str], OutgoingError]) -> str | None:
    values = headers.get_all(name) or []
    if len(values) > 1:
        raise refuse(f"it has {len(values)} {name} headers")
    return str(values[0]).strip() if values else None
