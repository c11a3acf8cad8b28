"""Size checks that keep one template from allocating without bound.

Every way a template can make a value much larger than its inputs is checked
before (or, for concatenation, right after) the value is built: ``*`` and
``+`` on sequences, ``**`` on integers, ``%`` and ``str.format`` field
widths, the padding methods and filters (``center``, ``ljust``, ``indent``…),
``replace`` and ``join``, and ``~`` concatenation. Each step can then at most
double a value that was already within bounds, so memory stays bounded even
in a loop; the wall-clock limit in :mod:`templating.message` ends the loop.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from templating.errors import RenderLimitExceeded

#: Characters one value may hold; as large as one part of a message.
MAX_TEXT = 512 * 1024
#: Items ``*`` may build out of a sequence.
MAX_SEQUENCE_PRODUCT = 100_000
#: Field width or precision in ``%``/``format`` specs and padding arguments.
MAX_WIDTH = 10_000
MAX_POWER_BITS = 4_096
MAX_RANGE = 10_000

_SIZED = (str, list, tuple, bytes)
_NUMBERS_IN_SPEC = re.compile(r"\d+")
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?([-+ #0]*[\d*]*(?:\.[\d*]*)?)[a-zA-Z%]")
_BRACE_SPEC = re.compile(r"\{[^{}]*:([^{}]*)\}")


def refuse(message: str) -> RenderLimitExceeded:
    return RenderLimitExceeded(message)


def check_text_length(size: int, what: str) -> None:
    if size > MAX_TEXT:
        raise refuse(f"{what} would be {size} characters long; at most {MAX_TEXT}")


def _check_width(value: Any, what: str) -> None:
    if isinstance(value, int) and value > MAX_WIDTH:
        raise refuse(f"{what} of {value}; at most {MAX_WIDTH}")


def _check_spec_numbers(specs: Iterable[str], what: str) -> None:
    for spec in specs:
        for number in _NUMBERS_IN_SPEC.findall(spec):
            _check_width(int(number), what)


def limited_range(*args: int) -> range:
    result = range(*args)
    if len(result) > MAX_RANGE:
        raise refuse(f"range() of {len(result)} items; at most {MAX_RANGE}")
    return result


def multiply(left: Any, right: Any) -> Any:
    for sequence, times in ((left, right), (right, left)):
        if (
            isinstance(sequence, _SIZED)
            and isinstance(times, int)
            and len(sequence) * times > MAX_SEQUENCE_PRODUCT
        ):
            raise refuse(
                f"'*' would build {len(sequence) * times} items; at most {MAX_SEQUENCE_PRODUCT}"
            )
    return left * right


def add(left: Any, right: Any) -> Any:
    if isinstance(left, _SIZED) and isinstance(right, _SIZED):
        check_text_length(len(left) + len(right), "'+'")
    return left + right


def power(base: Any, exponent: Any) -> Any:
    if (
        isinstance(base, int)
        and isinstance(exponent, int)
        and exponent > 0
        and abs(base) > 1
        and abs(base).bit_length() * exponent > MAX_POWER_BITS
    ):
        raise refuse(f"'**' result would exceed {MAX_POWER_BITS} bits")
    return base**exponent


def modulo(left: Any, right: Any) -> Any:
    if isinstance(left, str):
        _check_spec_numbers(_PERCENT_SPEC.findall(left), "'%' field width")
    return left % right


BINARY_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "*": multiply,
    "+": add,
    "**": power,
    "%": modulo,
}

_PADDING_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})


def check_call(function: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse a call to a ``str`` method that would build an outsized string."""
    owner = getattr(function, "__self__", None)
    if not isinstance(owner, str):
        return
    name = getattr(function, "__name__", "")
    if name in _PADDING_METHODS:
        for value in (*args, *kwargs.values()):
            _check_width(value, f"str.{name}() width")
    elif name in ("format", "format_map"):
        check_format_string(owner)
    elif name == "replace" and len(args) >= 2:
        old, new = str(args[0]), str(args[1])
        growth = max(len(new) - len(old), 0) * (owner.count(old) if old else len(owner) + 1)
        check_text_length(len(owner) + growth, "str.replace() result")
    elif name == "join" and args:
        items = list(args[0]) if not isinstance(args[0], (list, tuple)) else args[0]
        size = sum(len(str(item)) for item in items) + len(owner) * max(len(items) - 1, 0)
        check_text_length(size, "str.join() result")


def check_format_string(text: str) -> None:
    _check_spec_numbers(_BRACE_SPEC.findall(text), "format field width")


def guarded_join(joined: str) -> str:
    """``~`` concatenation: checked once built (each step at most doubles)."""
    check_text_length(len(joined), "'~' result")
    return joined


def guard_filters(filters: dict[str, Callable[..., Any]]) -> None:
    """Wrap the built-in filters that pad or format, checking their sizes first."""

    def padded(name: str, width_at: int) -> None:
        original = filters[name]

        def checked(*args: Any, **kwargs: Any) -> Any:
            width = args[width_at] if len(args) > width_at else kwargs.get("width")
            _check_width(width, f"|{name} width")
            return original(*args, **kwargs)

        filters[name] = checked

    padded("center", 1)
    padded("indent", 1)
    formatter = filters["format"]

    def checked_format(value: Any, *args: Any, **kwargs: Any) -> Any:
        _check_spec_numbers(_PERCENT_SPEC.findall(str(value)), "|format field width")
        return formatter(value, *args, **kwargs)

    filters["format"] = checked_format
    replacer = filters["replace"]

    def checked_replace(eval_ctx: Any, value: Any, old: Any, new: Any, *rest: Any) -> Any:
        check_call(str(value).replace, (old, new), {})
        return replacer(eval_ctx, value, old, new, *rest)

    checked_replace.jinja_pass_arg = replacer.jinja_pass_arg  # type: ignore[attr-defined]
    filters["replace"] = checked_replace
