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
from pathlib import Path
from typing import Any

from jinja2 import Template, TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError, TemplateRuntimeError, UndefinedError
from jinja2.runtime import Context

from templating.errors import InvalidTemplate, RecipientFailed, RenderLimitExceeded
from templating.template.environment import MessageEnvironment, make_environment

BLOCK_PARTS = ("subject", "text", "html")
BODY_PART = "body"
#: Characters one part of one message may hold.
MAX_PART_CHARS = 512 * 1024
#: Wall-clock seconds one recipient's message may take to render.
RENDER_SECONDS = 5.0


@dataclass(frozen=True)
class ParsedTemplate:
    name: str
    source: str
    ast: nodes.Template
    parts: tuple[str, ...]


def read_template(path: str | Path) -> tuple[str, str]:
    """(name, source) of a template file, or an InvalidTemplate naming it."""
    name = str(path)
    try:
        return name, Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InvalidTemplate("no such file", template=name) from exc
    except UnicodeDecodeError as exc:
        raise InvalidTemplate(f"not UTF-8 text (byte {exc.start + 1})", template=name) from exc
    except OSError as exc:
        raise InvalidTemplate(f"cannot read ({exc.strerror})", template=name) from exc


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


class MessageTemplate:
    """Compiled once per mailing; :meth:`render` gives one recipient's parts."""

    def __init__(self, name: str, source: str) -> None:
        self.plain_env = make_environment(name)
        self.parsed = parse_template(self.plain_env, name, source)
        self.name = name
        self.parts = self.parsed.parts
        self._plain = self._compile(self.plain_env, source)
        self._html: Template | None = None
        self._envs = [self.plain_env]
        if "html" in self.parts:
            html_env = make_environment(name)
            html_env.autoescape = True
            self._html = self._compile(html_env, source)
            self._envs.append(html_env)

    @classmethod
    def from_file(cls, path: str | Path) -> MessageTemplate:
        return cls(*read_template(path))

    def _compile(self, env: MessageEnvironment, source: str) -> Template:
        try:
            template = env.from_string(source, template_class=Template)
        except TemplateSyntaxError as exc:
            raise InvalidTemplate(
                f"syntax error: {exc.message}", template=self.name, line=exc.lineno
            ) from exc
        # Every context copies the globals; from a ChainMap that copy is a
        # slow Python-level walk, from a plain dict it is one C call.
        template.globals = dict(template.globals)
        return template

    def render(self, variables: Mapping[str, Any], only: str | None = None) -> dict[str, str]:
        """Every part (or just ``only``) for one recipient, or RecipientFailed."""
        wanted = (only,) if only else self.parts
        for env in self._envs:
            env.begin_render()
        try:
            with _time_limit():
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

    def _where(self, exc: BaseException) -> str:
        line = _template_line(exc, self.name)
        return f"{self.name}, line {line}: " if line else f"{self.name}: "


def _capped(pieces: Iterator[str], part: str) -> str:
    out: list[str] = []
    size = 0
    for piece in pieces:
        size += len(piece)
        if size > MAX_PART_CHARS:
            raise RenderLimitExceeded(f"part {part!r} is longer than {MAX_PART_CHARS} characters")
        out.append(piece)
    return "".join(out).strip() if part == "subject" else "".join(out)


def _template_line(exc: BaseException, name: str) -> int | None:
    """The template line the exception was raised at, from the traceback."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename in ("<template>", name):
            template = tb.tb_frame.f_globals.get("__jinja_template__")
            if template is not None:
                line = template.get_corresponding_lineno(tb.tb_lineno)
        tb = tb.tb_next
    return line


_deadline_handler_installed = False


def _deadline_passed(_signum: int, _frame: Any) -> None:
    raise RenderLimitExceeded(f"rendering took longer than {RENDER_SECONDS:g} s")


@contextmanager
def _time_limit() -> Iterator[None]:
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
    global _deadline_handler_installed
    if not _deadline_handler_installed:
        signal.signal(signal.SIGALRM, _deadline_passed)
        _deadline_handler_installed = True
    signal.setitimer(signal.ITIMER_REAL, RENDER_SECONDS)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
