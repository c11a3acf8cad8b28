"""The ``client`` object a template sees: recipient data and the code functions.

Recipient columns are attributes (``client.first_name``) and items
(``client['first name']``). The code functions delegate to a
:class:`CodeSource`: the mailing's chunk of reservations when sending, a
read-only stand-in when previewing. Everything internal is behind
underscore names, which the sandbox never lets a template reach.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping
from typing import Any, Protocol

from jinja2 import StrictUndefined
from jinja2.utils import missing, object_type_repr

#: The code functions that hand out (or show again) a code from a pool.
ISSUING = frozenset({"promocode", "promocodes"})
REISSUING = frozenset({"last_promocode"})
#: A template may call these only as ``client.promocode('POOL')`` written out:
#: the sandbox never hands them out as values (see templating.template.environment).
CODE_METHODS = ISSUING | REISSUING


class CodeSource(Protocol):
    def promocode(self, customer_id: str, pool: str) -> str: ...

    def last_promocode(self, customer_id: str, pool: str) -> str: ...

    def promocodes(self, customer_id: str, pool: str) -> list[str]: ...


class Client:
    __slots__ = ("_fields", "_id", "_source")

    def __init__(self, recipient_id: str, fields: Mapping[str, Any], source: CodeSource) -> None:
        self._id = recipient_id
        self._fields = fields
        self._source = source

    def __getattr__(self, name: str) -> Any:
        try:
            return self._fields[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name: str) -> Any:
        return self._fields[name]

    def __repr__(self) -> str:
        return f"client {self._id!r}"

    @property
    def id(self) -> str:
        return self._id

    def promocode(self, pool: str) -> str:
        """A fresh code from ``pool`` for this recipient (the same one on every call)."""
        return self._source.promocode(self._id, _pool_name(pool))

    def last_promocode(self, pool: str) -> str:
        """The code this customer last got from ``pool`` before, or ""."""
        return self._source.last_promocode(self._id, _pool_name(pool))

    def promocodes(self, pool: str) -> list[str]:
        """The customer's unredeemed codes from a per-customer pool, topped up."""
        return self._source.promocodes(self._id, _pool_name(pool))


def _pool_name(pool: object) -> str:
    if not isinstance(pool, str):
        raise TypeError(f"the pool must be given as a string, not {type(pool).__name__}")
    return pool


#: How an undefined name is shown: a template may look up anything, a list of
#: a million long texts too, and the message must not be as large as that.
_NAMES = reprlib.Repr()
_NAMES.maxlevel = 2
_NAMES.maxtuple = _NAMES.maxlist = _NAMES.maxdict = _NAMES.maxset = 6
_NAMES.maxstring = _NAMES.maxother = 80


class RecipientUndefined(StrictUndefined):
    """Names the missing recipient column instead of the object's Python type."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint:
            return self._undefined_hint
        name = _NAMES.repr(self._undefined_name)
        owner = self._undefined_obj
        if isinstance(owner, Client) and self._undefined_name is not None:
            return f"the recipient has no {name} column"
        if owner is missing:
            return f"{name} is undefined"
        if not isinstance(self._undefined_name, str):
            return f"{object_type_repr(owner)} has no element {name}"
        return f"{object_type_repr(owner)!r} has no attribute {name}"
