"""Compile time: constant folding that cannot fail or run long, and code that
routes each operation of a template through the environment's checks.

The code generator writes calls of :class:`~templating.template.environment.MessageEnvironment`
methods (``joined``, ``compared``, ``spend_literal``, ``call_client``) and of
its :class:`~templating.template.limits.Budget` where Jinja would write the
operation itself; the module docstring of :mod:`templating.template.environment`
lists what is checked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame, operators, optimizeconst
from jinja2.optimizer import Optimizer
from jinja2.visitor import NodeTransformer

from promomail.templating.template import limits
from promomail.templating.template.analysis import code_call_function

#: Nodes never evaluated at compile time (see :class:`SafeOptimizer`).
NOT_FOLDED = (nodes.Concat, nodes.Filter, nodes.Test)


def unfoldable(node: nodes.Node) -> bool:
    return isinstance(node, NOT_FOLDED) or node.find(NOT_FOLDED) is not None  # type: ignore[arg-type]


class SafeOptimizer(Optimizer):
    """Constant folding that cannot fail, leak or run long.

    Jinja folds ``a ~ b`` with a bare ``str()`` of each side, which would
    print an object's repr at compile time: left to run time, ``~`` goes
    through the printing checks. And some of Jinja's folds (``and``, ``if``
    expressions) test a value's truth without catching what that raises (a
    strict undefined does): a fold that fails is simply left to run time.

    Filters and tests are never folded: a filter with literal arguments can
    run as long as any other (``1.5|round(10000000, 'ceil')`` builds a
    ten-million-digit number, ``|urlize`` of a long literal is quadratic), and
    at compile time no render's timer or work budget is running; ``check``
    would hang on a template it never renders. At run time they go through
    the same guards as any filter, against the message's budget and deadline.
    What is still folded (operators the sandbox does not intercept,
    comparisons, attribute and item lookups on literals) takes time linear in
    the template's own text, which is bounded. Calls were never folded.
    """

    def generic_visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> nodes.Node:
        node = NodeTransformer.generic_visit(self, node, *args, **kwargs)
        if isinstance(node, nodes.Expr) and not unfoldable(node):
            try:
                return nodes.Const.from_untrusted(
                    node.as_const(args[0] if args else None),
                    lineno=node.lineno,
                    environment=self.environment,
                )
            except Exception:
                pass
        return node


class GuardedCodeGenerator(CodeGenerator):
    """Compiles the checks of the module docstring into the template code."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.optimizer is not None:
            self.optimizer = SafeOptimizer(self.environment)

    def _output_child_to_const(self, node: nodes.Expr, frame: Frame, finalize: Any) -> str:
        if unfoldable(node):
            raise nodes.Impossible()
        return super()._output_child_to_const(node, frame, finalize)

    def visit_EvalContextModifier(self, node: nodes.EvalContextModifier, frame: Frame) -> None:
        # Jinja evaluates ``{% autoescape EXPR %}`` at compile time when it can;
        # an expression with a filter or test is left to run time (volatile).
        if any(unfoldable(keyword.value) for keyword in node.options):
            for keyword in node.options:
                self.writeline(f"context.eval_ctx.{keyword.key} = ")
                self.visit(keyword.value, frame)
            frame.eval_ctx.volatile = True
            return
        super().visit_EvalContextModifier(node, frame)

    _loop_iterables: set[int] | None = None

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        # The iterable is written somewhere inside the loop code Jinja makes;
        # visit() below recognises it and wraps it.
        if self._loop_iterables is None:
            self._loop_iterables = set()
        self._loop_iterables.add(id(node.iter))
        super().visit_For(node, frame)

    def visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
        if self._loop_iterables and id(node) in self._loop_iterables:
            self._loop_iterables.discard(id(node))
            self.write("environment.budget.counted(")
            super().visit(node, *args, **kwargs)
            self.write(")")
            return None
        return super().visit(node, *args, **kwargs)

    def visit_Call(self, node: nodes.Call, frame: Frame, forward_caller: bool = False) -> None:
        # client.promocode(...) as written: a direct call, never a bound
        # method fetched through the sandbox (which refuses to hand one out).
        # The analysis refuses any argument but a string literal before a
        # render; check and preview report it.
        if not forward_caller and code_call_function(node) is not None:
            target: nodes.Getattr = node.node  # type: ignore[assignment]
            self.write("environment.call_client(context, ")
            self.visit(target.node, frame)
            self.write(f", {target.attr!r}")
            self.signature(node, frame)
            self.write(")")
            return
        super().visit_Call(node, frame, forward_caller=forward_caller)

    @optimizeconst
    def visit_Compare(self, node: nodes.Compare, frame: Frame) -> None:
        # Each operand through environment.compared: lists pay for what they hold.
        self.write("(")
        self._compared(node.expr, frame)
        for operand in node.ops:
            self.write(f" {operators[operand.op]} ")
            self._compared(operand.expr, frame)
        self.write(")")

    def _compared(self, node: nodes.Expr, frame: Frame) -> None:
        if isinstance(node, nodes.Const) and type(node.value) not in limits.COMPARED_CONTAINERS:
            self.visit(node, frame)
            return
        self.write("environment.compared(")
        self.visit(node, frame)
        self.write(")")

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            markup = "context.eval_ctx.volatile"
        else:
            markup = "True" if frame.eval_ctx.autoescape else "False"
        self.write("environment.joined((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(f"), {markup})")

    def _spending(self, units: int, visit: Callable[[], None]) -> None:
        self.write(f"environment.spend_literal({units}, ")
        visit()
        self.write(")")

    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self._spending(
            8 + len(node.items), lambda: super(GuardedCodeGenerator, self).visit_List(node, frame)
        )

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        if node.ctx != "load":
            super().visit_Tuple(node, frame)
            return
        self._spending(
            6 + len(node.items), lambda: super(GuardedCodeGenerator, self).visit_Tuple(node, frame)
        )

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self._spending(
            8 + 4 * len(node.items),
            lambda: super(GuardedCodeGenerator, self).visit_Dict(node, frame),
        )

    def visit_Const(self, node: nodes.Const, frame: Frame) -> None:
        value = node.value
        if isinstance(value, (list, tuple, dict)) and value:
            self._spending(
                8 + 4 * len(value),
                lambda: super(GuardedCodeGenerator, self).visit_Const(node, frame),
            )
            return
        super().visit_Const(node, frame)

    def visit_Getitem(self, node: nodes.Getitem, frame: Frame) -> None:
        if isinstance(node.arg, nodes.Slice):
            # A slice copies: paid for like any value built.
            self.write("environment.budget.spend_on(")
            super().visit_Getitem(node, frame)
            self.write(")")
            return
        super().visit_Getitem(node, frame)
