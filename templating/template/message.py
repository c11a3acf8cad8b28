"""A message template: its parts, compiled once, rendered per recipient.

A template that defines blocks named ``subject``, ``text`` and/or ``html``
has those parts; otherwise the whole file is the single part ``body`` (SMS,
push). The ``html`` part is compiled a second time with autoescaping on, so
recipient data is escaped in HTML and left as written in the other parts.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from time import monotonic
from typing import Any

from jinja2 import Template, TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError, TemplateRuntimeError, UndefinedError
from jinja2.runtime import Context

from promomail.templating.errors import InvalidTemplate, RecipientFailed, RenderLimitExceeded
from promomail.templating.template import render_limits
from promomail.templating.template.analysis import TemplateUsage, analyze
from promomail.templating.template.environment import MessageEnvironment, make_environment
from promomail.templating.template.files import read_template
from promomail.templating.template.render_limits import refuse

BLOCK_PARTS = ("subject", "text", "html")
BODY_PART = "body"


@dataclass(frozen=True)
class ParsedTemplate:
    name: str
    source: str
    ast: nodes.Template
    parts: tuple[str, ...]


def parse_template(env: MessageEnvironment, name: str, source: str) -> ParsedTemplate:
    try:
        ast = env.parse(source, name=name, filename=name)
    except TemplateSyntaxError as exc:
        raise InvalidTemplate(
            f"syntax error: {exc.message}", template=name, line=exc.lineno
        ) from exc
    blocks = {block.name for block in ast.find_all(nodes.Block)}
    parts = tuple(p for p in BLOCK_PARTS if p in blocks) or (BODY_PART,)
    return ParsedTemplate(name, source, ast, parts)


def analyze_parsed(env: MessageEnvironment, parsed: ParsedTemplate) -> TemplateUsage:
    """:func:`~templating.template.analysis.analyze` of a template ``env`` parsed,
    with the partials that parse read."""
    return analyze(parsed.ast, parsed.parts, env.used_partials(parsed.ast, parsed.name))


@dataclass(frozen=True)
class CompiledTemplate:
    """A template made ready once, for every process that renders it.

    Jinja's parse and code generation are what compiling costs; a render's
    worker processes are handed this (source, parts, analysis and the
    generated code of each variant) and only run Python's ``compile`` of
    that code, instead of reading, parsing and analysing the file again.
    """

    name: str
    source: str
    parts: tuple[str, ...]
    usage: TemplateUsage
    #: Python source Jinja generated for the plain parts and, when the
    #: template has an html part, for the autoescaped variant.
    plain_code: str
    html_code: str | None


def compile_template(name: str, source: str) -> CompiledTemplate:
    """Parse, check, analyse and generate the code of a template, once.

    Under a deadline, like a render: nothing a template holds runs at
    compile time (see ``SafeOptimizer`` in
    :mod:`templating.template.guarded_compiler`), so this is linear in its
    text, and the timer keeps it so whatever Jinja's parser or Python's
    compiler makes of an odd template.
    """
    try:
        with _time_limit(render_limits.LIMITS.compile_seconds):
            return _compile_template(name, source)
    except RenderLimitExceeded:
        raise InvalidTemplate(
            f"took longer than {render_limits.LIMITS.compile_seconds:g} s to compile", template=name
        ) from None


def _compile_template(name: str, source: str) -> CompiledTemplate:
    plain_env = make_environment(name)
    parsed = parse_template(plain_env, name, source)
    # Before code generation: Jinja's optimizer folds the tree in place.
    usage = analyze_parsed(plain_env, parsed)
    html_code = None
    if "html" in parsed.parts:
        # Its own parse: what the optimizer may fold depends on autoescaping,
        # so one tree must not go through both code generations.
        html_code = _generate(_html_environment(name), source, name)
    plain_code = _generate(plain_env, parsed.ast, name)
    return CompiledTemplate(name, source, parsed.parts, usage, plain_code, html_code)


def _html_environment(name: str) -> MessageEnvironment:
    env = make_environment(name)
    env.autoescape = True
    return env


def _generate(env: MessageEnvironment, source: str | nodes.Template, name: str) -> str:
    try:
        return str(env.compile(source, raw=True))
    except TemplateSyntaxError as exc:
        raise InvalidTemplate(
            f"syntax error: {exc.message}", template=name, line=exc.lineno
        ) from exc


class MessageTemplate:
    """Compiled once per process; :meth:`render` gives one recipient's parts."""

    def __init__(self, name: str, source: str) -> None:
        self._load(compile_template(name, source))

    @classmethod
    def from_file(cls, path: str | Path, *, within: Path | None = None) -> MessageTemplate:
        return cls(*read_template(path, within=within))

    @classmethod
    def from_compiled(cls, compiled: CompiledTemplate) -> MessageTemplate:
        """The template another process compiled (see :class:`CompiledTemplate`)."""
        template = cls.__new__(cls)
        template._load(compiled)
        return template

    def _load(self, compiled: CompiledTemplate) -> None:
        self.compiled = compiled
        self.name = compiled.name
        self.parts = compiled.parts
        self.usage = compiled.usage
        self.plain_env = make_environment(self.name)
        self._plain = _from_code(self.plain_env, compiled.plain_code)
        self._html: Template | None = None
        self._envs = [self.plain_env]
        if compiled.html_code is not None:
            html_env = _html_environment(self.name)
            self._html = _from_code(html_env, compiled.html_code)
            self._envs.append(html_env)

    def render(self, variables: Mapping[str, Any], only: str | None = None) -> dict[str, str]:
        """Every part (or just ``only``) for one recipient, or RecipientFailed."""
        wanted = (only,) if only else self.parts
        for env in self._envs:
            env.begin_render()
        watch = _watch
        try:
            if watch.armed:
                # Inside timed(): the clock is one float, the timer ticks for the batch.
                # Reset in the inner finally, so a tick can only raise in here,
                # where the handlers below turn it into this recipient's failure.
                try:
                    watch.deadline = monotonic() + render_limits.LIMITS.render_seconds
                    return self._render_parts(wanted, variables)
                finally:
                    watch.deadline = _NEVER
            with _time_limit(render_limits.LIMITS.render_seconds):
                return self._render_parts(wanted, variables)
        except UndefinedError as exc:
            raise RecipientFailed(f"{self._where(exc)}undefined value: {exc.message}") from exc
        except SecurityError as exc:
            raise RecipientFailed(f"{self._where(exc)}not allowed in templates: {exc}") from exc
        except RenderLimitExceeded as exc:
            raise RecipientFailed(f"{self._where(exc)}render limit: {exc}") from exc
        except TemplateRuntimeError as exc:
            raise RecipientFailed(f"{self._where(exc)}{exc}") from exc
        except (ArithmeticError, TypeError, ValueError, LookupError, AttributeError) as exc:
            raise RecipientFailed(f"{self._where(exc)}{type(exc).__name__}: {exc}") from exc
        except RecursionError as exc:
            raise RecipientFailed(f"{self._where(exc)}recursion too deep") from exc
        except MemoryError as exc:
            raise RecipientFailed(f"{self._where(exc)}out of memory") from exc
        except RuntimeError as exc:
            raise RecipientFailed(f"{self._where(exc)}{type(exc).__name__}: {exc}") from exc

    def _render_parts(self, wanted: Sequence[str], variables: Mapping[str, Any]) -> dict[str, str]:
        # One context per compiled template, shared by its blocks, as Jinja's
        # own root render does: building a context is a large part of the cost.
        contexts: dict[bool, Context] = {}
        rendered = {}
        for part in wanted:
            escaped = part == "html" and self._html is not None
            template = self._html if escaped and self._html is not None else self._plain
            context = contexts.get(escaped)
            if context is None:
                context = contexts[escaped] = template.new_context(dict(variables))
            if part == BODY_PART:
                pieces = template.root_render_func(context)
            else:
                pieces = template.blocks[part](context)
            rendered[part] = _capped(pieces, part)
        return rendered

    @staticmethod
    @contextmanager
    def timed() -> Iterator[None]:
        """Renders inside keep the time limit without a timer call each.

        For a batch of renders (a chunk of a mailing): instead of arming and
        disarming SIGALRM around every message (two system calls and a
        context manager each), a timer ticks every :data:`WATCH_TICK` seconds
        and stops the render in progress once its deadline has passed, so a
        message is stopped within ``LIMITS.render_seconds`` + WATCH_TICK. Outside the
        main thread (no signals there) renders run untimed, as before.
        """
        if (
            not hasattr(signal, "setitimer")
            or threading.current_thread() is not threading.main_thread()
            or _watch.armed
        ):
            yield
            return
        previous = signal.signal(signal.SIGALRM, _watch_tick)
        _watch.deadline = _NEVER
        _watch.armed = True
        signal.setitimer(signal.ITIMER_REAL, WATCH_TICK, WATCH_TICK)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            _watch.armed = False
            _watch.deadline = _NEVER
            signal.signal(signal.SIGALRM, previous)

    def _where(self, exc: BaseException) -> str:
        line = _template_line(exc, self.name)
        return f"{self.name}, line {line}: " if line else f"{self.name}: "


