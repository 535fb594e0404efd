"""Go's ``math`` package, operation for operation, so PromQL functions give Prometheus's bits.

Go does not use the C library: its elementary functions are its own (Cephes and FreeBSD msun
algorithms, not correctly rounded), and on amd64 ``Exp`` and ``Log`` are assembly routines
whose rounding differs again (``Exp`` takes a fused multiply-add path on CPUs with AVX2+FMA).
Python's ``math`` calls glibc, which rounds differently in the last bit for a good share of
inputs. Each function here repeats the Go algorithm's float operations in the same order; the
constants are the algorithms' published coefficients. Checked against Debian's promtool
(Prometheus 2.42, go1.19, amd64) in ``tests/test_alerts_gomath.py``.
"""

from __future__ import annotations

import math
import struct
from decimal import Decimal, getcontext
from fractions import Fraction
from functools import cache
from pathlib import Path

NAN = math.nan
INF = math.inf
PI = math.pi

_MASK64 = (1 << 64) - 1


def bits(x: float) -> int:
    return int(struct.unpack("<Q", struct.pack("<d", x))[0])


def from_bits(b: int) -> float:
    return float(struct.unpack("<d", struct.pack("<Q", b & _MASK64))[0])


def _pi_digits(nbits: int) -> int:
    """floor(pi * 2**nbits), from Machin's formula in integer arithmetic."""
    guard = 64
    one = 1 << (nbits + guard)

    def arctan_inv(n: int) -> int:
        total, term, k, sign = 0, one // n, 1, 1
        n2 = n * n
        while term:
            total += sign * (term // k)
            term //= n2
            k += 2
            sign = -sign
        return total

    return (16 * arctan_inv(5) - 4 * arctan_inv(239)) >> guard


@cache
def _pi_decimal() -> Decimal:
    getcontext().prec = 80
    return Decimal(_pi_digits(300)) / Decimal(2**300)


def _const(expr: Decimal) -> float:
    """A Go constant expression: exact arithmetic, rounded once to float64."""
    return float(expr)


# Go evaluates constant expressions such as 4/Pi exactly and rounds once.
_FOUR_OVER_PI = _const(4 / _pi_decimal())
_THREE_PI_4 = _const(3 * _pi_decimal() / 4)
_INV_LN2 = _const(1 / Decimal(2).ln(getcontext()))
_INV_LN10 = _const(1 / Decimal(10).ln(getcontext()))


@cache
def _m_pi4() -> list[int]:
    """4/pi as 64-bit digits: 4/pi = sum(d[i] * 2**(-64*i)) (the table of Go's trigReduce)."""
    n = 64 * 19  # fraction bits; word 0 holds the integer part
    guard = 64
    four_over_pi = ((4 << (2 * (n + guard))) // _pi_digits(n + guard)) >> guard  # floor(4/pi * 2**n)
    return [(four_over_pi >> (64 * (19 - i))) & _MASK64 for i in range(20)]


@cache
def _use_fma() -> bool:
    """Go's amd64 ``Exp`` takes its FMA path when the CPU has AVX2 and FMA."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return "avx2" in flags and "fma" in flags
    return False


def fma(a: float, b: float, c: float) -> float:
    """a*b + c rounded once (the x86 VFMADD instructions)."""
    if not (math.isfinite(a) and math.isfinite(b) and math.isfinite(c)):
        return a * b + c
    exact = Fraction(a) * Fraction(b) + Fraction(c)
    if exact == 0:
        return a * b + c  # the sign of an exact zero follows IEEE rules
    try:
        return float(exact)
    except OverflowError:
        return INF if exact > 0 else -INF


def to_int64(x: float) -> int:
    """Go's int64(x) on amd64 (CVTTSD2SQ): truncates; NaN and out-of-range give MinInt64."""
    if math.isnan(x) or not -9.223372036854775808e18 <= x < 9.223372036854775808e18:
        return -(1 << 63)
    return int(x)


def _round_half_even_int32(x: float) -> int:
    """CVTSD2SL: round to nearest even; out of range gives -2**31."""
    if math.isnan(x) or not -2147483648.5 < x < 2147483647.5:
        return -(1 << 31)
    return round(x)


# -- exp (amd64 assembly) -------------------------------------------------------------------------
_LOG2E = 1.4426950408889634073599246810018920
_LN2U = 0.69314718055966295651160180568695068359375
_LN2L = 0.28235290563031577122588448175013436025525412068e-12
_EXP_OVERFLOW = 7.09782712893384e02
_EXP_TAYLOR = (2.4801587301587301587e-5, 1.9841269841269841270e-4, 1.3888888888888888889e-3,
               8.3333333333333333333e-3, 4.1666666666666666667e-2, 1.6666666666666666667e-1, 0.5, 1.0)


def exp(x: float) -> float:
    if math.isnan(x) or x == INF:
        return x
    if x == -INF:
        return 0.0
    if x > _EXP_OVERFLOW:
        return INF
    n = _round_half_even_int32(_LOG2E * x)
    k = float(n)
    if _use_fma():
        r = fma(-_LN2U, k, x)
        r = fma(-_LN2L, k, r)
        r *= 0.0625
        p = _EXP_TAYLOR[0]
        for c in _EXP_TAYLOR[1:]:
            p = fma(p, r, c)
        r *= p
        for _ in range(3):
            r = r * (r + 2.0)
        r = fma(r, r + 2.0, 1.0)
    else:
        r = (x - _LN2U * k) - _LN2L * k
        r *= 0.0625
        p = _EXP_TAYLOR[0]
        for c in _EXP_TAYLOR[1:]:
            p = p * r + c
        r *= p
        for _ in range(4):
            r = r * (2.0 + r)
        r += 1.0
    e = n + 0x3FF
    if e <= 0:  # a subnormal result: scale in two steps, as the assembly does
        if e < -52:
            return 0.0
        r *= from_bits((e + 0x3FE) << 52)
        e = 1
    elif e >= 0x7FF:
        return INF
    return r * from_bits(e << 52)


# -- log (amd64 assembly) -------------------------------------------------------------------------
_HSQRT2 = 7.07106781186547524401e-01
_LN2HI = 6.93147180369123816490e-01
_LN2LO = 1.90821492927058770002e-10
_L1, _L2, _L3, _L4, _L5, _L6, _L7 = (6.666666666666735130e-01, 3.999999999940941908e-01,
                                     2.857142874366239149e-01, 2.222219843214978396e-01,
                                     1.818357216161805012e-01, 1.531383769920937332e-01,
                                     1.479819860511658591e-01)


def log(x: float) -> float:
    b = bits(x)
    if b & ~(1 << 63) & _MASK64 == 0:
        return -INF
    if b >> 63:
        return NAN
    if b >= 0x7FF0000000000000:
        return x
    f1 = from_bits((b & 0x000FFFFFFFFFFFFF) | 0x3FE0000000000000)
    k = float(((b >> 52) & 0x7FF) - 0x3FE)
    if f1 <= _HSQRT2:  # the assembly compares "not less than", so equality takes this branch
        k -= 1.0
        f1 *= 2.0
    f = f1 - 1.0
    s = f / (2.0 + f)
    s2 = s * s
    s4 = s2 * s2
    t1 = s2 * (((_L7 * s4 + _L5) * s4 + _L3) * s4 + _L1)
    t2 = s4 * ((_L6 * s4 + _L4) * s4 + _L2)
    r = t1 + t2
    hfsq = 0.5 * f * f
    return k * _LN2HI - ((hfsq - (s * (r + hfsq) + _LN2LO * k)) - f)


def log2(x: float) -> float:
    frac, e = math.frexp(x) if math.isfinite(x) else (x, 0)
    if frac == 0.5:
        return float(e - 1)
    return log(frac) * _INV_LN2 + float(e)


def log10(x: float) -> float:
    return log(x) * _INV_LN10


def log1p(x: float) -> float:
    sqrt2m1 = 4.142135623730950488017e-01
    sqrt2halfm1 = -2.928932188134524755992e-01
    small = 1.0 / (1 << 29)
    tiny = 1.0 / (1 << 54)
    two53 = float(1 << 53)
    lp = (6.666666666666735130e-01, 3.999999999940941908e-01, 2.857142874366239149e-01,
          2.222219843214978396e-01, 1.818357216161805012e-01, 1.531383769920937332e-01,
          1.479819860511658591e-01)
    if x < -1 or math.isnan(x):
        return NAN
    if x == -1:
        return -INF
    if x == INF:
        return INF
    absx = abs(x)
    f = 0.0
    iu = 0
    k = 1
    if absx < sqrt2m1:
        if absx < small:
            if absx < tiny:
                return x
            return x - x * x * 0.5
        if x > sqrt2halfm1:
            k = 0
            f = x
            iu = 1
    c = 0.0
    if k != 0:
        if absx < two53:
            u = 1.0 + x
            iu = bits(u)
            k = (iu >> 52) - 1023
            c = 1.0 - (u - x) if k > 0 else x - (u - 1.0)
            c /= u
        else:
            u = x
            iu = bits(u)
            k = (iu >> 52) - 1023
            c = 0.0
        iu &= 0x000FFFFFFFFFFFFF
        if iu < 0x0006A09E667F3BCD:
            u = from_bits(iu | 0x3FF0000000000000)
        else:
            k += 1
            u = from_bits(iu | 0x3FE0000000000000)
            iu = (0x0010000000000000 - iu) >> 2
        f = u - 1.0
    hfsq = 0.5 * f * f
    fk = float(k)
    if iu == 0:
        if f == 0:
            if k == 0:
                return 0.0
            c += fk * _LN2LO
            return fk * _LN2HI + c
        r = hfsq * (1.0 - 0.66666666666666666 * f)
        if k == 0:
            return f - r
        return fk * _LN2HI - ((r - (fk * _LN2LO + c)) - f)
    s = f / (2.0 + f)
    z = s * s
    r = z * (lp[0] + z * (lp[1] + z * (lp[2] + z * (lp[3] + z * (lp[4] + z * (lp[5] + z * lp[6]))))))
    if k == 0:
        return f - (hfsq - s * (hfsq + r))
    return fk * _LN2HI - ((hfsq - (s * (hfsq + r) + (fk * _LN2LO + c))) - f)


# -- pow ------------------------------------------------------------------------------------------
def _is_odd_int(x: float) -> bool:
    if abs(x) >= 2**53:
        return False
    xf, xi = math.modf(x)
    return xf == 0 and int(xi) & 1 == 1


def power(x: float, y: float) -> float:
    """Go 1.19 ``math.Pow``."""
    if y == 0 or x == 1:
        return 1.0
    if y == 1:
        return x
    if math.isnan(x) or math.isnan(y):
        return NAN
    if x == 0:
        if y < 0:
            return math.copysign(INF, x) if _is_odd_int(y) else INF
        return x if _is_odd_int(y) else 0.0
    if math.isinf(y):
        if x == -1:
            return 1.0
        if (abs(x) < 1) == (y > 0):
            return 0.0
        return INF
    if math.isinf(x):
        if x < 0:
            return power(1 / x, -y)  # Pow(-0, -y)
        return 0.0 if y < 0 else INF
    if y == 0.5:
        return _sqrt(x)
    if y == -0.5:
        return 1 / _sqrt(x)
    yf, yi = math.modf(abs(y))
    if yf != 0 and x < 0:
        return NAN
    if yi >= 2**63:
        if x == -1:
            return 1.0
        if (abs(x) < 1) == (y > 0):
            return 0.0
        return INF
    a1 = 1.0
    ae = 0
    if yf != 0:
        if yf > 0.5:
            yf -= 1
            yi += 1
        a1 = exp(yf * log(x))
    x1, xe = math.frexp(x)
    i = int(yi)
    while i != 0:
        if xe < -(1 << 12) or xe > (1 << 12):
            ae += xe
            break
        if i & 1 == 1:
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
    return _ldexp(a1, ae)


def _sqrt(x: float) -> float:
    return math.sqrt(x) if x >= 0 else NAN


def _ldexp(frac: float, e: int) -> float:
    if frac == 0 or math.isinf(frac) or math.isnan(frac):
        return frac
    try:
        return math.ldexp(frac, e)
    except OverflowError:
        return math.copysign(INF, frac)


# -- trigonometry (Cephes, pure Go) ---------------------------------------------------------------
_PI4A = 7.85398125648498535156e-1
_PI4B = 3.77489470793079817668e-8
_PI4C = 2.69515142907905952645e-15
_SIN = (1.58962301576546568060e-10, -2.50507477628578072866e-8, 2.75573136213857245213e-6,
        -1.98412698295895385996e-4, 8.33333333332211858878e-3, -1.66666666666666307295e-1)
_COS = (-1.13585365213876817300e-11, 2.08757008419747316778e-9, -2.75573141792967388112e-7,
        2.48015872888517045348e-5, -1.38888888888730564116e-3, 4.16666666666665929218e-2)
_REDUCE_THRESHOLD = float(1 << 29)


def _trig_reduce(x: float) -> tuple[int, float]:
    """Payne-Hanek reduction by pi/4 for large x: (octant, remainder)."""
    if x < PI / 4:
        return 0, x
    ix = bits(x)
    e = ((ix >> 52) & 0x7FF) - 1023 - 52
    ix = (ix & ~(0x7FF << 52)) | (1 << 52)
    digit, shift = divmod(e + 61, 64)
    m = _m_pi4()

    def word(i: int) -> int:
        hi = (m[i] << shift) & _MASK64
        return hi | (m[i + 1] >> (64 - shift)) if shift else hi

    z0, z1, z2 = word(digit), word(digit + 1), word(digit + 2)
    z2hi = (z2 * ix) >> 64
    p1 = z1 * ix
    z1hi, z1lo = p1 >> 64, p1 & _MASK64
    z0lo = (z0 * ix) & _MASK64
    lo_sum = z1lo + z2hi
    lo, carry = lo_sum & _MASK64, lo_sum >> 64
    hi = (z0lo + z1hi + carry) & _MASK64
    j = hi >> 61
    hi = ((hi << 3) & _MASK64) | (lo >> 61)
    lz = 64 - hi.bit_length()
    exp_ = 1023 - (lz + 1)
    hi = ((hi << (lz + 1)) & _MASK64) | (lo >> (64 - (lz + 1)))
    hi >>= 64 - 52
    hi |= exp_ << 52
    z = from_bits(hi)
    if j & 1 == 1:
        j = (j + 1) & 7
        z -= 1
    return j, z * (PI / 4)


def _reduce(x: float) -> tuple[int, float]:
    if x >= _REDUCE_THRESHOLD:
        return _trig_reduce(x)
    j = int(x * _FOUR_OVER_PI)
    y = float(j)
    if j & 1 == 1:
        j += 1
        y += 1
    j &= 7
    return j, ((x - y * _PI4A) - y * _PI4B) - y * _PI4C


def _sin_poly(z: float, zz: float) -> float:
    s = _SIN
    return z + z * zz * (((((s[0] * zz + s[1]) * zz + s[2]) * zz + s[3]) * zz + s[4]) * zz + s[5])


def _cos_poly(zz: float) -> float:
    c = _COS
    return 1.0 - 0.5 * zz + zz * zz * (((((c[0] * zz + c[1]) * zz + c[2]) * zz + c[3]) * zz + c[4]) * zz + c[5])


def _signed_reduce(x: float) -> tuple[bool, int, float]:
    """sin/tan: work on |x| and remember the sign (their special cases are handled first)."""
    j, z = _reduce(abs(x))
    return x < 0, j, z


def sin(x: float) -> float:
    if x == 0 or math.isnan(x):
        return x
    if math.isinf(x):
        return NAN
    sign, j, z = _signed_reduce(x)
    if j > 3:
        sign = not sign
        j -= 4
    zz = z * z
    y = _cos_poly(zz) if j in (1, 2) else _sin_poly(z, zz)
    return -y if sign else y


def cos(x: float) -> float:
    if math.isnan(x) or math.isinf(x):
        return NAN
    x = abs(x)
    j, z = _reduce(x)
    sign = False
    if j > 3:
        j -= 4
        sign = not sign
    if j > 1:
        sign = not sign
    zz = z * z
    y = _sin_poly(z, zz) if j in (1, 2) else _cos_poly(zz)
    return -y if sign else y


_TAN_P = (-1.30936939181383777646e4, 1.15351664838587416140e6, -1.79565251976484877988e7)
_TAN_Q = (1.36812963470692954678e4, -1.32089234440210967447e6, 2.50083801823357915839e7,
          -5.38695755929454629881e7)


def tan(x: float) -> float:
    if x == 0 or math.isnan(x):
        return x
    if math.isinf(x):
        return NAN
    sign, j, z = _signed_reduce(x)
    zz = z * z
    if zz > 1e-14:
        p, q = _TAN_P, _TAN_Q
        y = z + z * (zz * ((p[0] * zz + p[1]) * zz + p[2]) / ((((zz + q[0]) * zz + q[1]) * zz + q[2]) * zz + q[3]))
    else:
        y = z
    if j & 2 == 2:
        y = -1 / y
    return -y if sign else y


def _xatan(x: float) -> float:
    p0, p1, p2, p3, p4 = (-8.750608600031904122785e-01, -1.615753718733365076637e01, -7.500855792314704667340e01,
                          -1.228866684490136173410e02, -6.485021904942025371773e01)
    q0, q1, q2, q3, q4 = (2.485846490142306297962e01, 1.650270098316988542046e02, 4.328810604912902668951e02,
                          4.853903996359136964868e02, 1.945506571482613964425e02)
    z = x * x
    z = z * ((((p0 * z + p1) * z + p2) * z + p3) * z + p4) / (((((z + q0) * z + q1) * z + q2) * z + q3) * z + q4)
    return x * z + x


def _satan(x: float) -> float:
    morebits = 6.123233995736765886130e-17
    tan3pio8 = 2.41421356237309504880
    if x <= 0.66:
        return _xatan(x)
    if x > tan3pio8:
        return PI / 2 - _xatan(1 / x) + morebits
    return PI / 4 + _xatan((x - 1) / (x + 1)) + 0.5 * morebits


def atan(x: float) -> float:
    if x == 0:
        return x
    if x > 0:
        return _satan(x)
    return -_satan(-x)


def asin(x: float) -> float:
    if x == 0:
        return x
    sign = x < 0
    if sign:
        x = -x
    if x > 1 or math.isnan(x):
        return NAN
    temp = _sqrt(1 - x * x)
    temp = PI / 2 - _satan(temp / x) if x > 0.7 else _satan(x / temp)
    return -temp if sign else temp


def acos(x: float) -> float:
    return PI / 2 - asin(x)


def atan2(y: float, x: float) -> float:
    if math.isnan(y) or math.isnan(x):
        return NAN
    if y == 0:
        if x >= 0 and math.copysign(1.0, x) > 0:
            return math.copysign(0.0, y)
        return math.copysign(PI, y)
    if x == 0:
        return math.copysign(PI / 2, y)
    if math.isinf(x):
        if x > 0:
            return math.copysign(PI / 4, y) if math.isinf(y) else math.copysign(0.0, y)
        return math.copysign(_THREE_PI_4, y) if math.isinf(y) else math.copysign(PI, y)
    if math.isinf(y):
        return math.copysign(PI / 2, y)
    q = atan(y / x)
    if x < 0:
        return q + PI if q <= 0 else q - PI
    return q


# -- hyperbolic -----------------------------------------------------------------------------------
def sinh(x: float) -> float:
    p0, p1, p2, p3 = (-0.6307673640497716991184787251e6, -0.8991272022039509355398013511e5,
                      -0.2894211355989563807284660366e4, -0.2630563213397497062819489e2)
    q0, q1, q2 = (-0.6307673640497716991212077277e6, 0.1521517378790019070696485176e5,
                  -0.173678953558233699533450911e3)
    sign = x < 0
    if sign:
        x = -x
    if x > 21:
        temp = exp(x) * 0.5
    elif x > 0.5:
        ex = exp(x)
        temp = (ex - 1 / ex) * 0.5
    else:
        sq = x * x
        temp = (((p3 * sq + p2) * sq + p1) * sq + p0) * x
        temp = temp / (((sq + q2) * sq + q1) * sq + q0)
    return -temp if sign else temp


def cosh(x: float) -> float:
    x = abs(x)
    if x > 21:
        return exp(x) * 0.5
    ex = exp(x)
    return (ex + 1 / ex) * 0.5


def tanh(x: float) -> float:
    maxlog = 8.8029691931113054295988e01
    p = (-9.64399179425052238628e-1, -9.92877231001918586564e1, -1.61468768441708447952e3)
    q = (1.12811678491632931402e2, 2.23548839060100448583e3, 4.84406305325125486048e3)
    z = abs(x)
    if z > 0.5 * maxlog:
        return -1.0 if x < 0 else 1.0
    if z >= 0.625:
        s = exp(2 * z)
        z = 1 - 2 / (s + 1)
        return -z if x < 0 else z
    if x == 0:
        return x
    s = x * x
    return x + x * s * ((p[0] * s + p[1]) * s + p[2]) / (((s + q[0]) * s + q[1]) * s + q[2])


_LN2 = 6.93147180559945286227e-01


def asinh(x: float) -> float:
    if math.isnan(x) or math.isinf(x):
        return x
    sign = x < 0
    if sign:
        x = -x
    if x > 1 << 28:
        temp = log(x) + _LN2
    elif x > 2:
        temp = log(2 * x + 1 / (math.sqrt(x * x + 1) + x))
    elif x < 1.0 / (1 << 28):
        temp = x
    else:
        temp = log1p(x + x * x / (1 + math.sqrt(1 + x * x)))
    return -temp if sign else temp


def acosh(x: float) -> float:
    if x < 1 or math.isnan(x):
        return NAN
    if x == 1:
        return 0.0
    if x >= 1 << 28:
        return log(x) + _LN2
    if x > 2:
        return log(2 * x - 1 / (x + math.sqrt(x * x - 1)))
    t = x - 1
    return log1p(t + math.sqrt(2 * t + t * t))


def atanh(x: float) -> float:
    if x < -1 or x > 1 or math.isnan(x):
        return NAN
    if x == 1:
        return INF
    if x == -1:
        return -INF
    sign = x < 0
    if sign:
        x = -x
    if x < 1.0 / (1 << 28):
        temp = x
    elif x < 0.5:
        temp = x + x
        temp = 0.5 * log1p(temp + temp * x / (1 - x))
    else:
        temp = 0.5 * log1p((x + x) / (1 - x))
    return -temp if sign else temp


# -- small helpers with Go's special cases --------------------------------------------------------
def fmax(a: float, b: float) -> float:
    """Go ``math.Max``: +Inf wins over NaN, then NaN wins; Max(+0, -0) = +0."""
    if INF in (a, b):
        return INF
    if math.isnan(a) or math.isnan(b):
        return NAN
    if a == 0 and a == b:
        return b if math.copysign(1.0, a) < 0 else a
    return a if a > b else b


def fmin(a: float, b: float) -> float:
    """Go ``math.Min``: -Inf wins over NaN, then NaN wins; Min(+0, -0) = -0."""
    if -INF in (a, b):
        return -INF
    if math.isnan(a) or math.isnan(b):
        return NAN
    if a == 0 and a == b:
        return a if math.copysign(1.0, a) < 0 else b
    return a if a < b else b


__all__ = ["acos", "acosh", "asin", "asinh", "atan", "atan2", "atanh", "cos", "cosh", "exp", "fmax", "fmin",
           "log", "log1p", "log2", "log10", "power", "sin", "sinh", "tan", "tanh", "to_int64"]
