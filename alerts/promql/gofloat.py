"""Float arithmetic and formatting with Go's semantics, so results match Prometheus bit for bit.

Python raises where Go returns IEEE specials (x/0, fmod(x, 0), overflow in pow), and prints
floats differently (``1e+06`` in Go's ``%v`` is ``1000000.0`` in Python).
"""

from __future__ import annotations

import math
from decimal import Decimal

from alerts.promql import gomath

INF = math.inf
NAN = math.nan


def div(a: float, b: float) -> float:
    if b == 0.0:
        if a == 0.0 or math.isnan(a):
            return NAN
        return math.copysign(INF, a) * math.copysign(1.0, b)
    return a / b


def mod(a: float, b: float) -> float:
    """Go ``math.Mod``: sign of the dividend; NaN for x%0 and Inf%y; x%Inf = x."""
    if b == 0.0 or math.isinf(a) or math.isnan(a) or math.isnan(b):
        return NAN
    if math.isinf(b):
        return a
    return math.fmod(a, b)


def power(a: float, b: float) -> float:
    """Go ``math.Pow``, operation for operation (``gomath``)."""
    return gomath.power(a, b)


fmax = gomath.fmax
fmin = gomath.fmin


def format_v(v: float) -> str:
    """Go ``fmt.Sprint(float64)`` (``%v``): shortest digits, exponent form when exp < -4 or >= 6 (1e+06)."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == 0.0:
        return "-0" if math.copysign(1.0, v) < 0 else "0"
    sign, digits_t, exp10 = Decimal(repr(v)).normalize().as_tuple()
    assert isinstance(exp10, int)
    digits = "".join(str(d) for d in digits_t)
    nd = len(digits)
    x = nd + exp10 - 1  # decimal exponent of the leading digit
    neg = "-" if sign else ""
    if x < -4 or x >= 6:  # strconv: shortest %g uses precision 6 for this decision
        mant = digits[0] + ("." + digits[1:] if nd > 1 else "")
        return f"{neg}{mant}e{'-' if x < 0 else '+'}{abs(x):02d}"
    if exp10 >= 0:
        return neg + digits + "0" * exp10
    point = nd + exp10
    if point > 0:
        return neg + digits[:point] + "." + digits[point:]
    return neg + "0." + "0" * (-point) + digits


def format_g(v: float, prec: int) -> str:
    """Go ``%.<prec>g``; Python's ``%g`` matches it except for the special values."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return f"%.{prec}g" % v
