"""Size checks that keep one template from allocating without bound.

Two kinds of bound, both checked *before* the memory is taken:

- Each value a template builds is at most :data:`MAX_TEXT` characters (or
  :data:`MAX_SEQUENCE_PRODUCT` items). Every operation that can make a value
  much larger than its inputs is checked from its inputs: ``*`` and ``+`` on
  sequences, ``*`` and ``**`` on integers, ``%`` and ``str.format`` (field
  widths and precisions, including the ones given through ``*`` or a nested
  ``{}``), the padding methods and filters, ``replace``, ``join``,
  ``indent``, ``wordwrap``, ``batch``, ``slice``, ``tojson`` and ``~``.
- No single step may run long, since a step in C cannot be interrupted by
  the render's timer: the operations whose time grows faster than their
  inputs are bounded before they run (``//`` and ``%`` on integers,
  ``range``, ``round``, ``**``'s exponent, ``urlize``'s words), and a
  comparison of lists (``==``, ``in``, sorts, ``min``…) pays for every item
  and character it may read (:func:`comparison_cost`).
- One message may do at most :data:`MAX_RENDER_WORK` units of work, counted
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
from jinja2.utils import _PassArg
from markupsafe import Markup, escape

from templating.errors import RenderLimitExceeded

#: Characters one value may hold; as large as one part of a message.
MAX_TEXT = 512 * 1024
#: Items ``*`` may build out of a sequence.
MAX_SEQUENCE_PRODUCT = 100_000
#: Field width or precision in ``%``/``format`` specs and padding arguments.
MAX_WIDTH = 10_000
#: Bits an integer built by ``*`` or ``**`` may have.
MAX_POWER_BITS = 4_096
#: Bits of an integer that ``//``, ``%``, ``round`` and ``range`` take: their
#: time grows with the square of its size, in one step the timer cannot stop.
MAX_OPERAND_BITS = 65_536
#: Bits of an integer exponent of ``**`` (0, 1 and -1 raised to a larger one
#: still loop over every bit of it).
MAX_EXPONENT_BITS = 64
#: Digits ``round`` may keep or drop (a float has about 17 of them).
MAX_ROUND_DIGITS = 400
#: Characters of one word ``urlize`` looks at: its trailing-punctuation search
#: is quadratic in a word's length.
MAX_URLIZE_WORD = 2_048
MAX_RANGE = 10_000
#: Units of work (iterations, characters and items built, calls) per message.
MAX_RENDER_WORK = 4_000_000
#: How deeply lists and dicts may nest to be printed.
MAX_PRINT_DEPTH = 20
#: ``tojson`` indentation.
MAX_JSON_INDENT = 16

#: Types whose ``len`` is what building them costs.
SIZED = (str, list, tuple, dict, bytes, set, frozenset)
_SIZED_TYPES = frozenset({str, Markup, list, tuple, dict, bytes, set, frozenset, range})
_NUMBERS_IN_SPEC = re.compile(r"\d+")
_PERCENT_SPEC = re.compile(
    r"%(?:\((?P<key>[^)]*)\))?[-+ #0]*(?P<width>\*|\d+)?(?:\.(?P<precision>\*|\d*))?"
    r"[hlL]?(?P<conversion>.?)",
    re.DOTALL,
)


def refuse(message: str) -> RenderLimitExceeded:
    return RenderLimitExceeded(message)


class Budget:
    """The work one message may still do; reset before each recipient."""

    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = MAX_RENDER_WORK

    def reset(self) -> None:
        self.left = MAX_RENDER_WORK

    def spend(self, units: int) -> None:
        self.left -= units
        if self.left < 0:
            raise refuse(
                f"the message needs more than {MAX_RENDER_WORK} steps "
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
    if size > MAX_TEXT:
        raise refuse(f"{what} would be {size} characters long; at most {MAX_TEXT}")


def _check_width(value: Any, what: str) -> None:
    if isinstance(value, int) and abs(value) > MAX_WIDTH:
        raise refuse(f"{what} of {value}; at most {MAX_WIDTH}")


def _spec_number(digits: str, what: str) -> int:
    if len(digits) > 6:
        raise refuse(f"{what} of {len(digits)} digits; at most {MAX_WIDTH}")
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
    passes :data:`MAX_TEXT`, so checking never costs more than printing.
    """
    kind = type(value)
    if kind is str:
        return len(value)
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
            if depth >= MAX_PRINT_DEPTH:
                raise refuse(f"lists or dicts nested more than {MAX_PRINT_DEPTH} deep to print")
            size += 2 + 2 * len(item)
            if kind is dict:
                pending.extend((key, depth + 1) for key in item)
                pending.extend((val, depth + 1) for val in item.values())
            else:
                pending.extend((element, depth + 1) for element in item)
        else:
            raise not_printable(item)
        if size > MAX_TEXT:
            raise refuse(f"the printed value would be longer than {MAX_TEXT} characters")
    return size


