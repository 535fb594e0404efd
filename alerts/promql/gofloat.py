"""Float arithmetic and formatting with Go's semantics, so results match Prometheus bit for bit.

Python raises where Go returns IEEE specials (x/0, fmod(x, 0), overflow in pow), and prints
floats differently (``1e+06`` in Go's ``%v`` is ``1000000.0`` in Python).
"""

from __future__ import annotations

import math
from decimal import Decimal

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
    """Go ``math.Pow``. Integer exponents follow Go's algorithm (repeated squaring of the
    mantissa), which is not correctly rounded, so results match Prometheus to the last bit;
    other exponents use the C library (Go computes exp(y*log(x)); a last-bit difference is
    possible there)."""
    if b == int(b) and not math.isinf(b) and not math.isnan(a) and not math.isinf(a) and a != 0.0 \
            and abs(b) < 2**62:
        return _go_pow_int(a, int(b))
    try:
        return math.pow(a, b)
    except OverflowError:
        # |a| > 1 and b large: +Inf, or -Inf for a negative base and an odd integer exponent.
        if a < 0 and b == int(b) and int(b) % 2 == 1:
            return -INF
        return INF
    except ValueError:
        if a == 0.0 and b < 0:
            # Pow(±0, y<0): ±Inf for odd integer y, +Inf otherwise.
            if b == int(b) and int(b) % 2 == 1:
                return math.copysign(INF, a)
            return INF
        return NAN  # negative base with a non-integer exponent


def fmax(a: float, b: float) -> float:
    """Go ``math.Max``: NaN wins."""
    if math.isnan(a) or math.isnan(b):
        return NAN
    return a if a > b else b


def fmin(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b):
        return NAN
    return a if a < b else b


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


def _go_pow_int(x: float, y: int) -> float:
    """Go's ``math.Pow(x, y)`` for a finite non-zero x and an integer y (``yf == 0`` path)."""
    if y == 0 or x == 1.0:
        return 1.0
    if y == 1:
        return x
    a1, ae = 1.0, 0
    x1, xe = math.frexp(x)
    i = abs(y)
    while i != 0:
        if xe < -(1 << 12) or xe > (1 << 12):
            # Catastrophic overflow: guaranteed 0 or Inf; Go stops multiplying here.
            ae += xe
            break
        if i & 1:
            a1 *= x1
            ae += xe
        x1 *= x1
        xe <<= 1
        if x1 < 0.5:
            x1 += x1
            xe -= 1
        i >>= 1
    if y < 0:
        a1 = 1 / a1
        ae = -ae
    try:
        return math.ldexp(a1, ae)
    except OverflowError:
        return math.copysign(INF, a1)
