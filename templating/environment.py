"""The sandboxed Jinja2 environment every message template runs in.

Built on :class:`jinja2.sandbox.SandboxedEnvironment` with
:class:`jinja2.StrictUndefined` semantics: with the default ``Undefined`` an
unsafe attribute would silently render as an empty string instead of failing.

On top of the sandbox, the size checks of :mod:`templating.limits` apply to
operators, ``str`` method calls, the padding filters and ``~``
concatenation; rendered output is capped per part and a render has a
wall-clock budget (see :mod:`templating.message`). Globals that only serve
as footholds for escapes (``cycler``, ``joiner``, ``lipsum``) are removed; a
template reads its data and calls the ``client`` functions.
"""

from __future__ import annotations

from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.sandbox import SandboxedEnvironment

from templating import limits
from templating.client import RecipientUndefined

# Re-exported: tests and callers read the limits from here.
MAX_RANGE = limits.MAX_RANGE
MAX_SEQUENCE_PRODUCT = limits.MAX_SEQUENCE_PRODUCT
MAX_POWER_BITS = limits.MAX_POWER_BITS


class _GuardedCodeGenerator(CodeGenerator):
    """Compiles ``a ~ b`` so that its result passes the size check."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.guarded_join(")
        super().visit_Concat(node, frame)
        self.write(")")


class MessageEnvironment(SandboxedEnvironment):
    """Sandbox with size limits; see the module docstring."""

    code_generator_class = _GuardedCodeGenerator
    intercepted_binops = frozenset(limits.BINARY_OPERATORS)

    @staticmethod
    def guarded_join(joined: Any) -> Any:
        return limits.guarded_join(joined)

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        handler = limits.BINARY_OPERATORS.get(operator_name)
        if handler is None:
            return super().call_binop(context, operator_name, left, right)
        return handler(left, right)

    def wrap_str_format(self, value: Any) -> Any:
        # The sandbox hands out str.format / format_map wrapped, at attribute
        # access: check the format string's field widths there.
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            limits.check_format_string(value.__self__)
        return wrapped

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        limits.check_call(__obj, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)


def make_environment() -> MessageEnvironment:
    env = MessageEnvironment(
        undefined=RecipientUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    for name in ("cycler", "joiner", "lipsum"):
        env.globals.pop(name, None)
    env.globals["range"] = limits.limited_range
    env.filters = dict(env.filters)
    limits.guard_filters(env.filters)
    return env
