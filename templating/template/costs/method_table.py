"""Every method of a built-in type a template can reach, and the look-up of its
cost on every call a template makes."""

from __future__ import annotations

import types
from collections.abc import Iterator
from typing import Any

from jinja2.exceptions import SecurityError
from markupsafe import Markup

from promomail.templating.template.costs.measures import (
    _LENGTH_TYPES,
    MethodCost,
)
from promomail.templating.template.costs.methods import (
    _case_method,
    _compares,
    _decode,
    _encode,
    _expandtabs,
    _from_arguments,
    _grown_by_arguments,
    _hex,
    _joined,
    _list_sort,
    _markup,
    _markup_escape,
    _markup_striptags,
    _own_length,
    _padded,
    _partition,
    _replace_method,
    _split,
    _to_bytes,
    _translate,
    _unchecked_format,
)
from promomail.templating.template.limits import (
    _SIZED_TYPES,
    Budget,
)

_TEXT_FREE = [
    "count",
    "endswith",
    "find",
    "index",
    "isalnum",
    "isalpha",
    "isascii",
    "isdecimal",
    "isdigit",
    "isidentifier",
    "islower",
    "isnumeric",
    "isprintable",
    "isspace",
    "istitle",
    "isupper",
    "rfind",
    "rindex",
    "startswith",
]

_STR_COSTS: dict[str, MethodCost | None] = {
    **dict.fromkeys(_TEXT_FREE),
    "capitalize": _case_method,
    "casefold": _case_method,
    "center": _padded("center"),
    "encode": _encode,
    "expandtabs": _expandtabs,
    "format": _unchecked_format,
    "format_map": _unchecked_format,
    "join": _joined,
    "ljust": _padded("ljust"),
    "lower": _case_method,
    "lstrip": _own_length,
    "maketrans": _from_arguments,
    "partition": _partition,
    "removeprefix": _own_length,
    "removesuffix": _own_length,
    "replace": _replace_method,
    "rjust": _padded("rjust"),
    "rpartition": _partition,
    "rsplit": _split,
    "rstrip": _own_length,
    "split": _split,
    "splitlines": _split,
    "strip": _own_length,
    "swapcase": _case_method,
    "title": _case_method,
    "translate": _translate,
    "upper": _case_method,
    "zfill": _padded("zfill"),
}

_BYTES_COSTS: dict[str, MethodCost | None] = {
    **{name: cost for name, cost in _STR_COSTS.items() if name in dir(bytes)},
    "decode": _decode,
    "fromhex": _from_arguments,
    "hex": _hex,
    "translate": _own_length,
}

_MARKUP_COSTS: dict[str, MethodCost | None] = {
    **{
        name: _markup(cost)
        for name, cost in _STR_COSTS.items()
        if cost is not None and isinstance(getattr(Markup, name, None), types.FunctionType)
    },
    "escape": _markup_escape,
    "join": _joined,
    "format": _unchecked_format,
    "format_map": _unchecked_format,
    "replace": _replace_method,
    "striptags": _markup_striptags,
    "unescape": _markup(_own_length),
}

_SET_COSTS: dict[str, MethodCost | None] = {
    "add": None,
    "clear": None,
    "copy": _own_length,
    "difference": _own_length,
    "difference_update": None,
    "discard": None,
    "intersection": _own_length,
    "intersection_update": None,
    "isdisjoint": None,
    "issubset": None,
    "issuperset": None,
    "pop": None,
    "remove": None,
    "symmetric_difference": _grown_by_arguments,
    "symmetric_difference_update": _from_arguments,
    "union": _grown_by_arguments,
    "update": _from_arguments,
}

_OWNERS: dict[str, dict[str, MethodCost | None]] = {
    "str": _STR_COSTS,
    "bytes": _BYTES_COSTS,
    "Markup": _MARKUP_COSTS,
    "list": {
        "append": None,
        "clear": None,
        "copy": _own_length,
        "count": _compares,
        "extend": _from_arguments,
        "index": _compares,
        "insert": None,
        "pop": None,
        "remove": _compares,
        "reverse": None,
        "sort": _list_sort,
    },
    "tuple": {"count": _compares, "index": _compares},
    "dict": {
        "clear": None,
        "copy": _own_length,
        "fromkeys": _from_arguments,
        "get": None,
        "items": None,
        "keys": None,
        "pop": None,
        "popitem": None,
        "setdefault": None,
        "update": _from_arguments,
        "values": None,
    },
    "set": _SET_COSTS,
    "frozenset": {name: cost for name, cost in _SET_COSTS.items() if name in dir(frozenset)},
    "int": {
        "as_integer_ratio": None,
        "bit_count": None,
        "bit_length": None,
        "conjugate": None,
        "from_bytes": None,
        "to_bytes": _to_bytes,
    },
    "float": {
        "as_integer_ratio": None,
        "conjugate": None,
        "fromhex": None,
        "hex": None,
        "is_integer": None,
    },
    "range": {"count": None, "index": None},
    "dict_keys": {"isdisjoint": None},
    "dict_items": {"isdisjoint": None},
    "dict_values": {},
}

#: Every method of a built-in type a template can reach, by qualified name
#: (``str.upper``, ``Markup.join``); None: builds nothing beyond its arguments.
METHOD_COSTS: dict[str, MethodCost | None] = {
    f"{owner}.{name}": cost for owner, table in _OWNERS.items() for name, cost in table.items()
}
#: The types :data:`METHOD_COSTS` covers completely (``bool`` is an ``int``).
AUDITED_TYPES: tuple[type, ...] = (
    str,
    bytes,
    Markup,
    list,
    tuple,
    dict,
    set,
    frozenset,
    int,
    float,
    range,
    type({}.keys()),
    type({}.items()),
    type({}.values()),
)
_AUDITED_OWNERS = frozenset(_OWNERS)
_METHOD_TYPES = (types.BuiltinMethodType, types.MethodType)


def method_cost(function: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """What calling ``function`` costs when it is a method of a built-in type.

    A method of an audited type that is not in :data:`METHOD_COSTS` is
    refused: nobody has written down what it may build.
    """
    kind = type(function)
    if kind is not types.BuiltinMethodType and kind is not types.MethodType:
        return 0
    name = getattr(function, "__qualname__", "")
    try:
        cost = METHOD_COSTS[name]
    except KeyError:
        if name.partition(".")[0] in _AUDITED_OWNERS:
            raise SecurityError(f"{name}() is not allowed in templates") from None
        return 0
    if cost is None:
        return 0
    return cost(function.__self__, args, kwargs)


def _lazy(argument: Any) -> bool:
    """A generator or built-in iterator (not the loop, which a macro may be given)."""
    return isinstance(argument, Iterator) and type(argument).__module__ == "builtins"


def counted_arguments(
    budget: Budget, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any], int]:
    """Arguments with every iterator paid for item by item as the callee reads
    it, and what the arguments with a length (dict views) cost."""
    cost = 0
    if any(_lazy(argument) for argument in args):
        args = tuple(budget.counted(argument) if _lazy(argument) else argument for argument in args)
    for key, argument in kwargs.items():
        if _lazy(argument):
            kwargs[key] = budget.counted(argument)
    for argument in (*args, *kwargs.values()):
        if type(argument) in _LENGTH_TYPES and type(argument) not in _SIZED_TYPES:
            cost += len(argument)
    return args, kwargs, cost
