"""Reading a JSON Lines recipients file: flat records of JSON scalars, every key once."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from promomail.pools import (
    MAX_ID_LENGTH,
    UNSAFE_ID,
    UNSAFE_VALUE,
    LineTooLong,
    TableError,
    describe_unsafe,
    find_columns,
)
from promomail.templating.errors import RecipientError
from promomail.templating.mailing.recipient_rows import (
    EMAIL_COLUMN,
    ID_COLUMN,
    Recipient,
    _lines,
    _open,
    _refuse_id,
    _Tape,
    _too_long,
    _where,
)


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return record


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


_decoder = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_no_constant)
_SCALARS = (str, int, float, bool, type(None))


def _read_jsonl(path: Path, tape: _Tape | None = None) -> Iterator[Recipient]:
    with _open(path) as handle:
        lines = _lines(handle) if tape is None else tape.wrap(_lines(handle), one_per_record=True)
        try:
            yield from _jsonl_records(path, lines)
        except LineTooLong as exc:
            raise _too_long(path, exc) from exc


def _jsonl_records(path: Path, lines: Iterator[str]) -> Iterator[Recipient]:
    decode = _decoder.decode
    # Records of one file mostly have the same keys: where the id and the
    # address are is worked out once for each set of keys (a few at most).
    shapes: dict[tuple[str, ...], tuple[str | None, str | None]] = {}
    for line, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            record = decode(text)
        except json.JSONDecodeError as exc:
            raise RecipientError(f"{path}, line {line}: invalid JSON ({exc.msg})") from exc
        except _DuplicateKey as exc:
            raise RecipientError(
                f"{_where(path, line, f'column {exc.key!r}')}: the key appears twice in "
                "one object; which value counts would be a guess"
            ) from exc
        except ValueError as exc:
            raise RecipientError(f"{path}, line {line}: invalid JSON ({exc})") from exc
        if not isinstance(record, dict):
            raise RecipientError(f"{path}, line {line}: not a JSON object")
        for key, value in record.items():
            if type(value) is str:
                if UNSAFE_VALUE.search(value) is not None:
                    _refuse_json_value(path, line, key, value, text)
            elif not isinstance(value, _SCALARS):
                kind = "an object" if isinstance(value, dict) else "a list"
                raise RecipientError(
                    f"{_where(path, line, f'column {key!r}')}: holds {kind}; a recipient's "
                    "values are text, numbers, true/false or null"
                )
            if not key or UNSAFE_VALUE.search(key) is not None:
                raise RecipientError(
                    f"{path}, line {line}: column name {key!r} is empty or not text"
                )
        shape = tuple(record)
        keys = shapes.get(shape)
        if keys is None:
            keys = _jsonl_keys(path, line, shape)
            if len(shapes) < _SHAPES:
                shapes[shape] = keys
        id_key, email_key = keys
        if email_key is not None and email_key != EMAIL_COLUMN:
            record[EMAIL_COLUMN] = record[email_key]
        found_id = record[id_key] if id_key is not None else None
        yield Recipient(_json_id(path, line, found_id), record, line)


#: Sets of keys whose id and address keys a JSON Lines reader remembers.
_SHAPES = 64


def _jsonl_keys(path: Path, line: int, keys: Sequence[str]) -> tuple[str | None, str | None]:
    """The record's id key and address key, found as a CSV header's columns are."""
    try:
        ids = find_columns(keys, (ID_COLUMN,), source=str(path), line=line, noun="key")
        emails = find_columns(keys, (EMAIL_COLUMN,), source=str(path), line=line, noun="key")
    except TableError as exc:
        raise RecipientError(str(exc)) from exc
    return (keys[ids[0]] if ids else None, keys[emails[0]] if emails else None)


def _refuse_json_value(path: Path, line: int, key: str, value: str, text: str) -> None:
    bad = UNSAFE_VALUE.search(value)
    assert bad is not None
    char = bad.group()
    # The same lone surrogate comes from a byte that is not UTF-8 (then it is
    # in the raw line) or from a \uXXXX escape in a JSON string.
    escaped = "\ud800" <= char <= "\udfff" and char not in text
    what = (
        f"a lone surrogate (\\u{ord(char):04x}), which is not Unicode text"
        if escaped
        else describe_unsafe(char)
    )
    raise RecipientError(f"{_where(path, line, f'column {key!r}')}: holds {what}")


def _json_id(path: Path, line: int, value: Any) -> str:
    if value is None:
        raise RecipientError(f"{path}, line {line}: no 'id'")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise RecipientError(
            f"{path}, line {line}, column 'id': the id is {json.dumps(value)}; "
            "an id is a string or a whole number"
        )
    recipient_id = value.strip() if isinstance(value, str) else str(value)
    if not recipient_id:
        raise RecipientError(f"{path}, line {line}: no 'id'")
    if UNSAFE_ID.search(recipient_id) is not None or len(recipient_id) > MAX_ID_LENGTH:
        _refuse_id(path, line, "column 'id'", recipient_id)
    return recipient_id
