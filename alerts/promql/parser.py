"""Recursive-descent parser for PromQL as Prometheus 2.42 parses it (``promql/parser``).

Precedence and type rules follow Prometheus: ``^`` binds tightest and is right-associative,
unary minus binds like ``*``, then ``* / % atan2``, ``+ -``, comparisons, ``and unless``,
``or``; ``offset``, ``@``, ``[range]`` and ``[range:step]`` bind to the selector or subquery
they follow. Errors carry the offset of the offending token.
"""

from __future__ import annotations

import math

from alerts.errors import ParseError
from alerts.promql import ast
from alerts.promql.ast import MATRIX, SCALAR, STRING, VECTOR
from alerts.promql.labels import NAME, Matcher, go_quote, valid_label_name
from alerts.promql.lexer import DURATION, EOF, IDENT, KEYWORDS, NUMBER, OP, Token, tokenize
from alerts.promql.lexer import STRING as T_STRING

#: name -> (argument types, variadic, result type). ``variadic``: 0 = exactly the listed
#: arguments; 1 = the last one is optional; -1 = the last one repeats (Prometheus ``Variadic``).
FUNCTIONS: dict[str, tuple[tuple[str, ...], int, str]] = {
    "abs": ((VECTOR,), 0, VECTOR),
    "absent": ((VECTOR,), 0, VECTOR),
    "absent_over_time": ((MATRIX,), 0, VECTOR),
    "acos": ((VECTOR,), 0, VECTOR),
    "acosh": ((VECTOR,), 0, VECTOR),
    "asin": ((VECTOR,), 0, VECTOR),
    "asinh": ((VECTOR,), 0, VECTOR),
    "atan": ((VECTOR,), 0, VECTOR),
    "atanh": ((VECTOR,), 0, VECTOR),
    "avg_over_time": ((MATRIX,), 0, VECTOR),
    "ceil": ((VECTOR,), 0, VECTOR),
    "changes": ((MATRIX,), 0, VECTOR),
    "clamp": ((VECTOR, SCALAR, SCALAR), 0, VECTOR),
    "clamp_max": ((VECTOR, SCALAR), 0, VECTOR),
    "clamp_min": ((VECTOR, SCALAR), 0, VECTOR),
    "cos": ((VECTOR,), 0, VECTOR),
    "cosh": ((VECTOR,), 0, VECTOR),
    "count_over_time": ((MATRIX,), 0, VECTOR),
    "days_in_month": ((VECTOR,), 1, VECTOR),
    "day_of_month": ((VECTOR,), 1, VECTOR),
    "day_of_week": ((VECTOR,), 1, VECTOR),
    "day_of_year": ((VECTOR,), 1, VECTOR),
    "deg": ((VECTOR,), 0, VECTOR),
    "delta": ((MATRIX,), 0, VECTOR),
    "deriv": ((MATRIX,), 0, VECTOR),
    "exp": ((VECTOR,), 0, VECTOR),
    "floor": ((VECTOR,), 0, VECTOR),
    "histogram_count": ((VECTOR,), 0, VECTOR),
    "histogram_fraction": ((SCALAR, SCALAR, VECTOR), 0, VECTOR),
    "histogram_quantile": ((SCALAR, VECTOR), 0, VECTOR),
    "histogram_sum": ((VECTOR,), 0, VECTOR),
    "holt_winters": ((MATRIX, SCALAR, SCALAR), 0, VECTOR),
    "hour": ((VECTOR,), 1, VECTOR),
    "idelta": ((MATRIX,), 0, VECTOR),
    "increase": ((MATRIX,), 0, VECTOR),
    "irate": ((MATRIX,), 0, VECTOR),
    "label_join": ((VECTOR, STRING, STRING, STRING), -1, VECTOR),
    "label_replace": ((VECTOR, STRING, STRING, STRING, STRING), 0, VECTOR),
    "last_over_time": ((MATRIX,), 0, VECTOR),
    "ln": ((VECTOR,), 0, VECTOR),
    "log10": ((VECTOR,), 0, VECTOR),
    "log2": ((VECTOR,), 0, VECTOR),
    "max_over_time": ((MATRIX,), 0, VECTOR),
    "min_over_time": ((MATRIX,), 0, VECTOR),
    "minute": ((VECTOR,), 1, VECTOR),
    "month": ((VECTOR,), 1, VECTOR),
    "pi": ((), 0, SCALAR),
    "predict_linear": ((MATRIX, SCALAR), 0, VECTOR),
    "present_over_time": ((MATRIX,), 0, VECTOR),
    "quantile_over_time": ((SCALAR, MATRIX), 0, VECTOR),
    "rad": ((VECTOR,), 0, VECTOR),
    "rate": ((MATRIX,), 0, VECTOR),
    "resets": ((MATRIX,), 0, VECTOR),
    "round": ((VECTOR, SCALAR), 1, VECTOR),
    "scalar": ((VECTOR,), 0, SCALAR),
    "sgn": ((VECTOR,), 0, VECTOR),
    "sin": ((VECTOR,), 0, VECTOR),
    "sinh": ((VECTOR,), 0, VECTOR),
    "sort": ((VECTOR,), 0, VECTOR),
    "sort_desc": ((VECTOR,), 0, VECTOR),
    "sqrt": ((VECTOR,), 0, VECTOR),
    "stddev_over_time": ((MATRIX,), 0, VECTOR),
    "stdvar_over_time": ((MATRIX,), 0, VECTOR),
    "sum_over_time": ((MATRIX,), 0, VECTOR),
    "tan": ((VECTOR,), 0, VECTOR),
    "tanh": ((VECTOR,), 0, VECTOR),
    "time": ((), 0, SCALAR),
    "timestamp": ((VECTOR,), 0, VECTOR),
    "vector": ((SCALAR,), 0, VECTOR),
    "year": ((VECTOR,), 1, VECTOR),
}

