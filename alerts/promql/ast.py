"""Expression tree of the PromQL subset. Every node carries ``pos`` (offset in the source) so
load-time errors can name file:line:col."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from alerts.promql.labels import Matcher

SCALAR, VECTOR, MATRIX, STRING = "scalar", "instant vector", "range vector", "string"


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


@dataclass
class VectorSelector(Expr):
    name: str  # "" when only matchers select
    matchers: list[Matcher]

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


def walk(node: Expr) -> list[Expr]:
    """All nodes, depth first (used to collect the selectors a rule needs)."""
    out: list[Expr] = [node]
    children: list[Expr] = []
    if isinstance(node, MatrixSelector):
        children = [node.vector]
    elif isinstance(node, Call):
        children = list(node.args)
    elif isinstance(node, Aggregate):
        children = [node.expr]
    elif isinstance(node, Binary):
        children = [node.lhs, node.rhs]
    elif isinstance(node, (Unary, Paren)):
        children = [node.expr]
    for c in children:
        out.extend(walk(c))
    return out
