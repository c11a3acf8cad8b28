"""Writing rendered messages: JSON Lines or one RFC 5322 ``.eml`` file each.

Output never appears half-written under its final name: JSON Lines go to a
part file per worker, joined and renamed into place at the end; each
``.eml`` file is written beside its final name and renamed.

Nothing is written through a symbolic link found in the output folder (a
link planted at a temporary name, the write test or a final name would make
the writer truncate or overwrite the file it points to): every file written
is created anew (``O_CREAT | O_EXCL``, which never follows a link; an entry
left at that name is removed first, a link as a link), every file reopened
is opened with ``O_NOFOLLOW``, and a final name is taken by an atomic rename,
which replaces a link there instead of writing through it. ``.eml`` files
are written relative to the folder's own descriptor, so the folder cannot be
swapped for a link to another one during a run.

Writing has two steps. :meth:`MessageWriter.encode` turns one message into
the bytes that will be written, and is where a message that cannot be
written is refused (:class:`UnwritableMessage`): it runs while the
recipient renders, before the chunk's codes are recorded, so such a
recipient fails alone and consumes nothing. :meth:`MessageWriter.write`
then only stores bytes, after the codes are recorded.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from email.errors import MessageError
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.policy import default
from pathlib import Path
from typing import IO, Any, NamedTuple

import orjson

from promomail.delivery.message import build_email
from promomail.delivery.message import sender_address as delivery_sender
from promomail.pools import InvalidSetting, describe_character
from promomail.templating.choices import OutputFormat
from promomail.templating.errors import MailingError, UnwritableMessage
from promomail.templating.mailing.recipients import address_header

#: What a subject (a header line) may not hold: control characters but tab,
#: and everything :meth:`str.splitlines` breaks a line at.
_HEADER_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def _check_subject(message: RenderedMessage) -> None:
    subject = message.parts.get("subject")
    # Printable text (the common subject) holds nothing refused: one C call.
    if subject is not None and not subject.isprintable():
        bad = _HEADER_UNSAFE.search(subject)
        if bad is not None:
            char = bad.group()
            raise UnwritableMessage(
                f"the subject would hold {_describe(char)}; a subject is one line of text",
                char,
            )


def _describe(char: str) -> str:
    if "\ud800" <= char <= "\udfff":
        return f"a lone surrogate (U+{ord(char):04X}), which is not Unicode text"
    return describe_character(char)


def _not_unicode(exc: UnicodeEncodeError) -> UnwritableMessage:
    char = exc.object[exc.start : exc.start + 1]
    return UnwritableMessage(f"the message holds {_describe(char)}", char)


class RenderedMessage(NamedTuple):
    """One recipient's rendered message; a named tuple, as one is built per recipient."""

    mailing: str
    recipient: str
    to: str | None
    parts: dict[str, str]
    codes: dict[str, str | list[str]]
    #: The delivery reference (:func:`pools.after_sending.references.message_ref`).
    ref: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "mailing": self.mailing,
            "recipient": self.recipient,
            "ref": self.ref,
            "to": self.to,
            "parts": self.parts,
            "codes": self.codes,
        }


def _write_error(target: Path | str, exc: OSError) -> MailingError:
    return MailingError(f"cannot write output {target}: {exc.strerror or exc}")


#: A file the writer makes: new, and never reached through a link.
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _create_new(name: Path | str, *, dir_fd: int | None = None) -> int:
    """A descriptor of a file created anew at ``name`` (in ``dir_fd`` when given).

    Whatever is found at the name (a file a run left behind when it died, or
    a planted link) is removed first: removing a link leaves its target as
    it is, and ``O_EXCL`` refuses to create through one.
    """
    for _ in range(3):
        try:
            return os.open(name, _NEW_FILE, 0o666, dir_fd=dir_fd)
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=dir_fd)
    return os.open(name, _NEW_FILE, 0o666, dir_fd=dir_fd)


