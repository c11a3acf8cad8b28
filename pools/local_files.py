"""Opening the files a user names, as what they seem: regular files, bounded, in bounds.

A path can name something that is no file of data: a device (``/dev/zero``
never ends, ``/dev/tty`` waits for a person), a FIFO (blocks until a writer
comes, and can be read once), a directory, or a symbolic link leading out
of a folder that was meant to contain it (a template folder holding a link
to ``/proc/self/environ``). Everything here opens the path first and then
looks at what was opened, so no swap between a check and the open can
slip past.

Failures are :class:`OSError` with a ``strerror`` that reads as the reason
(``a character device, not a regular file``), so callers that report
``cannot read (…)`` from an OSError keep working unchanged.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO, TextIO, cast

#: What each kind of non-regular file is called in an error.
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


class NotRegularFile(OSError):
    """The path names something other than a regular file."""


class FileTooLarge(OSError):
    """The file holds more than the reader takes."""


class OutsideFolder(OSError):
    """The path (through a symbolic link) leads outside the folder it must stay in."""


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "no file of data"


def _real_path(fd: int) -> Path | None:
    """Where an open descriptor really is (Linux), or None where that cannot be told."""
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return None


def _check_within(fd: int, path: Path, folder: Path) -> None:
    root = folder.resolve()
    real = _real_path(fd)
    if real is None:
        # Without /proc: the resolved path must be inside and be the very file opened.
        resolved = path.resolve()
        opened = os.fstat(fd)
        try:
            named = os.stat(resolved)
        except OSError:
            named = None
        if named is None or (named.st_dev, named.st_ino) != (opened.st_dev, opened.st_ino):
            raise OutsideFolder(errno.EXDEV, "the file changed while it was opened")
        real = resolved
    if not real.is_relative_to(root):
        raise OutsideFolder(
            errno.EXDEV, f"it leads outside {folder} (through a symbolic link, to {real})"
        )


def open_regular(path: str | os.PathLike[str], *, within: Path | None = None) -> int:
    """A read-only descriptor of ``path``, which must be a regular file.

    Opened without blocking (a FIFO with no writer would hang the open),
    then checked: what was opened must be a regular file and, with
    ``within``, really lie inside that folder whatever links led to it.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(errno.EINVAL, f"{_kind(mode)}, not a regular file")
        if within is not None:
            _check_within(fd, Path(path), within)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_bytes(
    path: str | os.PathLike[str], max_bytes: int, *, within: Path | None = None
) -> bytes:
    """The whole of a regular file of at most ``max_bytes`` bytes (else FileTooLarge)."""
    fd = open_regular(path, within=within)
    with open(fd, "rb", buffering=0) as handle:
        # One byte past the bound tells a file too large from one exactly at it;
        # the size stat gives is not trusted (files in /proc say 0).
        chunks: list[bytes] = []
        left = max_bytes + 1
        while left > 0 and (chunk := handle.read(min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
    if left <= 0:
        raise FileTooLarge(errno.EFBIG, f"larger than {max_bytes} bytes")
    return b"".join(chunks)


def read_text(path: str | os.PathLike[str], max_bytes: int, *, within: Path | None = None) -> str:
    """:func:`read_bytes` as UTF-8 text (UnicodeDecodeError when it is not)."""
    return read_bytes(path, max_bytes, within=within).decode("utf-8")


def open_text(path: str | os.PathLike[str], **options: Any) -> TextIO:
    """A regular file opened as text (``options`` as :func:`open` takes them)."""
    return cast(TextIO, open(open_regular(path), **options))


def open_binary(path: str | os.PathLike[str]) -> BinaryIO:
    """A regular file opened for reading bytes."""
    return open(open_regular(path), "rb")


class LineTooLong(Exception):
    """A line of a text file is longer than its reader takes."""

    def __init__(self, line: int, max_chars: int) -> None:
        super().__init__(f"line {line} is longer than {max_chars} characters")
        self.line = line
        self.max_chars = max_chars


def bounded_lines(handle: IO[str], max_chars: int) -> Iterator[str]:
    """The lines of ``handle``, none read whole past ``max_chars`` (then LineTooLong).

    A file iterated as it is reads each line whole, however long: one file
    with no line end would be read into memory at once. The bound counts a
    line with its end; a CR LF that the bound splits stays one line end.
    """
    readline = handle.readline
    number = 0
    #: A line cut by the bound right after its CR: its LF may follow.
    cut: str | None = None
    while line := readline(max_chars):
        if cut is not None:
            if line == "\n":
                yield cut + line
                cut = None
                continue
            yield cut
            cut = None
        number += 1
        if len(line) == max_chars:
            if line[-1] == "\r":
                cut = line
                continue
            # Exactly at the bound and ended by the file is still a whole line.
            if line[-1] != "\n" and readline(1):
                raise LineTooLong(number, max_chars)
        yield line
    if cut is not None:
        yield cut


@contextlib.contextmanager
def replaced_whole(target: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A file to write ``target`` into, which takes that name only once complete.

    Written next to ``target`` under a temporary name, synced and renamed
    into place, so a failure (or a kill) leaves no half-written file, and an
    older file at that path untouched. Created like any new file (the umask
    applies), unlike mkstemp's 0600. Failures are :class:`OSError`.
    """
    path = Path(target)
    temporary = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        with open(descriptor, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
