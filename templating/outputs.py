"""Writing rendered messages: JSON Lines or one RFC 5322 ``.eml`` file each.

Output never appears half-written under its final name: JSON Lines go to a
part file per worker, joined and renamed into place at the end; each
``.eml`` file is written beside its final name and renamed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, make_msgid
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from templating.errors import MailingError

DEFAULT_SENDER = "promomail <noreply@localhost>"
#: RFC 5322 on disk: CRLF line ends, and bodies 7-bit clean (quoted-printable or
#: base64 for non-ASCII text) so a file is valid without 8BITMIME.
EML_POLICY = SMTP.clone(cte_type="7bit")


class OutputFormat(StrEnum):
    JSONL = "jsonl"
    EML = "eml"


@dataclass(frozen=True)
class RenderedMessage:
    mailing: str
    recipient: str
    to: str | None
    parts: dict[str, str]
    codes: dict[str, str | list[str]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "mailing": self.mailing,
            "recipient": self.recipient,
            "to": self.to,
            "parts": self.parts,
            "codes": self.codes,
        }


def _write_error(target: Path | str, exc: OSError) -> MailingError:
    return MailingError(f"cannot write output {target}: {exc.strerror or exc}")


@dataclass(frozen=True)
class OutputTarget:
    """Where a mailing's messages go: a file, stdout (path None), or a folder."""

    format: OutputFormat
    path: Path | None

    def __post_init__(self) -> None:
        if self.format is OutputFormat.EML and self.path is None:
            raise MailingError("--format eml needs --out DIR")

    def prepare(self) -> None:
        """Fail early, before any code is consumed, when the target is unusable."""
        try:
            if self.format is OutputFormat.EML:
                assert self.path is not None
                self.path.mkdir(parents=True, exist_ok=True)
                probe = self.path / ".promomail-write-test"
            elif self.path is not None:
                if self.path.is_dir():
                    # The final rename would fail only after every code was issued.
                    raise IsADirectoryError(errno.EISDIR, "Is a directory")
                self.path.parent.mkdir(parents=True, exist_ok=True)
                probe = self.path.with_name(f".{self.path.name}.write-test")
            else:
                return
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise _write_error(self.path or "-", exc) from exc

    def part_path(self, worker: int, run: str) -> Path:
        """Where one worker's JSON Lines go before they are joined."""
        folder = (
            self.path.parent if self.path is not None else Path(os.environ.get("TMPDIR", "/tmp"))
        )
        name = self.path.name if self.path is not None else "stdout"
        return folder / f".{name}.{run}.part{worker}"

    def open_writer(self, worker: int, run: str) -> MessageWriter:
        if self.format is OutputFormat.EML:
            assert self.path is not None
            return EmlWriter(self.path)
        return JsonlWriter(self.part_path(worker, run), shown=self.path or "-")

    def finish(self, workers: int, run: str) -> None:
        """Join the workers' JSON Lines into the final file (or stdout)."""
        if self.format is OutputFormat.EML:
            return
        parts = [self.part_path(i, run) for i in range(workers)]
        try:
            if self.path is None:
                for part in parts:
                    with part.open("rb") as handle:
                        shutil.copyfileobj(handle, sys.stdout.buffer)
                sys.stdout.buffer.flush()
            else:
                joined = self.path.with_name(f".{self.path.name}.{run}.joined")
                with joined.open("wb") as out:
                    for part in parts:
                        with part.open("rb") as handle:
                            shutil.copyfileobj(handle, out)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(joined, self.path)
        except OSError as exc:
            raise _write_error(self.path or "-", exc) from exc
        finally:
            self.discard(workers, run)

    def discard(self, workers: int, run: str) -> None:
        if self.format is OutputFormat.EML:
            return
        for i in range(workers):
            self.part_path(i, run).unlink(missing_ok=True)
        if self.path is not None:
            self.path.with_name(f".{self.path.name}.{run}.joined").unlink(missing_ok=True)


class MessageWriter:
    def write(self, messages: Sequence[RenderedMessage]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Flush everything; raises MailingError if the data did not make it."""


class JsonlWriter(MessageWriter):
    """Writes one part file; errors name ``shown``, the output the user asked for."""

    def __init__(self, path: Path, shown: Path | str | None = None) -> None:
        self.path = path
        self.shown = shown if shown is not None else path
        try:
            self._handle: IO[str] = path.open("w", encoding="utf-8")
        except OSError as exc:
            raise _write_error(self.shown, exc) from exc

    def write(self, messages: Sequence[RenderedMessage]) -> None:
        dumps = json.dumps
        try:
            self._handle.write(
                "".join(dumps(m.as_dict(), ensure_ascii=False) + "\n" for m in messages)
            )
        except OSError as exc:
            raise _write_error(self.shown, exc) from exc

    def close(self) -> None:
        try:
            self._handle.close()
        except OSError as exc:
            raise _write_error(self.shown, exc) from exc


_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


def eml_name(recipient_id: str) -> str:
    """A file name for a recipient id: readable, and distinct for distinct ids."""
    # No leading dot: a hidden file would look missing from the folder.
    readable = _UNSAFE_NAME.sub("_", recipient_id)[:80].lstrip(".")
    if readable == recipient_id:
        return f"{readable}.eml"
    digest = hashlib.blake2b(recipient_id.encode(), digest_size=6).hexdigest()
    return f"{readable}-{digest}.eml"


class EmlWriter(MessageWriter):
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.sender = os.environ.get("PROMOMAIL_FROM", DEFAULT_SENDER)

    def write(self, messages: Sequence[RenderedMessage]) -> None:
        for message in messages:
            target = self.folder / eml_name(message.recipient)
            temporary = target.with_name(f".{target.name}.tmp")
            try:
                temporary.write_bytes(self.to_email(message).as_bytes())
                os.replace(temporary, target)
            except OSError as exc:
                temporary.unlink(missing_ok=True)
                raise _write_error(target, exc) from exc

    def to_email(self, rendered: RenderedMessage) -> EmailMessage:
        email = EmailMessage(policy=EML_POLICY)
        email["From"] = self.sender
        if rendered.to:
            email["To"] = rendered.to
        email["Subject"] = rendered.parts.get("subject", "")
        email["Date"] = formatdate(localtime=False, usegmt=True)
        email["Message-ID"] = make_msgid(domain="promomail.local")
        email["X-Promomail-Mailing"] = rendered.mailing
        email["X-Promomail-Recipient"] = rendered.recipient
        text = rendered.parts.get("text", rendered.parts.get("body"))
        html = rendered.parts.get("html")
        if text is not None:
            email.set_content(text)
            if html is not None:
                email.add_alternative(html, subtype="html")
        elif html is not None:
            email.set_content(html, subtype="html")
        else:
            email.set_content("")
        return email