def printable(value: Any) -> Any:
    """The environment's ``finalize``: what ``{{ ... }}`` may print."""
    kind = type(value)
    if kind is str or kind is int or kind is Markup:
        return value
    printed_size(value)
    return value


# -- operators --------------------------------------------------------------------


def _check_operand_bits(value: Any, what: str) -> None:
    if isinstance(value, int) and value.bit_length() > MAX_OPERAND_BITS:
        raise refuse(
            f"{what} of an integer of {value.bit_length()} bits; at most {MAX_OPERAND_BITS}"
        )


def limited_range(*args: int) -> range:
    for argument in args:
        _check_operand_bits(argument, "range()")
    result = range(*args)
    if len(result) > MAX_RANGE:
        raise refuse(f"range() of {len(result)} items; at most {MAX_RANGE}")
    return result


def _int_bits(value: Any) -> int:
    return value.bit_length() if isinstance(value, int) else 0


def multiply(left: Any, right: Any) -> Any:
    for sequence, times in ((left, right), (right, left)):
        if (
            isinstance(sequence, SIZED)
            and isinstance(times, int)
            and len(sequence) * times > MAX_SEQUENCE_PRODUCT
        ):
            raise refuse(
                f"'*' would build {len(sequence) * times} items; at most {MAX_SEQUENCE_PRODUCT}"
            )
    if (
        isinstance(left, int)
        and isinstance(right, int)
        and _int_bits(left) + _int_bits(right) > MAX_POWER_BITS
    ):
        raise refuse(f"'*' result would exceed {MAX_POWER_BITS} bits")
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
        and abs(base).bit_length() * exponent > MAX_POWER_BITS
    ):
        raise refuse(f"'**' result would exceed {MAX_POWER_BITS} bits")
    if isinstance(base, float) and isinstance(exponent, int) and abs(exponent) > 10**6:
        raise refuse("'**' exponent too large")
    if isinstance(exponent, int) and exponent.bit_length() > MAX_EXPONENT_BITS:
        raise refuse(f"'**' exponent of {exponent.bit_length()} bits; at most {MAX_EXPONENT_BITS}")
    return base**exponent


def check_percent(template: str, args: Any, what: str = "'%'") -> None:
    """``template % args``: every width and precision, given in the string or
    through ``*``, is bounded, every value formatted may be printed, and the
    result fits in :data:`MAX_TEXT`, all before anything is formatted."""
    if "%" not in template:
        return
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


def modulo(left: Any, right: Any) -> Any:
    if isinstance(left, str):
        check_percent(left, right)
    elif isinstance(left, int) and isinstance(right, int):
        _check_operand_bits(left, "'%'")
        _check_operand_bits(right, "'%'")
    return left % right


def floor_divide(left: Any, right: Any) -> Any:
    if isinstance(left, int) and isinstance(right, int):
        _check_operand_bits(left, "'//'")
        _check_operand_bits(right, "'//'")
    return left // right


BINARY_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "*": multiply,
    "+": add,
    "**": power,
    "%": modulo,
    "//": floor_divide,
}

_PADDING_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})


