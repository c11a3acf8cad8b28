"""The sandboxed Jinja2 environment every message template runs in.

Built on :class:`jinja2.sandbox.SandboxedEnvironment` with
:class:`jinja2.StrictUndefined` semantics: with the default ``Undefined`` an
unsafe attribute would silently render as an empty string instead of failing.

On top of the sandbox:

- Every template (and partial) is checked when parsed, before it is
  compiled (:func:`templating.template.analysis.check_ast`): how deeply it nests, how
  it uses ``client`` and the code functions, which partials it names.
  Anything the Python compiler itself chokes on is an InvalidTemplate too.
- The code functions are never handed out as values: the sandbox refuses
  ``client.promocode`` as an attribute, and only the literal call
  ``client.promocode('POOL')`` is compiled, to a direct call of it.
- The size checks of :mod:`templating.template.limits` apply to operators, calls,
  ``%`` and ``str.format``, ``~``, literals, slices and loop iterations, and
  every filter, test and method of a built-in type pays its peak memory
  first (:mod:`templating.template.costs`), against a per-message
  :class:`~templating.template.limits.Budget`
  (reset by :meth:`MessageEnvironment.begin_render`); so do comparisons
  of lists, in operators, filters, tests and list methods, by what they
  read. Nothing is evaluated at compile time but operators the sandbox
  does not intercept, on literals (see
  :class:`~templating.template.guarded_compiler.SafeOptimizer`). Rendered
  output is capped per part and a render has a wall-clock budget (see
  :mod:`templating.template.message`).
- Only text, numbers, booleans, none and plain lists/dicts of those are
  printed (``finalize``): a Python object's repr never reaches a message.
- Partials: ``{% include 'footer.j2' %}`` and ``{% import 'macros.j2' as m %}``
  read files from the template's own folder (or its subfolders), named by
  a relative path without ``..``; nothing outside it, symbolic links
  included. ``{% extends %}`` is not supported. A partial's imported module
  lasts one message, not the process (:mod:`templating.template.isolation`):
  nothing a render leaves in it reaches the next recipient.
- Globals that only serve as footholds for escapes (``cycler``, ``joiner``,
  ``lipsum``) are removed; a template reads its data and calls the
  ``client`` functions.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

from jinja2 import TemplateNotFound, TemplateSyntaxError, nodes
from jinja2.exceptions import TemplateError as JinjaTemplateError
from jinja2.exceptions import TemplateRuntimeError
from jinja2.runtime import markup_join, str_join
from jinja2.sandbox import SandboxedEnvironment

from promomail.templating.errors import InvalidTemplate
from promomail.templating.template import costs, files, limits, render_limits
from promomail.templating.template.analysis import check_ast, partial_references
from promomail.templating.template.checked_format import checked_str_format
from promomail.templating.template.client import CODE_METHODS, Client, RecipientUndefined
from promomail.templating.template.files import (
    MAX_INCLUDE_DEPTH,
    MAX_PARTIALS,
    MAX_TEMPLATE_CHARS,
    PartialLoader,
    partial_key,
    resolve_partial,
)
from promomail.templating.template.guarded_compiler import GuardedCodeGenerator
from promomail.templating.template.isolation import (
    PartialTemplate,
    RenderModules,
    defines_only_macros,
)

_CODE_CALLS: dict[str, Callable[[Client, str], Any]] = {
    name: getattr(Client, name) for name in CODE_METHODS
}
_SIZED_TYPES = limits._SIZED_TYPES
#: Arguments that cost nothing beyond their slot and cannot be read lazily.
_SCALAR_TYPES = frozenset({int, float, bool, type(None)})
#: What ``client.NAME`` means other than a column: the client's own members.
_CLIENT_MEMBERS = frozenset(name for name in dir(Client) if not name.startswith("_"))


class MessageEnvironment(SandboxedEnvironment):
    """Sandbox with size limits; see the module docstring."""

    code_generator_class = GuardedCodeGenerator
    template_class = PartialTemplate
    intercepted_binops = frozenset(limits.BINARY_OPERATORS)

    def __init__(
        self, *args: Any, folder: Path | None = None, label: str = "template", **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.budget = limits.Budget()
        self.render_modules = RenderModules()
        self.folder = folder
        self.label = label
        #: Partials by their one name (:func:`partial_key`).
        self._partials: dict[str, nodes.Template] = {}
        #: Each spelling of a partial name the templates used → its one name.
        self._partial_keys: dict[str, str] = {}
        self._including: list[str] = []

    def begin_render(self) -> None:
        """A new message: the work budget and the partials' modules start afresh."""
        self.budget.reset()
        self.render_modules.clear()

    # -- parsing and compiling ------------------------------------------------------

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        label = filename or name or self.label
        if len(source) > MAX_TEMPLATE_CHARS:
            raise InvalidTemplate(
                f"is {len(source)} characters long; at most {MAX_TEMPLATE_CHARS}", template=label
            )
        try:
            ast = super()._parse(source, name, filename)
        except TemplateSyntaxError:
            raise
        except RecursionError:
            raise InvalidTemplate("nests too deeply to be read", template=label) from None
        except MemoryError:
            raise InvalidTemplate("too large to be read", template=label) from None
        except (ValueError, OverflowError) as exc:
            why = str(exc)
            if "integer string conversion" in why:
                why = "a number in it has too many digits"
            raise InvalidTemplate(f"cannot be read: {why}", template=label) from None
        check_ast(ast, label)
        if name is not None and defines_only_macros(ast):
            self.render_modules.lasting.add(name)
        for partial, line in partial_references(ast):
            self.partial_ast(partial, included_from=label, line=line)
        return ast

    def partial_key(self, name: str, *, included_from: str, line: int | None) -> str:
        """The one name of partial ``name`` (InvalidTemplate when it names no usable file)."""
        key = self._partial_keys.get(name)
        if key is None:
            path = resolve_partial(self.folder, name, template=included_from, line=line)
            assert self.folder is not None
            key = self._partial_keys[name] = partial_key(self.folder, path)
        return key

    def partial_ast(self, name: str, *, included_from: str, line: int | None) -> nodes.Template:
        """Partial ``name``, read, parsed and checked (once per environment and file)."""
        name = self.partial_key(name, included_from=included_from, line=line)
        cached = self._partials.get(name)
        if cached is not None:
            return cached
        if name in self._including:
            chain = " → ".join([*self._including, name])
            raise InvalidTemplate(
                f"partial {name!r} includes itself ({chain})", template=included_from, line=line
            )
        if len(self._including) >= MAX_INCLUDE_DEPTH:
            raise InvalidTemplate(
                f"partials include each other more than {MAX_INCLUDE_DEPTH} deep",
                template=included_from,
                line=line,
            )
        if len(self._partials) >= MAX_PARTIALS:
            raise InvalidTemplate(
                f"uses more than {MAX_PARTIALS} partials", template=included_from, line=line
            )
        path = resolve_partial(self.folder, name, template=included_from, line=line)
        source = files.read_partial(path, template=included_from, line=line, within=self.folder)
        self._including.append(name)
        try:
            ast = self.parse(source, name, str(path))
        except TemplateSyntaxError as exc:
            raise InvalidTemplate(
                f"syntax error: {exc.message}", template=str(path), line=exc.lineno
            ) from None
        finally:
            self._including.pop()
        self._partials[name] = ast
        return ast

    def used_partials(self, ast: nodes.Template, template: str) -> dict[str, nodes.Template]:
        """Every partial ``template`` (parsed as ``ast`` by this environment) uses,
        directly or not, by its one name: read and parsed once, by that parse."""
        found: dict[str, nodes.Template] = {}
        pending = list(partial_references(ast))
        while pending:
            name, line = pending.pop()
            name = self.partial_key(name, included_from=template, line=line)
            if name in found:
                continue
            found[name] = partial = self.partial_ast(name, included_from=template, line=line)
            pending.extend(partial_references(partial))
        return found

    def compile(
        self,
        source: str | nodes.Template,
        name: str | None = None,
        filename: str | None = None,
        raw: bool = False,
        defer_init: bool = False,
    ) -> Any:
        try:
            return super().compile(source, name, filename, raw, defer_init)  # type: ignore[call-overload]
        except (TemplateSyntaxError, InvalidTemplate):
            raise
        except (SyntaxError, RecursionError, MemoryError) as exc:
            raise InvalidTemplate(
                f"too complex to compile ({type(exc).__name__})",
                template=filename or name or self.label,
            ) from None
        except Exception as exc:
            raise InvalidTemplate(
                f"cannot be compiled ({type(exc).__name__}: {exc})",
                template=filename or name or self.label,
            ) from None

    def _load_template(self, name: str, globals: MutableMapping[str, Any] | None) -> Any:
        # A partial that changed since the checks fails this recipient only.
        # Loaded and cached by its one name: one file, one compiled module.
        key = self._partial_keys.get(name)
        if key is None:
            try:
                key = self.partial_key(name, included_from=self.label, line=None)
            except InvalidTemplate:
                key = name  # the loader refuses it, saying why
        try:
            return super()._load_template(key, globals)
        except TemplateNotFound:
            raise
        except (InvalidTemplate, JinjaTemplateError) as exc:
            raise TemplateRuntimeError(str(exc)) from None

    # -- run time -------------------------------------------------------------------------

    def getattr(self, obj: Any, attribute: str) -> Any:
        """``obj.attribute`` in a template; a recipient's column without the general path.

        ``client.first_name`` is most of what a message looks up. For a
        column name (no underscore in front, not a member of the client) the
        sandbox's answer is known: the column's value, which is never a
        method to wrap or an unsafe attribute, or undefined. The rest goes
        the sandbox's way.
        """
        if type(obj) is Client and attribute[:1] != "_" and attribute not in _CLIENT_MEMBERS:
            try:
                return obj._fields[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if attr in CODE_METHODS and isinstance(obj, Client):
            return False
        return bool(super().is_safe_attribute(obj, attr, value))

    def call_client(self, context: Any, client: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        """``client.promocode('POOL')`` as written in the template."""
        if type(client) is Client:
            return _CODE_CALLS[name](client, *args, **kwargs)
        return self.call(context, self.getattr(client, name), *args, **kwargs)

    def joined(self, values: tuple[Any, ...], markup: bool) -> str:
        size = 0
        for value in values:
            if type(value) is str:
                size += len(value)
            else:
                size += limits.printed_size(value)
        if size > render_limits.LIMITS.text:
            limits.check_text_length(size, "'~' result")
        budget = self.budget
        budget.left -= size
        if budget.left < 0:
            budget.spend(0)
        return markup_join(values) if markup else str_join(values)

    def concat(self, pieces: Any) -> str:
        """The output of a macro, ``{% set %}`` block, ``{% filter %}`` or ``caller()``."""
        if type(pieces) is not list:
            pieces = list(pieces)
        size = sum(map(len, pieces))
        limits.check_text_length(size, "a block's output")
        self.budget.spend(size + len(pieces))
        return "".join(pieces)

    def compared(self, value: Any) -> Any:
        """An operand of ``==``, ``<``, ``in``…: a list pays first for what comparing it reads."""
        if type(value) in limits.COMPARED_CONTAINERS:
            self.budget.spend(limits.comparison_cost(value))
        return value

    def spend_literal(self, units: int, value: Any) -> Any:
        self.budget.spend(units)
        return value

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        handler = limits.BINARY_OPERATORS.get(operator_name)
        if handler is None:
            return super().call_binop(context, operator_name, left, right)
        return self.budget.spend_on(handler(left, right))

    def wrap_str_format(self, value: Any) -> Any:
        return checked_str_format(self, value)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        budget = __self.budget
        cost = 4 + len(args) + len(kwargs)
        plain = True
        for argument in args:
            kind = type(argument)
            if kind in _SIZED_TYPES:
                cost += len(argument)
            elif kind not in _SCALAR_TYPES:
                plain = False
        if kwargs:
            for argument in kwargs.values():
                kind = type(argument)
                if kind in _SIZED_TYPES:
                    cost += len(argument)
                elif kind not in _SCALAR_TYPES:
                    plain = False
        if not plain:
            args, kwargs, extra = costs.counted_arguments(budget, args, kwargs)
            cost += extra
        cost += costs.method_cost(__obj, args, kwargs)
        budget.left -= cost
        if budget.left < 0:
            budget.spend(0)
        return budget.spend_on(super().call(__context, __obj, *args, **kwargs))


def make_environment(template: str | Path | None = None) -> MessageEnvironment:
    """The environment for one template; its partials come from ``template``'s folder."""
    folder = Path(template).parent if template is not None else None
    env = MessageEnvironment(
        undefined=RecipientUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=limits.printable,
        loader=PartialLoader(folder),
        auto_reload=False,
        folder=folder,
        label=str(template) if template is not None else "template",
    )
    for name in ("cycler", "joiner", "lipsum"):
        env.globals.pop(name, None)
    env.globals["range"] = limits.limited_range
    env.filters = dict(env.filters)
    costs.guard_filters(env.filters, env.budget)
    env.tests = dict(env.tests)
    costs.guard_tests(env.tests, env.budget)
    return env
