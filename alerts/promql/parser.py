"""Recursive-descent parser for the PromQL subset fleetmon evaluates.

Precedence and type rules follow Prometheus 2.42 (``promql/parser``): ``^`` binds tightest
and is right-associative, unary minus binds like ``*``, then ``+ -``, comparisons,
``and unless``, ``or``. Constructs outside the subset (``offset``, ``@``, subqueries, functions and
aggregations fleetmon does not implement) are refused here, at load time, with their position:
never evaluated wrongly.
"""

from __future__ import annotations

from alerts.errors import ParseError
from alerts.promql import ast
from alerts.promql.ast import MATRIX, SCALAR, STRING, VECTOR
from alerts.promql.labels import NAME, Matcher, valid_label_name
from alerts.promql.lexer import DURATION, EOF, IDENT, KEYWORDS, NUMBER, OP, Token, tokenize
from alerts.promql.lexer import STRING as T_STRING

#: Supported functions: argument types and result type.
FUNCTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "rate": ((MATRIX,), VECTOR),
    "irate": ((MATRIX,), VECTOR),
    "increase": ((MATRIX,), VECTOR),
    "delta": ((MATRIX,), VECTOR),
    "changes": ((MATRIX,), VECTOR),
    "resets": ((MATRIX,), VECTOR),
    "avg_over_time": ((MATRIX,), VECTOR),
    "min_over_time": ((MATRIX,), VECTOR),
    "max_over_time": ((MATRIX,), VECTOR),
    "sum_over_time": ((MATRIX,), VECTOR),
    "count_over_time": ((MATRIX,), VECTOR),
    "last_over_time": ((MATRIX,), VECTOR),
    "absent_over_time": ((MATRIX,), VECTOR),
    "absent": ((VECTOR,), VECTOR),
    "time": ((), SCALAR),
    "clamp_min": ((VECTOR, SCALAR), VECTOR),
    "clamp_max": ((VECTOR, SCALAR), VECTOR),
    "clamp": ((VECTOR, SCALAR, SCALAR), VECTOR),
    "abs": ((VECTOR,), VECTOR),
    "vector": ((SCALAR,), VECTOR),
    "scalar": ((VECTOR,), SCALAR),
}

#: Prometheus functions fleetmon knows of but does not implement: a clearer message than "unknown".
PROMETHEUS_ONLY_FUNCTIONS = frozenset({
    "acos", "acosh", "asin", "asinh", "atan", "atanh", "ceil", "cos", "cosh", "count_values",
    "day_of_month", "day_of_week", "day_of_year", "days_in_month", "deg", "deriv", "exp", "floor",
    "histogram_count", "histogram_fraction", "histogram_quantile", "histogram_sum", "holt_winters",
    "hour", "idelta", "label_join", "label_replace", "ln", "log10", "log2", "minute", "month",
    "pi", "predict_linear", "present_over_time", "quantile_over_time", "rad", "round", "sgn",
    "sin", "sinh", "sort", "sort_desc", "sqrt", "stddev_over_time", "stdvar_over_time", "tan",
    "tanh", "timestamp", "year",
})

AGGREGATIONS = frozenset({"sum", "avg", "min", "max", "count"})
PROMETHEUS_ONLY_AGGREGATIONS = frozenset({
    "topk", "bottomk", "quantile", "count_values", "stddev", "stdvar", "group",
})

COMPARISONS = frozenset({"==", "!=", "<", ">", "<=", ">="})
SET_OPS = frozenset({"and", "or", "unless"})
ARITHMETIC = frozenset({"+", "-", "*", "/", "%", "^"})
_PRECEDENCE = {
    "or": 1, "and": 2, "unless": 2,
    "==": 3, "!=": 3, "<": 3, ">": 3, "<=": 3, ">=": 3,
    "+": 4, "-": 4, "*": 5, "/": 5, "%": 5, "^": 6,
}
_MUL_PREC = 5


