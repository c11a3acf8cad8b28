"""Size checks that keep one template from allocating without bound.

Two kinds of bound, both checked *before* the memory is taken:

- Each value a template builds is at most ``LIMITS.text`` characters (or
  ``LIMITS.sequence_product`` items). Every operation that can make a value
  much larger than its inputs is checked from its inputs: ``*`` and ``+`` on
  sequences, ``*`` and ``**`` on integers, ``%`` and ``str.format`` (field
  widths and precisions, including the ones given through ``*`` or a nested
  ``{}``) and ``~``; every filter, test and method of a built-in type by
  its cost function in :mod:`templating.template.costs`.
- No single step may run long, since a step in C cannot be interrupted by
  the render's timer: the operations whose time grows faster than their
  inputs are bounded before they run (``//`` and ``%`` on integers,
  ``range``, ``round``, ``**``'s exponent, ``urlize``'s words), and a
  comparison of lists (``==``, ``in``, sorts, ``min``…) pays for every item
  and character it may read (:func:`comparison_cost`).
- One message may do at most ``LIMITS.render_work`` units of work, counted
  in a :class:`Budget`: loop iterations, characters and items built, literal
  lists and dicts, calls. Memory a template keeps (a list grown in a loop, a
  chain of namespaces) is paid for in these units first, so many small
  values cannot add up to gigabytes either.

Printing is checked too: only text, numbers, booleans, ``none`` and plain
lists and dicts of those may end up in a message (:func:`printed_size`).
Anything else would print a Python repr, often with a memory address
(``<function ... at 0x7f...>``), into a customer's mail.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from jinja2.exceptions import TemplateRuntimeError
from jinja2.runtime import Undefined
from markupsafe import Markup

from promomail.templating.template import render_limits
from promomail.templating.template.render_limits import refuse

#: Types whose ``len`` is what building them costs.
SIZED = (str, list, tuple, dict, bytes, set, frozenset)
_SIZED_TYPES = frozenset({str, Markup, list, tuple, dict, bytes, set, frozenset, range})
_NUMBERS_IN_SPEC = re.compile(r"\d+")
_PERCENT_SPEC = re.compile(
    r"%(?:\((?P<key>[^)]*)\))?[-+ #0]*(?P<width>\*|\d+)?(?:\.(?P<precision>\*|\d*))?"
    r"[hlL]?(?P<conversion>.?)",
    re.DOTALL,
)


class Budget:
    """The work one message may still do; reset before each recipient."""

    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = render_limits.LIMITS.render_work

    def reset(self) -> None:
        self.left = render_limits.LIMITS.render_work

    def spend(self, units: int) -> None:
        self.left -= units
        if self.left < 0:
            raise refuse(
                f"the message needs more than {render_limits.LIMITS.render_work} steps "
                "(loop iterations, characters and items built)"
            )

    def spend_on(self, value: Any) -> Any:
        """Pay for a value just built and hand it back."""
        if type(value) in _SIZED_TYPES:
            self.spend(len(value))
        elif type(value) is int:
            self.spend(value.bit_length() >> 6)
        return value

    def counted(self, iterable: Any) -> Iterable[Any]:
        """A loop's iterable: sized ones are paid for at once, others per item."""
        if type(iterable) in (list, tuple, range, str):
            self.spend(len(iterable))
            return iterable  # type: ignore[no-any-return]
        return self._each(iterable)

    def _each(self, iterable: Any) -> Iterator[Any]:
        iterator = iter(iterable)
        while True:
            self.spend(1)
            try:
                item = next(iterator)
            except StopIteration:
                return
            except RuntimeError as exc:
                # A dict or set changed size while the loop went over it.
                if isinstance(exc, RecursionError):
                    raise
                raise TemplateRuntimeError(f"the loop cannot go on: {exc}") from None
            yield item


def check_text_length(size: int, what: str) -> None:
    if size > render_limits.LIMITS.text:
        raise refuse(f"{what} would be {size} characters long; at most {render_limits.LIMITS.text}")