AGGREGATIONS = frozenset({"sum", "avg", "count", "min", "max", "group", "stddev", "stdvar", "topk", "bottomk",
                          "count_values", "quantile"})
AGGREGATIONS_WITH_PARAM = frozenset({"topk", "bottomk", "count_values", "quantile"})

COMPARISONS = frozenset({"==", "!=", "<", ">", "<=", ">="})
SET_OPS = frozenset({"and", "or", "unless"})
ARITHMETIC = frozenset({"+", "-", "*", "/", "%", "^", "atan2"})
_PRECEDENCE = {
    "or": 1, "and": 2, "unless": 2,
    "==": 3, "!=": 3, "<": 3, ">": 3, "<=": 3, ">=": 3,
    "+": 4, "-": 4, "*": 5, "/": 5, "%": 5, "atan2": 5, "^": 6,
}
_MUL_PREC = 5
_WORD_OPS = frozenset({"and", "or", "unless", "atan2"})


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
        if t.kind == IDENT and t.text.lower() in _WORD_OPS:
            return t.text.lower()
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
                expr = self.parse_range(expr)
            elif self.at_kw("offset"):
                expr = self.parse_offset(expr)
            elif self.at_op("@"):
                expr = self.parse_at(expr)
            else:
                return expr

    def parse_range(self, expr: ast.Expr) -> ast.Expr:
        start = self.advance().pos
        if self.tok.kind != DURATION:
            raise self.error(f"unexpected {self.describe(self.tok)} in range, expected duration")
        dur = self.advance()
        assert isinstance(dur.value, int)
        if self.at_op(":"):
            self.advance()
            step = 0
            if self.tok.kind == DURATION:
                assert isinstance(self.tok.value, int)
                step = self.advance().value  # type: ignore[assignment]
            self.expect_op("]", "subquery")
            if expr.type != VECTOR:
                raise ParseError(f"subquery is only allowed on instant vector, got {expr.type} instead", start)
            if dur.value <= 0:
                raise ParseError("subquery range must be greater than zero", dur.pos)
            return ast.Subquery(expr, dur.value, step, pos=expr.pos)
        self.expect_op("]", "range")
        if not isinstance(expr, ast.VectorSelector):
            raise ParseError("ranges only allowed for vector selectors", start)
        if expr.offset_ms or expr.at:
            raise ParseError("no offset modifiers allowed before range", start)
        if dur.value <= 0:
            raise ParseError("range must be greater than zero", dur.pos)
        return ast.MatrixSelector(expr, dur.value, pos=expr.pos)

    def _modifier_target(self, expr: ast.Expr, what: str, pos: int) -> ast.VectorSelector | ast.Subquery:
        target = expr.vector if isinstance(expr, ast.MatrixSelector) else expr
        if not isinstance(target, (ast.VectorSelector, ast.Subquery)):
            raise ParseError(f"{what} modifier must be preceded by an instant vector selector or range vector "
                             "selector or a subquery", pos)
        return target

    def parse_offset(self, expr: ast.Expr) -> ast.Expr:
        t = self.advance()
        target = self._modifier_target(expr, "offset", t.pos)
        sign = 1
        if self.at_op("-", "+"):
            sign = -1 if self.advance().text == "-" else 1
        if self.tok.kind != DURATION:
            raise self.error(f"unexpected {self.describe(self.tok)} in offset, expected duration")
        dur = self.advance()
        assert isinstance(dur.value, int)
        if target.offset_ms:
            raise ParseError("offset may not be set multiple times", t.pos)
        target.offset_ms = sign * dur.value
        return expr

    def parse_at(self, expr: ast.Expr) -> ast.Expr:
        t = self.advance()
        target = self._modifier_target(expr, "@", t.pos)
        if target.at:
            raise ParseError("@ <timestamp> may not be set multiple times", t.pos)
        if self.at_kw("start", "end"):
            kind = ast.AT_START if self.advance().text.lower() == "start" else ast.AT_END
            self.expect_op("(", "@ modifier")
            self.expect_op(")", "@ modifier")
            target.at = kind
            return expr
        sign = 1.0
        if self.at_op("-", "+"):
            sign = -1.0 if self.advance().text == "-" else 1.0
        if self.tok.kind != NUMBER:
            raise self.error(f"unexpected {self.describe(self.tok)} in @, expected timestamp")
        value = self.advance().value
        assert isinstance(value, float)
        ts = sign * value
        if math.isinf(ts) or math.isnan(ts) or not -9.223372036854776e18 < ts * 1000 < 9.223372036854776e18:
            raise ParseError(f"timestamp out of bounds for @ modifier: {ts:f}", t.pos)
        target.at = ast.AT_TIME
        target.at_ms = _go_round(ts * 1000)
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
            raise self.error(f"unexpected duration {t.text!r}: durations are only allowed in ranges and offsets")
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
            if low in AGGREGATIONS and opens:
                return self.parse_aggregate()
            if nxt.kind == OP and nxt.text == "(":
                return self.parse_call()
            if low in KEYWORDS or low in AGGREGATIONS:
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
                raise ParseError(f"metric name must not be set twice: {go_quote(name)}", pos)
            matchers.insert(0, Matcher.new(NAME, "=", name))
        else:
            eq = [m.value for m in matchers if m.name == NAME and m.op == "="]
            name = eq[0] if len(eq) == 1 else ""
        if not any(not m.matches("") for m in matchers):
            raise ParseError("vector selector must contain at least one non-empty matcher", pos)
        return ast.VectorSelector(name, matchers, pos=pos)

    def parse_args(self, what: str) -> list[ast.Expr]:
        self.expect_op("(", what)
        args: list[ast.Expr] = []
        while not self.at_op(")"):
            args.append(self.parse_binary(0))
            if self.at_op(","):
                self.advance()
            elif not self.at_op(")"):
                raise self.error(f"unexpected {self.describe(self.tok)} in {what}, expected \",\" or \")\"")
        self.advance()
        return args

    def parse_call(self) -> ast.Call:
        t = self.advance()
        name = t.text
        if name not in FUNCTIONS:
            raise ParseError(f"unknown function with name {go_quote(name)}", t.pos)
        args = self.parse_args("function call")
        want, variadic, ret = FUNCTIONS[name]
        nargs = len(want)
        if variadic == 0:
            if nargs != len(args):
                raise ParseError(f"expected {nargs} argument(s) in call to {go_quote(name)}, got {len(args)}", t.pos)
        elif nargs - 1 > len(args):
            raise ParseError(f"expected at least {nargs - 1} argument(s) in call to {go_quote(name)}, "
                             f"got {len(args)}", t.pos)
        elif variadic > 0 and nargs - 1 + variadic < len(args):
            raise ParseError(f"expected at most {nargs - 1 + variadic} argument(s) in call to {go_quote(name)}, "
                             f"got {len(args)}", t.pos)
        for i, arg in enumerate(args):
            typ = want[min(i, nargs - 1)]
            if arg.type != typ:
                raise ParseError(f"expected type {typ} in call to function {go_quote(name)}, got {arg.type}",
                                 arg.pos)
        return ast.Call(name, args, ret, pos=t.pos)

    def parse_aggregate(self) -> ast.Aggregate:
        t = self.advance()
        op = t.text.lower()
        grouping: list[str] = []
        without = has_grouping = False
        if self.at_kw("by", "without"):
            without = self.advance().text.lower() == "without"
            grouping = self.parse_label_list()
            has_grouping = True
        args = self.parse_args("aggregation")
        if self.at_kw("by", "without"):
            if has_grouping:
                raise self.error("aggregation has both a leading and a trailing grouping clause")
            without = self.advance().text.lower() == "without"
            grouping = self.parse_label_list()
            has_grouping = True
        if not args:
            raise ParseError("no arguments for aggregate expression provided", t.pos)
        want = 2 if op in AGGREGATIONS_WITH_PARAM else 1
        if len(args) != want:
            raise ParseError(f"wrong number of arguments for aggregate expression provided, expected {want}, "
                             f"got {len(args)}", t.pos)
        inner = args[-1]
        param = args[0] if want == 2 else None
        if inner.type != VECTOR:
            raise ParseError(f"expected type instant vector in aggregation expression, got {inner.type}", inner.pos)
        if param is not None:
            need = STRING if op == "count_values" else SCALAR
            if param.type != need:
                raise ParseError(f"expected type {need} in aggregation parameter, got {param.type}", param.pos)
        return ast.Aggregate(op, inner, frozenset(grouping), without, has_grouping, param, pos=t.pos)

    def check_binary(self, op: str, lhs: ast.Expr, rhs: ast.Expr, *, return_bool: bool,
                     matching: ast.VectorMatching | None, pos: int) -> ast.Binary:
        for side in (lhs, rhs):
            if side.type not in (SCALAR, VECTOR):
                raise ParseError("binary expression must contain only scalar and instant vector types", side.pos)
        both_vectors = lhs.type == VECTOR and rhs.type == VECTOR
        if op in COMPARISONS and lhs.type == SCALAR and rhs.type == SCALAR and not return_bool:
            raise ParseError("comparisons between scalars must use BOOL modifier", pos)
        if not both_vectors and matching is not None and matching.labels:
            raise ParseError("vector matching only allowed between instant vectors", pos)
        if op in SET_OPS and not both_vectors:
            raise ParseError(f"set operator \"{op}\" not allowed in binary scalar expression", pos)
        if not both_vectors:
            matching = None
        elif op in SET_OPS:
            base = matching or ast.VectorMatching("many-to-many", False, frozenset())
            matching = ast.VectorMatching("many-to-many", base.on, base.labels)
        elif matching is None:
            matching = ast.VectorMatching("one-to-one", False, frozenset())
        return ast.Binary(op, lhs, rhs, return_bool, matching, pos=lhs.pos)


def _go_round(x: float) -> int:
    """Go ``math.Round``: half away from zero."""
    t = math.trunc(x)
    if abs(x - t) >= 0.5:
        t += 1 if x > 0 else -1
    return t


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
