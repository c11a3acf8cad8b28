"""Every bound one render holds, in one frozen object, and the one error for going past one.

Checks read the bounds from :data:`LIMITS` when they run (``render_limits.LIMITS.text``,
never a copy taken at import), so there is one value per bound wherever a template
runs: check, preview, render and the service's threads (invariant 11). A test that
needs a tighter or looser bound replaces the object, as a whole, for its duration.

Exceeding any of them raises :class:`~templating.errors.RenderLimitExceeded`
(made by :func:`refuse`); the render turns it into that recipient's failure, the
compile deadline into an invalid template.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from promomail.templating.errors import RenderLimitExceeded


@dataclass(frozen=True)
class RenderLimits:
    """The bounds of one render; see :mod:`templating.template.limits` for how each is kept."""

    #: Characters one value a template builds may hold, and one part of a message.
    text: int = 512 * 1024
    #: Items ``*`` may build out of a sequence.
    sequence_product: int = 100_000
    #: Field width or precision in ``%``/``format`` specs and padding arguments.
    width: int = 10_000
    #: Bits an integer built by ``*`` or ``**`` may have.
    power_bits: int = 4_096
    #: Bits of an integer that ``//``, ``%``, ``round`` and ``range`` take: their
    #: time grows with the square of its size, in one step the timer cannot stop.
    operand_bits: int = 65_536
    #: Bits of an integer exponent of ``**`` (0, 1 and -1 raised to a larger one
    #: still loop over every bit of it).
    exponent_bits: int = 64
    #: Digits ``round`` may keep or drop (a float has about 17 of them).
    round_digits: int = 400
    #: Characters of one word ``urlize`` looks at: its trailing-punctuation search
    #: is quadratic in a word's length.
    urlize_word: int = 2_048
    #: Items ``range()`` may give.
    range_items: int = 10_000
    #: Units of work (iterations, characters and items built, calls) per message.
    render_work: int = 4_000_000
    #: How deeply lists and dicts may nest to be printed.
    print_depth: int = 20
    #: ``tojson`` indentation.
    json_indent: int = 16
    #: Wall-clock seconds one recipient's message may take to render.
    render_seconds: float = 5.0
    #: Wall-clock seconds reading, checking and generating the code of a template may take.
    compile_seconds: float = 5.0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if not value > 0:
                raise ValueError(f"render limit {field.name} must be more than 0, not {value!r}")


#: The bounds every render holds.
LIMITS = RenderLimits()


def refuse(message: str) -> RenderLimitExceeded:
    """The error for a value or a step past one of the bounds."""
    return RenderLimitExceeded(message)