def _from_code(env: MessageEnvironment, code: str) -> Template:
    template = Template.from_code(env, compile(code, "<template>", "exec"), env.make_globals(None))
    # Every context copies the globals; from a ChainMap that copy is a
    # slow Python-level walk, from a plain dict it is one C call.
    template.globals = dict(template.globals)
    return template


def _capped(pieces: Iterator[str], part: str) -> str:
    """The part's text, or RenderLimitExceeded once it outgrows ``LIMITS.text``.

    Taken :data:`CAP_BATCH` pieces at a time, counted in C: a message is a
    few dozen pieces, so it is usually one batch, and a runaway part is
    stopped within a batch (each piece is itself bounded by the sandbox).
    """
    out: list[str] = []
    size = 0
    while batch := list(islice(pieces, CAP_BATCH)):
        size += sum(map(len, batch))
        if size > render_limits.LIMITS.text:
            raise refuse(f"part {part!r} is longer than {render_limits.LIMITS.text} characters")
        out += batch
    return "".join(out).strip() if part == "subject" else "".join(out)


def _template_line(exc: BaseException, name: str) -> int | None:
    """The template line the exception was raised at, from the traceback.

    The innermost template frame with a line wins. A frame can stop on an
    instruction that has no line at all (``tb_lineno`` is None: the timer's
    signal lands on any instruction, e.g. the jump back of a filtered loop);
    such a frame tells nothing, and the line of an outer one is kept.
    """
    line = None
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        lineno = tb.tb_lineno
        if code.co_filename in ("<template>", name) and isinstance(lineno, int) and lineno > 0:
            template = tb.tb_frame.f_globals.get("__jinja_template__")
            if template is not None:
                line = template.get_corresponding_lineno(lineno)
        tb = tb.tb_next
    return line


