"""``str.format`` and ``format_map`` as a template may call them: every field's
width (nested ``{}`` resolved) and value checked, and paid for, before it is
formatted."""

from __future__ import annotations

import types
from typing import Any

from jinja2.sandbox import SandboxedEscapeFormatter, SandboxedFormatter
from markupsafe import Markup

from promomail.templating.template import costs, limits


class FieldChecks(SandboxedFormatter):
    """``str.format``: each field's width (nested ``{}`` resolved) and value checked."""

    _size = 0
    _growth = 1

    def vformat(self, format_string: str, args: Any, kwargs: Any) -> str:
        self._size = len(format_string)
        return super().vformat(format_string, args, kwargs)

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        limits.printed_size(value)
        return super().convert_field(value, conversion)

    def format_field(self, value: Any, format_spec: str) -> Any:
        width = limits._check_spec_numbers(format_spec, "format field width")
        field = limits.printed_size(value) + width
        self._size += field
        limits.check_text_length(self._size, "str.format() result")
        # Paid before it is formatted (escaped too, for Markup).
        self._env.budget.spend(field * self._growth)  # type: ignore[attr-defined]
        return super().format_field(value, format_spec)


class CheckedFormatter(FieldChecks):
    pass


class CheckedEscapeFormatter(FieldChecks, SandboxedEscapeFormatter):
    _growth = 1 + costs.ESCAPE_GROWTH


def checked_str_format(env: Any, value: Any) -> Any:
    """``value`` wrapped in the checks when it is a text's ``format`` or
    ``format_map``; None for anything else (see
    :meth:`~templating.template.environment.MessageEnvironment.wrap_str_format`)."""
    # The sandbox hands out str.format / format_map wrapped, at attribute
    # access; the wrapper's formatter checks every field it formats.
    if not isinstance(value, (types.MethodType, types.BuiltinMethodType)) or (
        value.__name__ not in ("format", "format_map")
    ):
        return None
    owner = value.__self__
    if not isinstance(owner, str):
        return None
    kind = type(owner)
    is_format_map = value.__name__ == "format_map"
    formatter: SandboxedFormatter
    if isinstance(owner, Markup):
        formatter = CheckedEscapeFormatter(env, escape=owner.escape)
    else:
        formatter = CheckedFormatter(env)
    budget = env.budget

    def wrapper(*args: Any, **kwargs: Any) -> str:
        if is_format_map:
            if kwargs:
                raise TypeError("format_map() takes no keyword arguments")
            if len(args) != 1:
                raise TypeError(f"format_map() takes exactly one argument ({len(args)} given)")
            kwargs = args[0]
            args = ()
        return budget.spend_on(kind(formatter.vformat(owner, args, kwargs)))  # type: ignore[no-any-return]

    wrapper.__name__ = value.__name__
    return wrapper