def check_call(function: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse a call to a ``str`` method that would build an outsized string."""
    owner = getattr(function, "__self__", None)
    if not isinstance(owner, (str, bytes)):
        return
    name = getattr(function, "__name__", "")
    if name in _PADDING_METHODS:
        for value in (*args, *kwargs.values()):
            _check_width(value, f"str.{name}() width")
    elif name == "expandtabs":
        tab = args[0] if args else kwargs.get("tabsize", 8)
        _check_width(tab, "str.expandtabs() tab size")
        if isinstance(tab, int):
            tabs = owner.count("\t") if isinstance(owner, str) else owner.count(b"\t")
            check_text_length(len(owner) + tabs * tab, "str.expandtabs() result")
    elif name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((len(v) for v in args[0].values() if isinstance(v, SIZED)), default=1)
        check_text_length(len(owner) * max(longest, 1), "str.translate() result")
    elif name == "replace" and len(args) >= 2 and isinstance(owner, str):
        old, new = str(args[0]), str(args[1])
        growth = max(len(new) - len(old), 0) * (owner.count(old) if old else len(owner) + 1)
        check_text_length(len(owner) + growth, "str.replace() result")
    elif name == "join" and args:
        items = args[0] if isinstance(args[0], (list, tuple)) else list(args[0])
        size = len(owner) * max(len(items) - 1, 0)
        for item in items:
            size += printed_size(item)
            check_text_length(size, "str.join() result")


# -- filters ----------------------------------------------------------------------

#: Filters that turn their value into text: the value must be printable.
_STRINGIFYING = frozenset(
    {
        "capitalize",
        "center",
        "e",
        "escape",
        "forceescape",
        "format",
        "indent",
        "lower",
        "pprint",
        "replace",
        "safe",
        "string",
        "striptags",
        "title",
        "trim",
        "truncate",
        "upper",
        "urlencode",
        "urlize",
        "wordwrap",
        "xmlattr",
    }
)


def _argument(args: tuple[Any, ...], kwargs: dict[str, Any], at: int, name: str) -> Any:
    return args[at] if len(args) > at else kwargs.get(name)


def _pre_center(budget: Budget, value: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
    _check_width(_argument(args, kw, 0, "width"), "|center width")


def _pre_indent(budget: Budget, value: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
    width = _argument(args, kw, 0, "width")
    _check_width(width, "|indent width")
    step = len(width) if isinstance(width, str) else width if isinstance(width, int) else 4
    text = str(value)
    check_text_length(len(text) + (text.count("\n") + 1) * step, "|indent result")


def _pre_wordwrap(budget: Budget, value: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
    wrap = _argument(args, kw, 2, "wrapstring")
    text = str(value)
    breaks = min(len(text), len(text) // 2 + text.count("\n") + 1)
    check_text_length(len(text) + breaks * len(str(wrap or "\n")), "|wordwrap result")


def _pre_format(budget: Budget, value: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
    check_percent(str(value), kw or args, "|format")


def _pre_replace(budget: Budget, value: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
    if len(args) >= 2:
        check_call(str(value).replace, args[:2], {})


def _pre_batch(budget: Budget, value: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
    count = _argument(args, kw, 0, "linecount")
    if isinstance(count, int) and count > MAX_SEQUENCE_PRODUCT:
        raise refuse(f"|batch of {count} items; at most {MAX_SEQUENCE_PRODUCT}")
    if isinstance(count, int):
        budget.spend(count)


def _pre_slice(budget: Budget, value: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
    count = _argument(args, kw, 0, "slices")
    if isinstance(count, int) and count > MAX_SEQUENCE_PRODUCT:
        raise refuse(f"|slice into {count} lists; at most {MAX_SEQUENCE_PRODUCT}")
    if isinstance(count, int):
        budget.spend(count)


def _pre_tojson(budget: Budget, value: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
    indent = _argument(args, kw, 0, "indent")
    if isinstance(indent, str) or (isinstance(indent, int) and indent > MAX_JSON_INDENT):
        raise refuse(f"|tojson indent of {indent!r}; at most {MAX_JSON_INDENT}")
    printed_size(value)


def _pre_sum(budget: Budget, value: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
    # sum(start=[]) concatenates: as large as all the items together.
    start = _argument(args, kw, 1, "start")
    if isinstance(start, SIZED) and isinstance(value, (list, tuple)):
        size = len(start)
        for item in value:
            size += len(item) if isinstance(item, SIZED) else 1
            if size > MAX_SEQUENCE_PRODUCT:
                raise refuse(f"|sum would build more than {MAX_SEQUENCE_PRODUCT} items")


def _pre_round(budget: Budget, value: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
    # round(x, n) and its 'ceil'/'floor' methods compute 10**n, then divide by it.
    precision = _argument(args, kw, 0, "precision")
    if isinstance(precision, int) and abs(precision) > MAX_ROUND_DIGITS:
        raise refuse(f"|round to {precision} digits; at most {MAX_ROUND_DIGITS}")
    _check_operand_bits(value, "|round")


_WORDS = re.compile(r"\S+")


def _pre_urlize(budget: Budget, value: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
    # urlize looks at each word (whitespace-separated, after HTML escaping).
    text = str(escape(value))
    if len(text) > MAX_URLIZE_WORD:
        longest = max((m.end() - m.start() for m in _WORDS.finditer(text)), default=0)
        if longest > MAX_URLIZE_WORD:
            raise refuse(f"|urlize of a word of {longest} characters; at most {MAX_URLIZE_WORD}")


_PRECHECKS: dict[str, Callable[[Budget, Any, tuple[Any, ...], dict[str, Any]], None]] = {
    "center": _pre_center,
    "indent": _pre_indent,
    "wordwrap": _pre_wordwrap,
    "format": _pre_format,
    "replace": _pre_replace,
    "batch": _pre_batch,
    "slice": _pre_slice,
    "tojson": _pre_tojson,
    "sum": _pre_sum,
    "round": _pre_round,
    "urlize": _pre_urlize,
}

#: Filters that neither print their value nor build anything larger than it:
#: left unwrapped, so the common ones (``default``, ``length``) cost nothing.
_UNGUARDED = frozenset(
    {
        "abs",
        "attr",
        "count",
        "d",
        "default",
        "filesizeformat",
        "first",
        "float",
        "int",
        "items",
        "last",
        "length",
        "map",
        "max",
        "min",
        "random",
        "reject",
        "rejectattr",
        "select",
        "selectattr",
        "unique",
        "wordcount",
    }
)


def _guarded_filter(
    name: str, original: Callable[..., Any], budget: Budget, attrgetter: Callable[..., Any]
) -> Callable[..., Any]:
    passes = _PassArg.from_obj(original)
    skip = 0 if passes is None else 1
    precheck = _PRECHECKS.get(name)
    stringifies = name in _STRINGIFYING
    joins = name == "join"

    sized = _SIZED_TYPES
    checks_input = stringifies or precheck is not None or joins

    def guarded(*args: Any, **kwargs: Any) -> Any:
        # The hot path of every filter call: kept to a few type checks.
        if len(args) > skip:
            value = args[skip]
            if type(value) in sized:
                budget.left -= len(value)
                if budget.left < 0:
                    budget.spend(0)
            if checks_input:
                if stringifies and type(value) is not str:
                    printed_size(value)
                if precheck is not None:
                    precheck(budget, value, args[skip + 1 :], kwargs)
                if joins:
                    args, kwargs = _checked_join(budget, attrgetter, args, kwargs, skip)
        try:
            result = original(*args, **kwargs)
        except AssertionError as exc:
            # Jinja checks some filter arguments with assert (truncate's length).
            raise TemplateRuntimeError(f"|{name}: {exc or 'invalid arguments'}") from None
        if type(result) in sized:
            size = len(result)
            if size > MAX_TEXT and isinstance(result, str):
                check_text_length(size, f"|{name} result")
            budget.left -= size
            if budget.left < 0:
                budget.spend(0)
        return result

    if passes is not None:
        guarded.jinja_pass_arg = passes  # type: ignore[attr-defined]
    guarded.__name__ = getattr(original, "__name__", name)
    return guarded


def _checked_join(
    budget: Budget,
    attrgetter: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    skip: int,
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``|join``: items fetched (by ``attribute``), checked and sized first."""
    rest = list(args[skip + 1 :])
    separator = rest[0] if rest else kwargs.pop("d", "")
    attribute = rest[1] if len(rest) > 1 else kwargs.pop("attribute", None)
    items = list(args[skip])
    budget.spend(len(items))
    if attribute is not None:
        getter = attrgetter(attribute)
        items = [getter(item) for item in items]
    size = len(str(separator)) * max(len(items) - 1, 0)
    check_text_length(size, "|join result")
    for item in items:
        size += printed_size(item)
        check_text_length(size, "|join result")
    return (*args[:skip], items, separator), {}


def guard_filters(
    filters: dict[str, Callable[..., Any]],
    budget: Budget,
    attrgetter: Callable[[Any], Callable[[Any], Any]],
) -> None:
    """Wrap every filter: inputs paid for, outputs bounded, growth checked first.

    ``attrgetter(attribute)`` fetches an item's attribute the way the
    sandbox does (for ``join(attribute=...)``).
    """
    for name, original in list(filters.items()):
        if name not in _UNGUARDED:
            filters[name] = _guarded_filter(name, original, budget, attrgetter)


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
        if cost > MAX_RENDER_WORK:
            break
    return cost


def sort_cost(value: Any) -> int:
    """:func:`comparison_cost` of a sort: each item is compared about log2(n) times."""
    return comparison_cost(value) * max(1, len(value).bit_length())
