"""exp and softplus for the numba scan kernels, in arithmetic the compiler can vectorise.

The scan kernels (scan_cpu.py) compute Ā = exp(ΔA) once per state update and Δ = softplus(δ + b)
once per step. The C library's exp and log1p are opaque calls, one number at a time, and keep
the loops around them from being vectorised. In float32 the kernels use the textbook methods
below in plain arithmetic instead; float64 keeps the C library's functions (`decay_exp`,
`softplus` and `sigmoid` pick by dtype when numba compiles a kernel).

    exp_f32(x)     exp(x) = 2^k · exp(r),  k = round(x / ln 2),  r = x - k ln 2, |r| <= ln(2)/2
                   exp(r) by its degree-7 Taylor polynomial, 2^k by writing k + 127 into
                   the exponent bits of a float32 (no table: a table lookup in a vectorised
                   loop is a gather, slow on x86)
    log1p_f32(w)   log(1 + w) = 2 atanh(s) = 2 (s + s^3/3 + ... + s^15/15),  s = w / (2 + w),
                   for 0 <= w <= 1 (so 0 <= s <= 1/3: the series' next term is below 1e-8 · s)
    softplus(v)    log(1 + e^v) = max(v, 0) + log1p(e^{-|v|}), and v itself above 20, as
                   PyTorch's F.softplus (threshold 20)
    sigmoid(v)     d softplus / dv = 1 / (1 + e^{-v}), from w = e^{-|v|} so nothing overflows;
                   1 above 20, like PyTorch's softplus gradient

Accuracy (tests/test_kernels.py): exp_f32 within 1.2e-7 relative error (float32's rounding
step) on [-87, 88.72]; softplus within 2.4e-7 relative of float64's.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload, register_jitable

# Vectorising sums reorders their additions (float rounding only); no flag that assumes away
# NaN or infinity, so a NaN in the input still comes out as NaN.
FASTMATH = {"reassoc", "contract", "arcp"}
THRESHOLD = 20.0                                          # softplus(v) = v above it (PyTorch's)


@intrinsic
def f32_from_bits(typingctx, bits):
    """The float32 whose IEEE-754 bits are the int32 `bits` (an LLVM bitcast, which
    vectorises): f32_from_bits((k + 127) << 23) = 2^k for k = -126..127."""
    if not (isinstance(bits, types.Integer) and bits.bitwidth == 32):
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(bits), codegen


@register_jitable
def exp_f32(x):
    """exp(x) for a float32 x. Saturates below at exp(-87) ~ 1.6e-38 (exp gives 0 or a
    denormal there) and returns inf above 88.72 (float32's largest exp); NaN stays NaN."""
    xc = min(max(x, np.float32(-87.0)), np.float32(88.72))
    k = np.floor(xc * np.float32(1.4426950408889634) + np.float32(0.5))   # round(x / ln 2)
    r = xc - k * np.float32(0.693145751953125) - k * np.float32(1.428606765330187e-06)
    p = np.float32(1 / 5040)                                # Σ_{i<=7} r^i / i!  (Horner)
    p = p * r + np.float32(1 / 720)
    p = p * r + np.float32(1 / 120)
    p = p * r + np.float32(1 / 24)
    p = p * r + np.float32(1 / 6)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    j = min(max(np.int32(k) + np.int32(127), np.int32(1)), np.int32(254))   # k = 128: twice 2^127
    e = p * f32_from_bits(np.int32(j << np.int32(23)))      # 2^k exp(r)
    e = e * (np.float32(2.0) if k > 127 else np.float32(1.0))
    return np.float32(np.inf) if x > np.float32(88.7228) else (x if x != x else e)


@register_jitable
def log1p_f32(w):
    """log(1 + w) for a float32 w in [0, 1]: 2 atanh(w / (2 + w)) by its series."""
    s = w / (np.float32(2.0) + w)
    s2 = s * s
    p = np.float32(1 / 15)                                  # Σ_{i<=7} s^{2i} / (2i + 1)
    p = p * s2 + np.float32(1 / 13)
    p = p * s2 + np.float32(1 / 11)
    p = p * s2 + np.float32(1 / 9)
    p = p * s2 + np.float32(1 / 7)
    p = p * s2 + np.float32(1 / 5)
    p = p * s2 + np.float32(1 / 3)
    p = p * s2 + np.float32(1.0)
    return np.float32(2.0) * s * p


def _make(dtype, exp, log1p):
    """softplus and its slope, with constants of `dtype` (numba would turn a float32 into a
    float64 on meeting a Python float)."""
    zero, one, threshold = dtype(0.0), dtype(1.0), dtype(THRESHOLD)

    def softplus_(v):                                   # max(v, 0) + log1p(e^{-|v|})
        return v if v > threshold else max(v, zero) + log1p(exp(-abs(v)))

    def sigmoid_(v):                                    # 1 / (1 + e^{-v}), from w = e^{-|v|}
        w = exp(-abs(v))
        return one if v > threshold else (one / (one + w) if v >= zero else w / (one + w))

    return register_jitable(softplus_), register_jitable(sigmoid_)


_SOFTPLUS = {32: _make(np.float32, exp_f32, log1p_f32),
             64: _make(np.float64, register_jitable(lambda x: np.exp(x)),
                       register_jitable(lambda w: np.log1p(w)))}


def decay_exp(x):
    """Ā = exp(ΔA) in the kernels: `exp_f32` for float32, the C library's exp otherwise."""
    return np.exp(x)


def softplus(v):
    """log(1 + e^v), v itself above THRESHOLD (PyTorch's F.softplus)."""
    return v if v > THRESHOLD else float(np.log1p(np.exp(v)))


def sigmoid(v):
    """d softplus(v) / dv = 1 / (1 + e^{-v}); 1 above THRESHOLD."""
    return 1.0 if v > THRESHOLD else float(1 / (1 + np.exp(-v)))


def _is_f32(x) -> bool:
    return isinstance(x, types.Float) and x.bitwidth == 32


@overload(decay_exp, inline="always")
def _decay_exp(x):
    return exp_f32 if _is_f32(x) else (lambda x: np.exp(x))


@overload(softplus, inline="always")
def _softplus(v):
    return _SOFTPLUS[32 if _is_f32(v) else 64][0]


@overload(sigmoid, inline="always")
def _sigmoid(v):
    return _SOFTPLUS[32 if _is_f32(v) else 64][1]