def _open_own(path: Path, flags: int) -> int:
    """Reopen a file this run made: never through a link, and only a regular file."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, f"{path.name} is no longer a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_test(folder: Path, name: str) -> None:
    """Create and remove an empty file: fails now what would fail after codes were issued."""
    probe = folder / name
    os.close(_create_new(probe))
    probe.unlink()


@dataclass(frozen=True)
class OutputTarget:
    """Where a mailing's messages go: a file, stdout (path None), or a folder."""

    format: OutputFormat
    path: Path | None

    def __post_init__(self) -> None:
        if self.format is OutputFormat.EML and self.path is None:
            raise InvalidSetting(
                "{format} eml writes a file per message: {out} must name a folder", "format", "out"
            )

    def prepare(self) -> None:
        """Fail early, before any code is consumed, when the target is unusable."""
        try:
            if self.format is OutputFormat.EML:
                assert self.path is not None
                sender_address()
                self.path.mkdir(parents=True, exist_ok=True)
                _write_test(self.path, ".promomail-write-test")
            elif self.path is not None:
                if self.path.is_dir():
                    # The final rename would fail only after every code was issued.
                    raise IsADirectoryError(errno.EISDIR, "Is a directory")
                self.path.parent.mkdir(parents=True, exist_ok=True)
                _write_test(self.path.parent, f".{self.path.name}.write-test")
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
                    with open(_open_own(part, os.O_RDONLY), "rb") as handle:
                        shutil.copyfileobj(handle, sys.stdout.buffer)
                sys.stdout.buffer.flush()
            else:
                # The first part becomes the output: only the others are copied
                # (inside the kernel), so one worker's run copies nothing.
                joined = self.path.with_name(f".{self.path.name}.{run}.joined")
                os.replace(parts[0], joined)
                out = _open_own(joined, os.O_WRONLY)
                try:
                    os.lseek(out, 0, os.SEEK_END)
                    for part in parts[1:]:
                        _append(part, out)
                    os.fsync(out)
                finally:
                    os.close(out)
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


def _append(source: Path, target: int) -> None:
    """Append the file ``source`` to the open descriptor ``target``, kernel-side when it can."""
    with open(_open_own(source, os.O_RDONLY), "rb", buffering=0) as handle:
        fd = handle.fileno()
        size = os.fstat(fd).st_size
        copy_range = getattr(os, "copy_file_range", None)
        while size > 0 and copy_range is not None:
            try:
                copied = copy_range(fd, target, size)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                break
            if copied == 0:
                break
            size -= copied
        # Whatever the kernel would not copy, from where it stopped.
        while block := os.read(fd, 1 << 20):
            view = memoryview(block)
            while view:
                view = view[os.write(target, view) :]


#: What a writer stores: (recipient id, the bytes :meth:`MessageWriter.encode` made).
Encoded = tuple[str, bytes]