class Parser:
    def __init__(self, src: str) -> None:
        self.src = src
        self.toks = tokenize(src)
        self.i = 0

    # -- token helpers ----------------------------------------------------------------------
    @property
    def tok(self) -> Token:
        return self.toks[self.i]

    def advance(self) -> Token:
        t = self.toks[self.i]
        self.i += 1
        return t

    def at_op(self, *ops: str) -> bool:
        t = self.tok
        return t.kind == OP and t.text in ops

    def at_kw(self, *words: str) -> bool:
        t = self.tok
        return t.kind == IDENT and t.text.lower() in words

    def expect_op(self, op: str, what: str) -> Token:
        if not self.at_op(op):
            raise self.error(f"unexpected {self.describe(self.tok)} in {what}, expected \"{op}\"")
        return self.advance()

    def describe(self, t: Token) -> str:
        if t.kind == EOF:
            return "end of input"
        return f"{t.kind} {t.text!r}" if t.kind != OP else repr(t.text)

    def error(self, msg: str, pos: int | None = None) -> ParseError:
        return ParseError(msg, self.tok.pos if pos is None else pos)

    # -- grammar ----------------------------------------------------------------------------
    def parse(self) -> ast.Expr:
        if self.tok.kind == EOF:
            raise self.error("no expression found in input")
        expr = self.parse_binary(0)
        if self.tok.kind != EOF:
            raise self.error(f"unexpected {self.describe(self.tok)}")
        return expr

    def binary_op(self) -> str | None:
        t = self.tok
        if t.kind == OP and t.text in _PRECEDENCE:
            return t.text
        if t.kind == IDENT and t.text.lower() in SET_OPS:
            return t.text.lower()
        if t.kind == IDENT and t.text.lower() == "atan2":
            raise self.error("operator atan2 is not supported by fleetmon")
        return None

    def parse_binary(self, min_prec: int) -> ast.Expr:
        lhs = self.parse_unary()
        while True:
            op = self.binary_op()
            if op is None or _PRECEDENCE[op] < min_prec:
                return lhs
            op_tok = self.advance()
            return_bool, matching = self.parse_modifiers(op)
            # "^" is right-associative; everything else is left-associative.
            next_min = _PRECEDENCE[op] if op == "^" else _PRECEDENCE[op] + 1
            rhs = self.parse_binary(next_min)
            lhs = self.check_binary(op, lhs, rhs, return_bool=return_bool, matching=matching, pos=op_tok.pos)

    def parse_modifiers(self, op: str) -> tuple[bool, ast.VectorMatching | None]:
        return_bool = False
        matching: ast.VectorMatching | None = None
        if self.at_kw("bool"):
            if op not in COMPARISONS:
                raise self.error("bool modifier can only be used on comparison operators")
            self.advance()
            return_bool = True
        if self.at_kw("on", "ignoring"):
            on = self.advance().text.lower() == "on"
            names = self.parse_label_list()
            matching = ast.VectorMatching("one-to-one", on, frozenset(names))
        if self.at_kw("group_left", "group_right"):
            if op in SET_OPS:
                raise self.error(f"no grouping allowed for \"{op}\" operation")
            if matching is None:
                raise self.error("unexpected grouping modifier: group_left/group_right need on() or ignoring()")
            card = "many-to-one" if self.advance().text.lower() == "group_left" else "one-to-many"
            include: list[str] = []
            if self.at_op("("):
                include = self.parse_label_list()
            for name in include:
                if matching.on and name in matching.labels:
                    raise self.error(f"label \"{name}\" must not occur in ON and GROUP clause at once")
            matching = ast.VectorMatching(card, matching.on, matching.labels, tuple(include))
        return return_bool, matching

    def parse_label_list(self) -> list[str]:
        self.expect_op("(", "grouping opts")
        names: list[str] = []
        while not self.at_op(")"):
            t = self.tok
            if t.kind != IDENT or not valid_label_name(t.text):
                raise self.error(f"unexpected {self.describe(t)} in grouping opts, expected label")
            names.append(self.advance().text)
            if self.at_op(","):
                self.advance()
            elif not self.at_op(")"):
                raise self.error(f"unexpected {self.describe(self.tok)} in grouping opts, expected \",\" or \")\"")
        self.advance()
        return names

    def parse_unary(self) -> ast.Expr:
        if self.at_op("-", "+"):
            t = self.advance()
            # Unary minus binds like "*" (Prometheus: unary_expr %prec MUL), so only "^" binds tighter.
            operand = self.parse_binary(_MUL_PREC + 1)
            if operand.type not in (SCALAR, VECTOR):
                raise ParseError(f"unary expression only allowed on expressions of type scalar or "
                                 f"instant vector, got {operand.type}", t.pos)
            if isinstance(operand, ast.NumberLiteral):
                return ast.NumberLiteral(-operand.value if t.text == "-" else operand.value, pos=t.pos)
            if t.text == "+":
                return operand
            return ast.Unary("-", operand, pos=t.pos)
        return self.parse_postfix(self.parse_primary())

    def parse_postfix(self, expr: ast.Expr) -> ast.Expr:
        while True:
            if self.at_op("["):
                start = self.tok.pos
                self.advance()
                if self.tok.kind != DURATION:
                    raise self.error(f"unexpected {self.describe(self.tok)} in range, expected duration")
                dur = self.advance()
                if self.at_op(":") or (self.tok.kind == IDENT and self.tok.text.startswith(":")):
                    # The lexer reads ":1m" as an identifier (metric names may hold colons).
                    raise ParseError("subqueries ([range:resolution]) are not supported by fleetmon", start)
                self.expect_op("]", "range")
                if not isinstance(expr, ast.VectorSelector):
                    raise ParseError("ranges only allowed for vector selectors", start)
                assert isinstance(dur.value, int)
                if dur.value <= 0:
                    raise ParseError("range must be greater than zero", dur.pos)
                expr = ast.MatrixSelector(expr, dur.value, pos=expr.pos)
            elif self.at_kw("offset"):
                raise self.error("the offset modifier is not supported by fleetmon")
            elif self.at_op("@"):
                raise self.error("the @ modifier is not supported by fleetmon")
            else:
                return expr

    def parse_primary(self) -> ast.Expr:
        t = self.tok
        if t.kind == NUMBER:
            self.advance()
            assert isinstance(t.value, float)
            return ast.NumberLiteral(t.value, pos=t.pos)
        if t.kind == T_STRING:
            self.advance()
            assert isinstance(t.value, str)
            return ast.StringLiteral(t.value, pos=t.pos)
        if t.kind == DURATION:
            raise self.error(f"unexpected duration {t.text!r}: durations are only allowed in ranges")
        if self.at_op("("):
            self.advance()
            inner = self.parse_binary(0)
            self.expect_op(")", "paren expression")
            return ast.Paren(inner, pos=t.pos)
        if self.at_op("{"):
            return self.parse_selector("", t.pos)
        if t.kind == IDENT:
            low = t.text.lower()
            nxt = self.toks[self.i + 1]
            opens = (nxt.kind == OP and nxt.text == "(") or (
                nxt.kind == IDENT and nxt.text.lower() in ("by", "without"))
            if (low in AGGREGATIONS or low in PROMETHEUS_ONLY_AGGREGATIONS) and opens:
                return self.parse_aggregate()
            if nxt.kind == OP and nxt.text == "(":
                return self.parse_call()
            if low in KEYWORDS:
                raise self.error(f"unexpected keyword {t.text!r}")
            self.advance()
            return self.parse_selector(t.text, t.pos)
        raise self.error(f"unexpected {self.describe(t)}")

    def parse_selector(self, name: str, pos: int) -> ast.VectorSelector:
        matchers: list[Matcher] = []
        if self.at_op("{"):
            self.advance()
            while not self.at_op("}"):
                lt = self.tok
                if lt.kind != IDENT or not valid_label_name(lt.text):
                    raise self.error(f"unexpected {self.describe(lt)} in label matching, expected label")
                self.advance()
                if not self.at_op("=", "!=", "=~", "!~"):
                    raise self.error(f"unexpected {self.describe(self.tok)} in label matching, "
                                     "expected one of \"=\", \"!=\", \"=~\", \"!~\"")
                op = self.advance().text
                vt = self.tok
                if vt.kind != T_STRING:
                    raise self.error(f"unexpected {self.describe(vt)} in label matching, expected string")
                self.advance()
                assert isinstance(vt.value, str)
                matchers.append(Matcher.new(lt.text, op, vt.value, vt.pos))
                if self.at_op(","):
                    self.advance()
                elif not self.at_op("}"):
                    raise self.error(f"unexpected {self.describe(self.tok)} in label matching, "
                                     "expected \",\" or \"}\"")
            self.advance()
        if name:
            if any(m.name == NAME for m in matchers):
                raise ParseError(f"metric name must not be set twice: {name!r}", pos)
            matchers.insert(0, Matcher.new(NAME, "=", name))
        else:
            eq = [m.value for m in matchers if m.name == NAME and m.op == "="]
            name = eq[0] if len(eq) == 1 else ""
        if not any(not m.matches("") for m in matchers):
            raise ParseError("vector selector must contain at least one non-empty matcher", pos)
        return ast.VectorSelector(name, matchers, pos=pos)

    def parse_call(self) -> ast.Call:
        t = self.advance()
        name = t.text
        if name not in FUNCTIONS:
            if name in PROMETHEUS_ONLY_FUNCTIONS:
                raise ParseError(f"function {name}() is not supported by fleetmon", t.pos)
            raise ParseError(f"unknown function with name {name!r}", t.pos)
        self.expect_op("(", "function call")
        args: list[ast.Expr] = []
        while not self.at_op(")"):
            args.append(self.parse_binary(0))
            if self.at_op(","):
                self.advance()
            elif not self.at_op(")"):
                raise self.error(f"unexpected {self.describe(self.tok)} in function call, expected \",\" or \")\"")
        self.advance()
        want, ret = FUNCTIONS[name]
        if len(args) != len(want):
            raise ParseError(f"expected {len(want)} argument(s) in call to {name!r}, got {len(args)}", t.pos)
        for i, (arg, typ) in enumerate(zip(args, want, strict=True)):
            if arg.type != typ:
                raise ParseError(f"expected type {typ} in call to function {name!r}, argument {i + 1}, "
                                 f"got {arg.type}", arg.pos)
        return ast.Call(name, args, ret, pos=t.pos)

    def parse_aggregate(self) -> ast.Aggregate:
        t = self.advance()
        op = t.text.lower()
        if op in PROMETHEUS_ONLY_AGGREGATIONS:
            raise ParseError(f"aggregation {op}() is not supported by fleetmon", t.pos)
        grouping: list[str] = []
        without = has_grouping = False
        if self.at_kw("by", "without"):
            without = self.advance().text.lower() == "without"
            grouping = self.parse_label_list()
            has_grouping = True
        self.expect_op("(", "aggregation")
        if self.at_op(")"):
            raise self.error(f"no arguments for aggregate expression {op!r} provided")
        inner = self.parse_binary(0)
        if self.at_op(","):
            raise self.error(f"aggregation {op}() takes a single argument")
        self.expect_op(")", "aggregation")
        if self.at_kw("by", "without"):
            if has_grouping:
                raise self.error("aggregation has both a leading and a trailing grouping clause")
            without = self.advance().text.lower() == "without"
            grouping = self.parse_label_list()
            has_grouping = True
        if inner.type != VECTOR:
            raise ParseError(f"expected type instant vector in aggregation expression, got {inner.type}", inner.pos)
        return ast.Aggregate(op, inner, frozenset(grouping), without, has_grouping, pos=t.pos)

    def check_binary(self, op: str, lhs: ast.Expr, rhs: ast.Expr, *, return_bool: bool,
                     matching: ast.VectorMatching | None, pos: int) -> ast.Binary:
        for side in (lhs, rhs):
            if side.type not in (SCALAR, VECTOR):
                raise ParseError("binary expression must contain only scalar and instant vector types", side.pos)
        both_vectors = lhs.type == VECTOR and rhs.type == VECTOR
        if op in COMPARISONS and lhs.type == SCALAR and rhs.type == SCALAR and not return_bool:
            raise ParseError("comparisons between scalars must use BOOL modifier", pos)
        if op in SET_OPS:
            if not both_vectors:
                raise ParseError(f"set operator \"{op}\" not allowed in binary scalar expression", pos)
            base = matching or ast.VectorMatching("many-to-many", False, frozenset())
            matching = ast.VectorMatching("many-to-many", base.on, base.labels)
        elif matching is not None and not both_vectors:
            raise ParseError("vector matching only allowed between instant vectors", pos)
        elif both_vectors and matching is None:
            matching = ast.VectorMatching("one-to-one", False, frozenset())
        return ast.Binary(op, lhs, rhs, return_bool, matching, pos=lhs.pos)


def parse(src: str) -> ast.Expr:
    """Parse an expression; raises ``ParseError`` with the offset of the problem."""
    try:
        return Parser(src).parse()
    except RecursionError:  # the parser recurses per nesting level and per operator
        raise ParseError("expression nests too deeply (parentheses, unary or binary operators)", 0) from None


def check_rule_expr(expr: ast.Expr) -> None:
    if expr.type not in (VECTOR, SCALAR):
        raise ParseError(f"rule expression must be of type instant vector or scalar, got {expr.type}", expr.pos)


__all__ = ["AGGREGATIONS", "FUNCTIONS", "STRING", "check_rule_expr", "parse"]
