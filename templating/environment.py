"""The sandboxed Jinja2 environment every message template runs in.

Built on :class:`jinja2.sandbox.SandboxedEnvironment` with
:class:`jinja2.StrictUndefined`: with the default ``Undefined`` an unsafe
attribute would silently render as an empty string instead of failing.

On top of the sandbox, limits keep one template from stalling a batch:
``range`` is capped, ``*`` and ``**`` refuse huge results, rendered output
is capped per part (see :mod:`templating.message`), and a render can be
given a wall-clock budget. Globals that only serve as footholds for escapes
(``cycler``, ``joiner``, ``lipsum``) are removed; a template reads its data
and calls the ``client`` functions.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from jinja2.sandbox import SandboxedEnvironment

from templating.client import RecipientUndefined
from templating.errors import RenderLimitExceeded

MAX_RANGE = 10_000
MAX_SEQUENCE_PRODUCT = 100_000
MAX_POWER_BITS = 4_096


def _limited_range(*args: int) -> range:
    result = range(*args)
    if len(result) > MAX_RANGE:
        raise RenderLimitExceeded(f"range() of {len(result)} items; at most {MAX_RANGE}")
    return result


def _checked_multiply(left: Any, right: Any) -> Any:
    for sequence, times in ((left, right), (right, left)):
        if (
            isinstance(sequence, (str, list, tuple, bytes))
            and isinstance(times, int)
            and len(sequence) * times > MAX_SEQUENCE_PRODUCT
        ):
            raise RenderLimitExceeded(
                f"'*' would build {len(sequence) * times} items; at most {MAX_SEQUENCE_PRODUCT}"
            )
    return operator.mul(left, right)


def _checked_power(base: Any, exponent: Any) -> Any:
    if (
        isinstance(base, int)
        and isinstance(exponent, int)
        and exponent > 0
        and abs(base) > 1
        and abs(base).bit_length() * exponent > MAX_POWER_BITS
    ):
        raise RenderLimitExceeded(f"'**' result would exceed {MAX_POWER_BITS} bits")
    return operator.pow(base, exponent)


_BINOPS: dict[str, Callable[[Any, Any], Any]] = {"*": _checked_multiply, "**": _checked_power}


class MessageEnvironment(SandboxedEnvironment):
    """Sandbox with arithmetic limits; see the module docstring."""

    intercepted_binops = frozenset(_BINOPS)

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        handler = _BINOPS.get(operator_name)
        if handler is None:
            return super().call_binop(context, operator_name, left, right)
        return handler(left, right)


def make_environment() -> MessageEnvironment:
    env = MessageEnvironment(
        undefined=RecipientUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    for name in ("cycler", "joiner", "lipsum"):
        env.globals.pop(name, None)
    env.globals["range"] = _limited_range
    return env