class MessageWriter:
    def encode(self, message: RenderedMessage) -> bytes:
        """The bytes to write for ``message``, or UnwritableMessage; writes nothing."""
        raise NotImplementedError

    def write(self, messages: Sequence[Encoded]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Flush everything; raises MailingError if the data did not make it."""


#: The standard encoder, with orjson's separators: the fallback that names
#: what orjson refused.
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class JsonlWriter(MessageWriter):
    """Writes one part file; errors name ``shown``, the output the user asked for."""

    def __init__(self, path: Path, shown: Path | str | None = None) -> None:
        self.path = path
        self.shown = shown if shown is not None else path
        try:
            self._handle: IO[bytes] = os.fdopen(_create_new(path), "wb")
        except OSError as exc:
            raise _write_error(self.shown, exc) from exc

    def encode(self, message: RenderedMessage) -> bytes:
        _check_subject(message)
        try:
            # orjson quotes a message's text about five times faster than the
            # standard encoder, a fifth of a bare render per message.
            return orjson.dumps(message.as_dict(), option=orjson.OPT_APPEND_NEWLINE)
        except orjson.JSONEncodeError:
            pass  # a lone surrogate, say: the general encoder says which and where
        try:
            return (_dumps(message.as_dict()) + "\n").encode()
        except UnicodeEncodeError as exc:
            raise _not_unicode(exc) from exc
        except (TypeError, ValueError) as exc:
            raise UnwritableMessage(f"cannot be written as JSON: {exc}") from exc

    def write(self, messages: Sequence[Encoded]) -> None:
        try:
            self._handle.write(b"".join(data for _, data in messages))
        except OSError as exc:
            raise _write_error(self.shown, exc) from exc

    def close(self) -> None:
        try:
            self._handle.close()
        except OSError as exc:
            raise _write_error(self.shown, exc) from exc


_SAFE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")
#: Device names some file systems reserve whatever the extension.
_RESERVED_STEMS = frozenset(
    ["con", "prn", "aux", "nul"] + [f"{d}{i}" for d in ("com", "lpt") for i in range(1, 10)]
)


def eml_name(recipient_id: str) -> str:
    """A file name for a recipient id: readable, and distinct for distinct ids.

    Distinct also where the file system ignores case or sanitising would
    merge ids: an id that is already a safe lower-case name is used as it is;
    any other id gets a readable part and ``+`` and a hash of the exact id.
    ``+`` never appears in a name of the first kind, so the two kinds never
    meet, and the hash is lower-case hex, so case folding cannot merge two.
    """
    if (
        _SAFE_NAME.fullmatch(recipient_id) is not None
        and recipient_id.split(".", 1)[0] not in _RESERVED_STEMS
    ):
        return f"{recipient_id}.eml"
    # No leading dot: a hidden file would look missing from the folder.
    readable = _UNSAFE_NAME.sub("_", recipient_id)[:48].lstrip(".")
    digest = hashlib.blake2b(recipient_id.encode("utf-8", "surrogatepass"), digest_size=10)
    return f"{readable}+{digest.hexdigest()}.eml"


def sender_address() -> str:
    """The From of ``.eml`` messages (``PROMOMAIL_FROM``), or MailingError if unusable."""
    try:
        return delivery_sender()
    except ValueError as exc:
        raise MailingError(str(exc)) from exc


_read_headers = BytesHeaderParser(policy=default)


class EmlWriter(MessageWriter):
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.sender = sender_address()
        #: The folder's descriptor, opened at the first write.
        self._dir: int | None = None
        #: File name (case-folded) → the recipient written under it in this run.
        self._names: dict[str, str] = {}

    def encode(self, message: RenderedMessage) -> bytes:
        _check_subject(message)
        name = eml_name(message.recipient).lower()
        owner = self._names.get(name, message.recipient)
        if owner != message.recipient:
            # Never replace a message this run wrote for someone else.
            raise UnwritableMessage(
                f"its file name {eml_name(message.recipient)} is already taken in this run "
                f"by recipient {owner!r}"
            )
        try:
            data = self.to_email(message).as_bytes()
        except UnicodeEncodeError as exc:
            raise _not_unicode(exc) from exc
        except (MessageError, ValueError, TypeError, LookupError) as exc:
            raise UnwritableMessage(f"cannot be written as an e-mail: {exc}") from exc
        self._check_read_back(message, data)
        self._names[name] = message.recipient
        return data

    def _check_read_back(self, message: RenderedMessage, data: bytes) -> None:
        """The headers a mail reader will see are the ones meant (``=?…?=`` text is not)."""
        headers = _read_headers.parsebytes(data)
        meant = {
            "Subject": message.parts.get("subject", ""),
            "X-Promomail-Mailing": message.mailing,
            "X-Promomail-Recipient": message.recipient,
        }
        for name, value in meant.items():
            if str(headers[name]) != value:
                raise UnwritableMessage(
                    f"its {name} header would read back as {str(headers[name])!r}, not {value!r}"
                )
        if message.to is not None:
            written = [(a.display_name, a.addr_spec) for a in headers["To"].addresses]
            expected = [(a.display_name, a.addr_spec) for a in address_header(message.to).addresses]
            if written != expected:
                raise UnwritableMessage(f"its To header would not read back as {message.to!r}")

    def _folder(self) -> int:
        if self._dir is None:
            try:
                self._dir = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as exc:
                raise _write_error(self.folder, exc) from exc
        return self._dir

    def write(self, messages: Sequence[Encoded]) -> None:
        folder = self._folder()
        for recipient, data in messages:
            name = eml_name(recipient)
            temporary = f".{name}.tmp"
            try:
                with open(_create_new(temporary, dir_fd=folder), "wb") as handle:
                    handle.write(data)
                os.replace(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.unlink(temporary, dir_fd=folder)
                raise _write_error(self.folder / name, exc) from exc

    def close(self) -> None:
        if self._dir is not None:
            os.close(self._dir)
            self._dir = None

    def to_email(self, rendered: RenderedMessage) -> EmailMessage:
        # The one builder ``send`` uses too, so a JSON Lines output sent is this e-mail.
        return build_email(
            sender=self.sender,
            mailing=rendered.mailing,
            recipient=rendered.recipient,
            to=rendered.to,
            parts=rendered.parts,
            ref=rendered.ref or None,
        )
