"""Expression tree of PromQL as Prometheus 2.42 parses it. Every node carries ``pos`` (offset
in the source) so load-time errors can name file:line:col."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from alerts.promql.labels import Matcher

SCALAR, VECTOR, MATRIX, STRING = "scalar", "instant vector", "range vector", "string"

#: ``@`` modifier forms: a fixed unix time, or the query's start/end (both the rule's
#: evaluation time when a rule is evaluated).
AT_NONE, AT_TIME, AT_START, AT_END = "", "time", "start", "end"


@dataclass
class Expr(ABC):
    pos: int = field(default=0, kw_only=True)

    @property
    @abstractmethod
    def type(self) -> str:
        """SCALAR, VECTOR, MATRIX or STRING."""


@dataclass
class NumberLiteral(Expr):
    value: float

    @property
    def type(self) -> str:
        return SCALAR


@dataclass
class StringLiteral(Expr):
    value: str

    @property
    def type(self) -> str:
        return STRING


@dataclass(eq=False)
class VectorSelector(Expr):
    """Also the series part of a range selector (``offset``/``@`` live here, as in Prometheus).
    Compared by identity: the windows index selectors by object."""

    name: str  # "" when only matchers select
    matchers: list[Matcher]
    offset_ms: int = 0
    at: str = AT_NONE
    at_ms: int = 0

    __eq__ = object.__eq__
    __hash__ = object.__hash__

    @property
    def type(self) -> str:
        return VECTOR


@dataclass
class MatrixSelector(Expr):
    vector: VectorSelector
    range_ms: int

    @property
    def type(self) -> str:
        return MATRIX


@dataclass
class Subquery(Expr):
    expr: Expr
    range_ms: int
    step_ms: int  # 0: the default step (the evaluation interval)
    offset_ms: int = 0
    at: str = AT_NONE
    at_ms: int = 0

    @property
    def type(self) -> str:
        return MATRIX


@dataclass
class Call(Expr):
    func: str
    args: list[Expr]
    return_type: str

    @property
    def type(self) -> str:
        return self.return_type


@dataclass
class Aggregate(Expr):
    op: str
    expr: Expr
    grouping: frozenset[str]
    without: bool
    has_grouping: bool  # "by ()" differs from no clause only in printing
    param: Expr | None = None  # topk/bottomk/quantile: a scalar; count_values: a string

    @property
    def type(self) -> str:
        return VECTOR


@dataclass
class VectorMatching:
    card: str  # "one-to-one", "many-to-one", "one-to-many", "many-to-many"
    on: bool
    labels: frozenset[str]
    include: tuple[str, ...] = ()
    #: evaluator's memo: series label set -> match signature
    cache: dict[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]] = field(
        default_factory=dict, compare=False, repr=False)


@dataclass
class Binary(Expr):
    op: str
    lhs: Expr
    rhs: Expr
    return_bool: bool
    matching: VectorMatching | None  # set when both sides are vectors

    @property
    def type(self) -> str:
        if self.lhs.type == SCALAR and self.rhs.type == SCALAR:
            return SCALAR
        return VECTOR


@dataclass
class Unary(Expr):
    op: str
    expr: Expr

    @property
    def type(self) -> str:
        return self.expr.type


@dataclass
class Paren(Expr):
    expr: Expr

    @property
    def type(self) -> str:
        return self.expr.type


def children(node: Expr) -> list[Expr]:
    if isinstance(node, MatrixSelector):
        return [node.vector]
    if isinstance(node, Subquery):
        return [node.expr]
    if isinstance(node, Call):
        return list(node.args)
    if isinstance(node, Aggregate):
        return [node.expr] if node.param is None else [node.param, node.expr]
    if isinstance(node, Binary):
        return [node.lhs, node.rhs]
    if isinstance(node, (Unary, Paren)):
        return [node.expr]
    return []


def walk(node: Expr) -> list[Expr]:
    """All nodes, depth first (used to collect the selectors a rule needs)."""
    out: list[Expr] = [node]
    for c in children(node):
        out.extend(walk(c))
    return out


def unwrap(node: Expr) -> Expr:
    while isinstance(node, Paren):
        node = node.expr
    return node
