"""exp and softplus for the numba scan kernels, in arithmetic the compiler can vectorise.

The scan kernels (scan_cpu.py) compute Ā = exp(ΔA) once per state update and Δ = softplus(δ + b)
once per step. The C library's exp and log1p are opaque calls, one number at a time, and keep
the loops around them from being vectorised. In float32 the kernels use the textbook methods
below in plain arithmetic instead; float64 keeps the C library's functions (`decay_exp`,
`softplus` and `sigmoid` pick by dtype when numba compiles a kernel).

    exp_f32(x)     exp(x) = 2^k · exp(r),  k = round(x / ln 2),  r = x - k ln 2, |r| <= ln(2)/2
                   (ln 2 in two parts, so that k ln 2 is exact: Cody and Waite's reduction),
                   exp(r) by its degree-6 Taylor polynomial (next term r^7/7! <= 1.2e-7),
                   2^k by writing k + 127 into the exponent bits of a float32 in 32-bit
                   integers (no table: a table lookup in a vectorised loop is a gather, slow on
                   x86). The clamps are written as comparisons that NaN fails, so NaN passes
                   through without a separate test: each select costs about a tenth of the
                   scan's speed (benchmarks/bench_scan.py's bound is this loop).
    log1p_f32(w)   log(1 + w) = 2 atanh(s) = 2 (s + s^3/3 + ... + s^15/15),  s = w / (2 + w),
                   for 0 <= w <= 1 (so 0 <= s <= 1/3: the series' next term is below 1e-8 · s)
    softplus(v)    log(1 + e^v) = max(v, 0) + log1p(e^{-|v|}), and v itself above 20, as
                   PyTorch's F.softplus (threshold 20)
    sigmoid(v)     d softplus / dv = 1 / (1 + e^{-v}), from w = e^{-|v|} so nothing overflows;
                   1 above 20, like PyTorch's softplus gradient

Accuracy (tests/test_kernels.py): exp_f32 within 2.5e-7 relative error of exp (3.1e-7 of
torch.exp, its rounding added) on [-87, 88.37] (inf above: see exp_f32); softplus within 4e-7
relative of float64's.

numba's on-disk cache of the kernels (cache=True in scan_cpu.py) is keyed on scan_cpu.py
alone: after editing this file, delete ssmamba_lite/kernels/__pycache__/*.nb[ci], or the
kernels keep the old functions.
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


def _is_f32(x) -> bool:
    return isinstance(x, types.Float) and x.bitwidth == 32


@intrinsic
def pow2_f32(typingctx, k):
    """2^k for a float32 k holding an integer in [-126, 127]: (k + 127) << 23 read as a float32,
    in 32-bit integers throughout (numba's own int32 arithmetic widens to int64, and a vector
    of int64 is half as wide)."""
    if not _is_f32(k):
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        bits = builder.add(builder.fptosi(args[0], i32), ir.Constant(i32, 127))
        return builder.bitcast(builder.shl(bits, ir.Constant(i32, 23)), ir.FloatType())
    return types.float32(k), codegen


LOWEST, HIGHEST = np.float32(-87.0), np.float32(88.72)   # exp's float32 range (normal results)


@register_jitable
def exp_f32(x):
    """exp(x) for a float32 x, in 16 vector operations and no call. Saturates below at
    exp(-87) ~ 1.6e-38 (exp gives 0 or a denormal there); inf from 88.38 on (float32's last
    power of two, 2^127, is reached at 88.03, and 2^128 written into the exponent bits is inf:
    exp itself overflows at 88.72; a decay exp(ΔA) <= 1 is nowhere near); NaN stays NaN (each
    clamp below keeps x when a comparison with NaN is false)."""
    xc = LOWEST if x < LOWEST else x
    xc = HIGHEST if xc > HIGHEST else xc
    k = np.floor(xc * np.float32(1.4426950408889634) + np.float32(0.5))  # k = round(x / ln 2)
    r = xc - k * np.float32(0.693145751953125) - k * np.float32(1.428606765330187e-06)
    p = np.float32(1 / 720)                                 # exp(r) = Σ_{i<=6} r^i / i!  (Horner)
    p = p * r + np.float32(1 / 120)
    p = p * r + np.float32(1 / 24)
    p = p * r + np.float32(1 / 6)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    return p * pow2_f32(k)                                  # exp(x) = 2^k exp(r)


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


@overload(decay_exp, inline="always")
def _decay_exp(x):
    return exp_f32 if _is_f32(x) else (lambda x: np.exp(x))


@overload(softplus, inline="always")
def _softplus(v):
    return _SOFTPLUS[32 if _is_f32(v) else 64][0]


@overload(sigmoid, inline="always")
def _sigmoid(v):
    return _SOFTPLUS[32 if _is_f32(v) else 64][1]
