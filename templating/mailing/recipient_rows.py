"""What both formats of recipients file share: the record read, the file opened,
the lines bounded, and the errors that name file, line and column."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from promomail.pools import LineTooLong, bounded_lines, id_problem, open_binary, open_text
from promomail.templating.errors import RecipientError

#: The columns of the recipient's id and address, found whatever their case.
ID_COLUMN = "id"
EMAIL_COLUMN = "email"

#: Characters one line of a recipients file may hold: a file with no line end
#: (or ``/dev/zero``) must not be read into memory whole.
MAX_LINE_CHARS = 1 << 20


class Recipient(NamedTuple):
    """One recipient as read: a tuple, the cheapest record to build per line."""

    id: str
    fields: dict[str, Any]
    line: int


OnRepeat = Callable[[str, int], None]


def _where(path: Path, line: int, column: str) -> str:
    return f"{path}, line {line}, {column}"


def _csv_column(index: int, names: Sequence[str]) -> str:
    name = names[index] if index < len(names) else ""
    return f"column {index + 1} ({name!r})" if name else f"column {index + 1}"


class _Tape:
    """The lines a reader consumed for the record it is reading, as the file has them.

    The reader marks where each record starts (:meth:`keep_last`), so the tape
    holds one record at a time, never a run of skipped ones.
    """

    __slots__ = ("_lines", "header")

    def __init__(self) -> None:
        self._lines: list[str] = []
        #: The CSV header's lines, once read.
        self.header = ""

    def wrap(self, lines: Iterator[str], *, one_per_record: bool = False) -> Iterator[str]:
        held = self._lines
        for line in lines:
            if one_per_record:
                held.clear()
            held.append(line)
            yield line

    def keep_last(self, count: int) -> None:
        """Forget every line but the last ``count`` (those of the record being read)."""
        if len(self._lines) > count:
            del self._lines[:-count]

    def take(self) -> str:
        text = "".join(self._lines)
        self._lines.clear()
        return text


def _open_bytes(path: Path) -> Any:
    try:
        return open_binary(path)
    except OSError as exc:
        raise RecipientError(f"{path}: cannot read recipients ({exc.strerror})") from exc


def _is_jsonl(path: Path) -> bool:
    return path.suffix.lower() in (".jsonl", ".ndjson", ".json")


def _open(path: Path) -> Any:
    # Undecodable bytes become lone surrogates, found per field so the error
    # can name line and column instead of a position in a decoder buffer.
    # A regular file only: a device or FIFO never ends, or is gone once read
    # (the preflight and every worker read the file).
    try:
        return open_text(path, encoding="utf-8-sig", errors="surrogateescape", newline="")
    except OSError as exc:
        raise RecipientError(f"{path}: cannot read recipients ({exc.strerror})") from exc


def _lines(handle: Any) -> Any:
    return bounded_lines(handle, MAX_LINE_CHARS)


def _too_long(path: Path, exc: LineTooLong) -> RecipientError:
    return RecipientError(
        f"{path}, line {exc.line}: longer than {exc.max_chars} characters; not a line of recipients"
    )


def _refuse_id(path: Path, line: int, column: str, recipient_id: str) -> None:
    problem = id_problem(recipient_id) or "not a usable id"
    raise RecipientError(f"{_where(path, line, column)}: {problem}")
