"""Nothing one recipient's render leaves behind reaches the next one's.

Jinja2 runs a partial's top level once per process and caches the result
(``Template._get_default_module``) for every later ``{% import %}`` and
``{% from ... import %}``: a list, dict or namespace a partial defines would
then live as long as the process, and a macro that appends to it would carry
one recipient's address and code into the next recipient's message (and grow
without bound across a mailing, out of reach of the per-message budget).

Partials' modules are therefore built per render: :class:`PartialTemplate`
keeps them in a :class:`RenderModules` table that the environment empties
before each message (:meth:`MessageEnvironment.begin_render`). Within one
message a partial is still run once, however often it is imported, so a
macro's state is shared by the parts of that message as Jinja would share it.

A partial whose top level only defines macros keeps Jinja's cache: its
module holds macros and text, nothing a template can change, and building it
for every message would cost a render a third more for nothing.

Rebuilt rather than frozen: making a partial's top-level values immutable
would break what templates legitimately do within one message (a namespace
counter, a list collected by a macro) and would still have to cover every
mutable type a template can reach; a module built afresh for each message
gives exactly the render that message would get alone, whatever the partial
keeps.
"""

from __future__ import annotations

from jinja2 import Template, nodes
from jinja2.environment import TemplateModule
from jinja2.runtime import Context


def defines_only_macros(ast: nodes.Template) -> bool:
    """Whether a template's top level is macros and plain text alone."""
    for node in ast.body:
        if isinstance(node, nodes.Macro):
            continue
        if isinstance(node, nodes.Output) and all(
            isinstance(piece, nodes.TemplateData) for piece in node.nodes
        ):
            continue
        return False
    return True


class RenderModules:
    """The partials' modules of the message being rendered, by template."""

    __slots__ = ("_modules", "lasting")

    def __init__(self) -> None:
        self._modules: dict[int, tuple[Template, TemplateModule]] = {}
        #: Names of the partials that define only macros: their modules last.
        self.lasting: set[str] = set()

    def clear(self) -> None:
        self._modules.clear()

    def module_of(self, template: Template) -> TemplateModule:
        # Keyed by identity and holding the template itself, so an id can
        # never be reused by another template while its entry is alive.
        entry = self._modules.get(id(template))
        if entry is None:
            entry = self._modules[id(template)] = (template, template.make_module())
        return entry[1]


class PartialTemplate(Template):
    """A partial whose imported module lasts one message, not one process."""

    def _get_default_module(self, ctx: Context | None = None) -> TemplateModule:
        if ctx is not None and ctx.globals_keys - self.globals.keys():
            # Jinja builds this module afresh on every import anyway.
            return super()._get_default_module(ctx)
        modules: RenderModules = self.environment.render_modules  # type: ignore[attr-defined]
        if self.name in modules.lasting:
            return super()._get_default_module(ctx)
        return modules.module_of(self)
