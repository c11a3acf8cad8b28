"""Static analysis of a template: its parts, the pools it uses, the columns it reads.

The pool argument of every code function must be a string literal, so the
pools a mailing needs are known before anything is sent; a call with any
other argument is reported with its line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jinja2 import nodes

from templating.message import ParsedTemplate

ISSUING = frozenset({"promocode", "promocodes"})
REISSUING = frozenset({"last_promocode"})
CLIENT = "client"
#: Attributes of ``client`` that are not recipient columns.
CLIENT_MEMBERS = frozenset({"id", *ISSUING, *REISSUING})


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

    @property
    def pool_refs(self) -> list[str]:
        return list(dict.fromkeys([*self.issues_from, *self.reissues_from]))


def analyze(parsed: ParsedTemplate) -> TemplateUsage:
    usage = TemplateUsage(parsed.parts)
    for call in parsed.ast.find_all(nodes.Call):
        function = _client_method(call.node)
        if function is None:
            continue
        argument = call.args[0] if len(call.args) == 1 and not call.kwargs else None
        if not isinstance(argument, nodes.Const) or not isinstance(argument.value, str):
            usage.non_literal.append(NonLiteralPool(function, call.lineno))
            continue
        target = usage.issues_from if function in ISSUING else usage.reissues_from
        target.setdefault(argument.value, call.lineno)
    for node in parsed.ast.find_all((nodes.Getattr, nodes.Getitem)):
        column = _client_column(node)
        if column is not None and column not in CLIENT_MEMBERS:
            usage.columns.setdefault(column, node.lineno)
    return usage


def _client_method(node: nodes.Node) -> str | None:
    if (
        isinstance(node, nodes.Getattr)
        and isinstance(node.node, nodes.Name)
        and node.node.name == CLIENT
        and node.attr in ISSUING | REISSUING
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