_deadline_handler_installed = False

#: Seconds between the ticks of :meth:`MessageTemplate.timed`.
WATCH_TICK = 0.25
#: Pieces of output counted at a time by :func:`_capped`.
CAP_BATCH = 16
_NEVER = float("inf")


class _Watch:
    """The deadline of the render in progress under :meth:`MessageTemplate.timed`."""

    __slots__ = ("armed", "deadline")

    def __init__(self) -> None:
        self.armed = False
        self.deadline = _NEVER


_watch = _Watch()


def _watch_tick(_signum: int, _frame: Any) -> None:
    # Between renders the deadline is _NEVER: a tick then does nothing.
    if monotonic() > _watch.deadline:
        _watch.deadline = _NEVER
        raise refuse(f"rendering took longer than {render_limits.LIMITS.render_seconds:g} s")


_limit_seconds = render_limits.LIMITS.render_seconds


def _deadline_passed(_signum: int, _frame: Any) -> None:
    raise refuse(f"rendering took longer than {_limit_seconds:g} s")


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Abort a render that runs too long (loops that output nothing, say).

    Uses SIGALRM, so it applies in the main thread of a Unix process, which
    is where renders run (one process per worker). The handler is installed
    once; each render only arms and disarms the timer.
    """
    if (
        not hasattr(signal, "setitimer")
        or threading.current_thread() is not threading.main_thread()
    ):
        yield
        return
    global _deadline_handler_installed, _limit_seconds
    if not _deadline_handler_installed:
        signal.signal(signal.SIGALRM, _deadline_passed)
        _deadline_handler_installed = True
    _limit_seconds = seconds
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
