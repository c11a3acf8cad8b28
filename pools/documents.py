"""A result's document: the fields it shows, named once.

A result class names its document's fields in ``DOCUMENT`` (all its
dataclass fields when it names none). ``as_dict`` reads them through
:func:`document`, and the API's description of the answer is made from the
same names and the fields' types (``service.schemas``), so the command
line's ``--json``, the API's answers and their description cannot drift
apart.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from typing import Any

from promomail.pools.store.clock import iso_seconds


def document_fields(kind: type) -> tuple[str, ...]:
    """The fields of ``kind``'s document, in the order it shows them."""
    named: tuple[str, ...] | None = getattr(kind, "DOCUMENT", None)
    if named is not None:
        return named
    return tuple(field.name for field in fields(kind))


def document(result: Any) -> dict[str, Any]:
    """The fields :func:`document_fields` names, a moment as every document shows it."""
    values = {name: getattr(result, name) for name in document_fields(type(result))}
    return {
        name: iso_seconds(value) if isinstance(value, datetime) else value
        for name, value in values.items()
    }