def _check_width(value: Any, what: str) -> None:
    if isinstance(value, int) and abs(value) > render_limits.LIMITS.width:
        raise refuse(f"{what} of {value}; at most {render_limits.LIMITS.width}")


def _spec_number(digits: str, what: str) -> int:
    if len(digits) > 6:
        raise refuse(f"{what} of {len(digits)} digits; at most {render_limits.LIMITS.width}")
    number = int(digits)
    _check_width(number, what)
    return number


def _check_spec_numbers(spec: str, what: str) -> int:
    """The widths and precisions in one ``format`` spec, each bounded; their sum."""
    return sum(_spec_number(number, what) for number in _NUMBERS_IN_SPEC.findall(spec))


# -- printing -------------------------------------------------------------------


def describe(value: Any) -> str:
    kind = type(value).__name__
    if isinstance(value, type):
        return "a class"
    if callable(value):
        return f"a {kind} (a function or method: call it)"
    return f"a {kind!r} value"


def not_printable(value: Any) -> TemplateRuntimeError:
    return TemplateRuntimeError(
        f"cannot print {describe(value)} into a message: only text, numbers, true/false, "
        "none and lists or dicts of those can be printed"
    )


def printed_size(value: Any) -> int:
    """About how many characters ``str(value)`` takes; refuses what may not be printed.

    Walks lists and dicts without recursion and stops as soon as the size
    passes ``LIMITS.text``, so checking never costs more than printing.
    """
    kind = type(value)
    if kind is str:
        return len(value)
    bounds = render_limits.LIMITS
    size = 0
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        kind = type(item)
        if kind is str or isinstance(item, str):
            size += len(item) + 2
        elif kind is int or kind is bool or isinstance(item, int):
            size += item.bit_length() // 3 + 2
        elif kind is float or item is None:
            size += 24
        elif isinstance(item, Undefined):
            str(item)  # raises the undefined error naming what is missing
            size += 2
        elif kind in (list, tuple, dict):
            if depth >= bounds.print_depth:
                raise refuse(f"lists or dicts nested more than {bounds.print_depth} deep to print")
            size += 2 + 2 * len(item)
            if size > bounds.text:
                # Before its items are queued: a long list is refused at once.
                raise refuse(f"the printed value would be longer than {bounds.text} characters")
            if kind is dict:
                pending.extend((key, depth + 1) for key in item)
                pending.extend((val, depth + 1) for val in item.values())
            else:
                pending.extend((element, depth + 1) for element in item)
        else:
            raise not_printable(item)
        if size > bounds.text:
            raise refuse(f"the printed value would be longer than {bounds.text} characters")
    return size


def printable(value: Any) -> Any:
    """The environment's ``finalize``: what ``{{ ... }}`` may print."""
    kind = type(value)
    if kind is str or kind is int or kind is Markup:
        return value
    printed_size(value)
    return value


# -- operators --------------------------------------------------------------------


def check_operand_bits(value: Any, what: str) -> None:
    if isinstance(value, int) and value.bit_length() > render_limits.LIMITS.operand_bits:
        raise refuse(
            f"{what} of an integer of {value.bit_length()} bits; at most {render_limits.LIMITS.operand_bits}"
        )


def limited_range(*args: int) -> range:
    for argument in args:
        check_operand_bits(argument, "range()")
    result = range(*args)
    if len(result) > render_limits.LIMITS.range_items:
        raise refuse(f"range() of {len(result)} items; at most {render_limits.LIMITS.range_items}")
    return result


def _int_bits(value: Any) -> int:
    return value.bit_length() if isinstance(value, int) else 0


def multiply(left: Any, right: Any) -> Any:
    for sequence, times in ((left, right), (right, left)):
        if (
            isinstance(sequence, SIZED)
            and isinstance(times, int)
            and len(sequence) * times > render_limits.LIMITS.sequence_product
        ):
            raise refuse(
                f"'*' would build {len(sequence) * times} items; at most {render_limits.LIMITS.sequence_product}"
            )
    if (
        isinstance(left, int)
        and isinstance(right, int)
        and _int_bits(left) + _int_bits(right) > render_limits.LIMITS.power_bits
    ):
        raise refuse(f"'*' result would exceed {render_limits.LIMITS.power_bits} bits")
    return left * right


