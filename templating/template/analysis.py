"""Static analysis of a template: its parts, the pools it uses, the columns it reads.

The pool argument of every code function must be a string literal, so the
pools a mailing needs are known before anything is sent; a call with any
other argument is reported with its line.

:func:`check_ast` refuses, with its line, what would let a template use
codes or resources the analysis cannot see: the code functions are reached
only as ``client.promocode('POOL')`` (or ``last_promocode``/``promocodes``)
written out, never through an alias (``client['promocode']``, ``|attr``,
``{% set p = client.promocode %}``, a macro argument, ``map``...), and the
name ``client`` is used only as ``client.COLUMN`` or ``client['COLUMN']``,
so the recipient object itself never travels anywhere an alias could be
made from. It also bounds how deeply statements and expressions nest (the
Python compiler fails on deep nesting) and requires partials
(``{% include %}``, ``{% import %}``) to be named by string literals, so
they too are read and analysed before anything is rendered.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from jinja2 import nodes

from promomail.templating.errors import InvalidTemplate
from promomail.templating.template.client import CODE_METHODS, ISSUING, REISSUING

__all__ = [
    "CLIENT",
    "CLIENT_MEMBERS",
    "ISSUING",
    "MAX_BLOCK_DEPTH",
    "MAX_EXPRESSION_DEPTH",
    "REISSUING",
    "NonLiteralPool",
    "TemplateUsage",
    "analyze",
    "check_ast",
    "code_call_function",
    "partial_references",
]

CLIENT = "client"
#: Attributes of ``client`` that are not recipient columns.
CLIENT_MEMBERS = frozenset({"id", *CODE_METHODS})
#: ``{% for %}``, ``{% if %}``, ``{% macro %}``... nested in one another.
MAX_BLOCK_DEPTH = 12
#: Operators, calls, filters and brackets nested in one expression.
MAX_EXPRESSION_DEPTH = 40

_BLOCK_NODES = (
    nodes.For,
    nodes.If,
    nodes.Macro,
    nodes.CallBlock,
    nodes.FilterBlock,
    nodes.With,
    nodes.Block,
    nodes.AssignBlock,
    nodes.Scope,
    nodes.ScopedEvalContextModifier,
)
#: Filters and tests that let a template read a column a recipient may lack.
_FALLBACKS = frozenset({"default", "d", "defined", "undefined"})
_CLIENT_FORMS = (
    "client.COLUMN, client['COLUMN'] or a code function called as client.promocode('POOL')"
)


@dataclass(frozen=True)
class NonLiteralPool:
    function: str
    line: int


@dataclass
class TemplateUsage:
    parts: tuple[str, ...]
    issues_from: dict[str, int] = field(default_factory=dict)  # pool ref → first line
    reissues_from: dict[str, int] = field(default_factory=dict)
    non_literal: list[NonLiteralPool] = field(default_factory=list)
    columns: dict[str, int] = field(default_factory=dict)  # column → first line
    #: Columns read with a fallback somewhere (``client.vip|default('no')``,
    #: ``client.vip is defined``): a recipient without them still renders.
    optional_columns: set[str] = field(default_factory=set)
    #: Columns first read inside a partial: (partial, line in it); the line
    #: in :attr:`columns` is then the root template's include.
    column_partials: dict[str, tuple[str, int]] = field(default_factory=dict)
    #: Partials the template includes or imports (directly or not), by name.
    partials: list[str] = field(default_factory=list)

    @property
    def required_columns(self) -> dict[str, int]:
        """Columns read with no fallback anywhere: a recipient without one fails."""
        return {c: line for c, line in self.columns.items() if c not in self.optional_columns}

    @property
    def pool_refs(self) -> list[str]:
        return list(dict.fromkeys([*self.issues_from, *self.reissues_from]))


def analyze(
    ast: nodes.Template, parts: tuple[str, ...], partials: Mapping[str, nodes.Template]
) -> TemplateUsage:
    """Pools, columns and partials of a template (its ``parts``), its ``partials``
    (every partial it uses, by name, as parsed) included. A function of the
    trees alone: reading and parsing the files is the environment's work.

    A use inside a partial is reported at the line of the root template's
    ``{% include %}`` (or ``{% import %}``) that brings it in.
    """
    usage = TemplateUsage(parts)
    usage.partials = list(partials)
    _collect(ast, usage, None, partials, ())
    return usage


def _collect(
    ast: nodes.Template,
    usage: TemplateUsage,
    at_line: int | None,
    partials: Mapping[str, nodes.Template],
    stack: tuple[str, ...],
) -> None:
    for call in ast.find_all(nodes.Call):
        function = _client_method(call.node)
        if function is None:
            continue
        line = at_line or call.lineno
        argument = call.args[0] if len(call.args) == 1 and not call.kwargs else None
        if (
            not isinstance(argument, nodes.Const)
            or not isinstance(argument.value, str)
            or call.dyn_args is not None
            or call.dyn_kwargs is not None
        ):
            usage.non_literal.append(NonLiteralPool(function, line))
            continue
        target = usage.issues_from if function in ISSUING else usage.reissues_from
        target.setdefault(argument.value, line)
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        column = _client_column(node)
        if column is not None and column not in CLIENT_MEMBERS and column not in usage.columns:
            usage.columns[column] = at_line or node.lineno
            if stack:
                usage.column_partials[column] = (stack[-1], node.lineno)
    for guard in ast.find_all((nodes.Filter, nodes.Test)):
        if guard.name in _FALLBACKS:
            column = _client_column(guard.node) if guard.node is not None else None
            if column is not None:
                usage.optional_columns.add(column)
    for name, line in partial_references(ast):
        partial = partials.get(name)
        if partial is not None and name not in stack:
            _collect(partial, usage, at_line or line, partials, (*stack, name))


def partial_references(ast: nodes.Template) -> Iterator[tuple[str, int]]:
    """(name, line) of every partial the template includes or imports."""
    for node in ast.find_all((nodes.Include, nodes.Import, nodes.FromImport)):
        name = node.template  # type: ignore[attr-defined]
        if isinstance(name, nodes.Const) and isinstance(name.value, str):
            yield name.value, node.lineno


def code_call_function(node: nodes.Call) -> str | None:
    """``promocode`` for ``client.promocode(...)`` written out: the only way to call it."""
    return _client_method(node.node)


def _client_method(node: nodes.Node) -> str | None:
    if (
        isinstance(node, nodes.Getattr)
        and isinstance(node.node, nodes.Name)
        and node.node.name == CLIENT
        and node.attr in CODE_METHODS
    ):
        return node.attr
    return None


def _client_column(node: nodes.Node) -> str | None:
    if not (isinstance(node, (nodes.Getattr, nodes.Getitem))):
        return None
    if not (isinstance(node.node, nodes.Name) and node.node.name == CLIENT):
        return None
    if isinstance(node, nodes.Getattr):
        return str(node.attr)
    if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
        return node.arg.value
    return None


# -- checks ---------------------------------------------------------------------------


def check_ast(ast: nodes.Template, template: str) -> None:
    """Refuse (InvalidTemplate with the line) what the module docstring lists."""
    parents: dict[int, nodes.Node] = {}
    pending: list[tuple[nodes.Node, int, int]] = [(ast, 0, 0)]
    while pending:
        node, blocks, expressions = pending.pop()
        if isinstance(node, _BLOCK_NODES):
            blocks += 1
            if blocks > MAX_BLOCK_DEPTH:
                raise InvalidTemplate(
                    f"statements nest more than {MAX_BLOCK_DEPTH} deep",
                    template=template,
                    line=node.lineno,
                )
        if isinstance(node, nodes.Expr):
            expressions += 1
            if expressions > MAX_EXPRESSION_DEPTH:
                raise InvalidTemplate(
                    f"an expression nests more than {MAX_EXPRESSION_DEPTH} deep",
                    template=template,
                    line=node.lineno,
                )
        elif isinstance(node, (nodes.Stmt, nodes.Template)):
            expressions = 0
        _check_node(node, parents, template)
        for child in node.iter_child_nodes():
            parents[id(child)] = node
            pending.append((child, blocks, expressions))


def _fail(message: str, template: str, node: nodes.Node) -> InvalidTemplate:
    return InvalidTemplate(message, template=template, line=getattr(node, "lineno", None))


def _check_node(node: nodes.Node, parents: dict[int, nodes.Node], template: str) -> None:
    if isinstance(node, nodes.Name) and node.name == CLIENT:
        _check_client_name(node, parents, template)
    elif isinstance(node, (nodes.Import, nodes.FromImport, nodes.Include, nodes.Extends)):
        _check_template_reference(node, template)
    elif isinstance(node, nodes.Macro) and node.name == CLIENT:
        raise _fail("a macro cannot be named client", template, node)
    elif isinstance(node, nodes.NSRef) and node.name == CLIENT:
        raise _fail("client cannot be assigned to", template, node)


def _check_client_name(node: nodes.Name, parents: dict[int, nodes.Node], template: str) -> None:
    if node.ctx != "load":
        raise _fail(
            "client cannot be assigned, looped over or used as a parameter name", template, node
        )
    parent = parents.get(id(node))
    if isinstance(parent, nodes.Getattr) and parent.node is node:
        if parent.attr in CODE_METHODS:
            _check_code_function(parent, parents, template)
        return
    if isinstance(parent, nodes.Getitem) and parent.node is node:
        key = parent.arg
        if not (isinstance(key, nodes.Const) and isinstance(key.value, str)):
            raise _fail("client[...] needs the column name as a string literal", template, node)
        if key.value in CODE_METHODS:
            raise _fail(
                f"client[{key.value!r}]: call the code function as client.{key.value}('POOL')",
                template,
                node,
            )
        return
    raise _fail(f"client can only be used as {_CLIENT_FORMS}", template, node)


def _check_code_function(
    getattr_node: nodes.Getattr, parents: dict[int, nodes.Node], template: str
) -> None:
    name = getattr_node.attr
    call = parents.get(id(getattr_node))
    if not (isinstance(call, nodes.Call) and call.node is getattr_node):
        raise _fail(
            f"client.{name} can only be called where it is written, as client.{name}('POOL')",
            template,
            getattr_node,
        )
    if isinstance(parents.get(id(call)), nodes.CallBlock):
        raise _fail(f"client.{name}() cannot be used with {{% call %}}", template, call)


def _check_template_reference(node: nodes.Node, template: str) -> None:
    if isinstance(node, nodes.Extends):
        raise _fail(
            "{% extends %} is not supported: define the subject, text and html blocks in "
            "this file and {% include %} or {% import %} shared pieces from its folder",
            template,
            node,
        )
    name = node.template  # type: ignore[attr-defined]
    if not (isinstance(name, nodes.Const) and isinstance(name.value, str)):
        raise _fail(
            "a partial must be named by a string literal, e.g. {% include 'footer.j2' %}",
            template,
            node,
        )
    if isinstance(node, nodes.Import) and node.target == CLIENT:
        raise _fail("an import cannot be named client", template, node)
    if isinstance(node, nodes.FromImport):
        for imported in node.names:
            alias = imported[1] if isinstance(imported, tuple) else imported
            if alias == CLIENT:
                raise _fail("an import cannot be named client", template, node)