def add(left: Any, right: Any) -> Any:
    if isinstance(left, SIZED) and isinstance(right, SIZED):
        check_text_length(len(left) + len(right), "'+'")
    return left + right


def power(base: Any, exponent: Any) -> Any:
    if (
        isinstance(base, int)
        and isinstance(exponent, int)
        and exponent > 0
        and abs(base) > 1
        and abs(base).bit_length() * exponent > render_limits.LIMITS.power_bits
    ):
        raise refuse(f"'**' result would exceed {render_limits.LIMITS.power_bits} bits")
    if isinstance(base, float) and isinstance(exponent, int) and abs(exponent) > 10**6:
        raise refuse("'**' exponent too large")
    if isinstance(exponent, int) and exponent.bit_length() > render_limits.LIMITS.exponent_bits:
        raise refuse(
            f"'**' exponent of {exponent.bit_length()} bits; at most {render_limits.LIMITS.exponent_bits}"
        )
    return base**exponent


def check_percent(template: str, args: Any, what: str = "'%'") -> int:
    """``template % args``: every width and precision, given in the string or
    through ``*``, is bounded, every value formatted may be printed, and the
    result fits in ``LIMITS.text``, all before anything is formatted.

    Returns about how long the result is."""
    if "%" not in template:
        return len(template)
    positional = iter(args if type(args) is tuple else (args,))
    size = len(template)
    for spec in _PERCENT_SPEC.finditer(template):
        if spec["conversion"] == "%" and spec["key"] is None:
            continue
        for part in ("width", "precision"):
            given = spec[part]
            if given == "*":
                star = next(positional, 0)
                _check_width(star, f"{what} field {part}")
                size += abs(star) if isinstance(star, int) else 0
            elif given:
                size += _spec_number(given, f"{what} field {part}")
        if spec["key"] is not None:
            value = args.get(spec["key"]) if isinstance(args, Mapping) else None
        else:
            value = next(positional, None)
        size += printed_size(value)
        check_text_length(size, f"{what} result")
    return size


def modulo(left: Any, right: Any) -> Any:
    if isinstance(left, str):
        check_percent(left, right)
    elif isinstance(left, int) and isinstance(right, int):
        check_operand_bits(left, "'%'")
        check_operand_bits(right, "'%'")
    return left % right


def floor_divide(left: Any, right: Any) -> Any:
    if isinstance(left, int) and isinstance(right, int):
        check_operand_bits(left, "'//'")
        check_operand_bits(right, "'//'")
    return left // right


BINARY_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "*": multiply,
    "+": add,
    "**": power,
    "%": modulo,
    "//": floor_divide,
}


# -- comparisons ------------------------------------------------------------------

#: Values whose comparison walks every item they hold, in one step in C.
COMPARED_CONTAINERS = frozenset(
    {list, tuple, dict, set, frozenset, type({}.keys()), type({}.values()), type({}.items())}
)
_COMPARED_TEXT = frozenset({str, Markup, bytes})


def comparison_cost(value: Any) -> int:
    """Units comparing ``value`` may take: one per item it holds, a text's length per text.

    Comparing lists (``==``, ``in``, a sort, ``min``) runs in one step in C
    that the render's timer cannot interrupt, and a list holds a long text
    many times over for the price of its length (``[text] * 100000``): paid
    for before the comparison, by what it may read, that step is bounded by
    the work budget. The walk stops once the cost passes any budget.
    """
    cost = 0
    pending = [value]
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind in _COMPARED_TEXT:
            cost += len(item)
        elif kind in COMPARED_CONTAINERS:
            cost += len(item)
            if kind is dict:
                pending.extend(item.keys())
                pending.extend(item.values())
            else:
                pending.extend(item)
        if cost > render_limits.LIMITS.render_work:
            break
    return cost


def sort_cost(value: Any) -> int:
    """:func:`comparison_cost` of a sort: each item is compared about log2(n) times."""
    return comparison_cost(value) * max(1, len(value).bit_length())
