"""Triton kernels of the fastgp ops. Imported only where triton is.

A row is one sample: element j of row b sits at ``base + b * row_stride +
j * inner_stride`` (host.py reduces every supported layout to that).
Offsets are int64; loads upcast to the accumulation dtype, which each kernel
reads off an output pointer (float32, float64 for float64 data). Python
floats reach Triton as float32, so a double travels as two float32 halves
(``hi + lo``) and float64 kernels rebuild it to about 1e-14.

The penalty helpers mirror csrc/penalty_math.h line for line; keep them in step.
"""

from __future__ import annotations

import triton
import triton.language as tl

try:  # the interpreter's function class; absent in odd builds
    from triton.runtime.interpreter import InterpretedFunction
except ImportError:  # pragma: no cover
    InterpretedFunction = ()


@triton.jit
def _probe():
    pass


# TRITON_INTERPRET=1 is read when @triton.jit runs, i.e. when this module is imported.
INTERPRETED = isinstance(_probe, InterpretedFunction)

if INTERPRETED:
    # One config (the autotuner then skips benchmarking) and a small block,
    # so that short test rows still span several blocks.
    BLOCK_CONFIGS = [triton.Config({"BLOCK": 128}, num_warps=1)]
else:
    BLOCK_CONFIGS = [
        triton.Config({"BLOCK": 1024}, num_warps=4),
        triton.Config({"BLOCK": 2048}, num_warps=8),
        triton.Config({"BLOCK": 4096}, num_warps=8),
    ]
MAX_BLOCK = max(c.kwargs["BLOCK"] for c in BLOCK_CONFIGS)

# Tile of the finalize kernel: rows x partial columns.
FINALIZE_BLOCK_B = 128
FINALIZE_BLOCK_C = 8

REDUCTION_NONE, REDUCTION_MEAN, REDUCTION_SUM = 0, 1, 2


# ------------------------------------------------------------ scalar helpers
@triton.jit
def _double(hi, lo, acc: tl.constexpr):
    """A host double split into two float32 halves, rebuilt in `acc`."""
    return tl.cast(hi, acc) + tl.cast(lo, acc)


@triton.jit
def _pow(x, p):
    """x ** p for x >= 0, p >= 0 (pow(0, 0) == 1, as in C)."""
    safe = tl.where(x > 0, x, 1.0)
    y = tl.exp2(p * tl.log2(safe))
    return tl.where(x > 0, y, tl.where(p == 0, 1.0, 0.0))


@triton.jit
def penalty_gap(n, center, ONE_SIDED: tl.constexpr):
    d = n - center
    if ONE_SIDED:
        d = tl.where(d < 0, 0.0, d)
    return d


@triton.jit
def penalty_value(n, center, power, ONE_SIDED: tl.constexpr):
    d = penalty_gap(n, center, ONE_SIDED)
    ad = tl.abs(d)
    return tl.where(power == 2, d * d, tl.where(power == 1, ad, _pow(ad, power)))


@triton.jit
def penalty_coef(n, center, power, ONE_SIDED: tl.constexpr):
    """phi'(n) / n; at n == 0 its finite limit (center 0, power 2 -> 2) or 0."""
    d = penalty_gap(n, center, ONE_SIDED)
    ad = tl.abs(d)
    sign = tl.where(d > 0, 1.0, -1.0)
    dphi = tl.where(power == 2, 2.0 * d, tl.where(power == 1, sign, power * _pow(ad, power - 1.0) * sign))
    coef = tl.where(d == 0, 0.0, dphi / tl.where(n == 0, 1.0, n))
    at_zero = tl.where(center != 0, 0.0, tl.where(power == 2, 2.0, 0.0))
    return tl.where(n == 0, at_zero, coef)


@triton.jit
def reduction_factor(REDUCTION: tl.constexpr, batch, acc: tl.constexpr):
    if REDUCTION == 1:
        return tl.cast(1.0, acc) / tl.cast(batch, acc)
    else:
        return tl.cast(1.0, acc)


# ----------------------------------------------------------------- kernels
@triton.jit
def _penalty_params(w_hi, w_lo, c_hi, c_lo, p_hi, p_lo, scale_ptr, HAS_SCALE: tl.constexpr, acc: tl.constexpr):
    """weight, center, power (each sent as two fp32 halves) and inv_scale (1 without one), in acc."""
    s = tl.cast(1.0, acc)
    if HAS_SCALE:
        s = tl.load(scale_ptr).to(acc)
    return _double(w_hi, w_lo, acc), _double(c_hi, c_lo, acc), _double(p_hi, p_lo, acc), s


@triton.jit
def _row_block(row_len, BLOCK: tl.constexpr):
    """The row b and the int64 element offsets j (with their mask) of this
    program's block, for elementwise kernels with one block of one row per program."""
    pid = tl.program_id(0).to(tl.int64)
    blocks_per_row = tl.cdiv(row_len, BLOCK)
    j = (pid % blocks_per_row) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    return pid // blocks_per_row, j, j < row_len


@triton.autotune(configs=BLOCK_CONFIGS, key=["row_len"])
@triton.jit
def interpolate_kernel(out_ptr, real_ptr, fake_ptr, alpha_ptr, row_len, o_sb, o_si, r_sb, r_si, f_sb, f_si,
                       BLOCK: tl.constexpr):
    """out_b = alpha_b * real_b + (1 - alpha_b) * fake_b; one block of one row per program."""
    b, j, mask = _row_block(row_len, BLOCK)
    acc = alpha_ptr.dtype.element_ty
    a = tl.load(alpha_ptr + b)
    r = tl.load(real_ptr + b * r_sb + j * r_si, mask=mask, other=0).to(acc)
    f = tl.load(fake_ptr + b * f_sb + j * f_si, mask=mask, other=0).to(acc)
    y = a * r + (1.0 - a) * f
    tl.store(out_ptr + b * o_sb + j * o_si, y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.autotune(configs=BLOCK_CONFIGS, key=["row_len", "chunk"])
@triton.jit
def sumsq_partial_kernel(partial_ptr, g_ptr, row_len, chunk, chunks_per_row, ncols, col0, sb, si,
                         BLOCK: tl.constexpr):
    """partial[b, col0 + c] = sum of squares of g_b over chunk c; no atomics,
    so the combine (finalize) is deterministic."""
    pid = tl.program_id(0).to(tl.int64)
    b = pid // chunks_per_row
    c = pid % chunks_per_row
    acc_t = partial_ptr.dtype.element_ty
    begin = c * chunk
    end = tl.minimum(begin + chunk, row_len)
    lanes = tl.zeros([BLOCK], acc_t)
    for start in range(begin, end, BLOCK):
        j = start + tl.arange(0, BLOCK).to(tl.int64)
        x = tl.load(g_ptr + b * sb + j * si, mask=j < end, other=0).to(acc_t)
        lanes += x * x
    tl.store(partial_ptr + b * ncols + col0 + c, tl.sum(lanes, axis=0))


@triton.jit
def penalty_finalize_kernel(out_ptr, norms_ptr, partial_ptr, scale_ptr, batch, ncols,
                            w_hi, w_lo, c_hi, c_lo, p_hi, p_lo,
                            HAS_SCALE: tl.constexpr, ONE_SIDED: tl.constexpr, REDUCTION: tl.constexpr,
                            BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr):
    """One program: norms, per-sample penalties and their reduction, in a fixed order."""
    acc = norms_ptr.dtype.element_ty
    weight, center, power, s = _penalty_params(w_hi, w_lo, c_hi, c_lo, p_hi, p_lo, scale_ptr, HAS_SCALE, acc)
    total = tl.zeros([BLOCK_B], acc)
    for b0 in range(0, batch, BLOCK_B):
        rows = b0 + tl.arange(0, BLOCK_B).to(tl.int64)
        rmask = rows < batch
        ss = tl.zeros([BLOCK_B], acc)
        for c0 in range(0, ncols, BLOCK_C):
            cols = c0 + tl.arange(0, BLOCK_C)
            m = rmask[:, None] & (cols < ncols)[None, :]
            ss += tl.sum(tl.load(partial_ptr + rows[:, None] * ncols + cols[None, :], mask=m, other=0), axis=1)
        if acc == tl.float32:  # IEEE sqrt as in the C++ kernels; float32 tl.sqrt may be approximate
            n = tl.sqrt_rn(ss) * s
        else:
            n = tl.sqrt(ss) * s
        tl.store(norms_ptr + rows, n, mask=rmask)
        v = penalty_value(n, center, power, ONE_SIDED)
        if REDUCTION == 0:
            tl.store(out_ptr + rows, weight * v, mask=rmask)
        else:
            total += tl.where(rmask, v, 0.0)
    if REDUCTION != 0:
        red = reduction_factor(REDUCTION, batch, acc)
        tl.store(out_ptr, weight * red * tl.sum(total, axis=0))


@triton.autotune(configs=BLOCK_CONFIGS, key=["row_len"])
@triton.jit
def penalty_backward_kernel(out_ptr, g_ptr, go_ptr, go_stride, norms_ptr, scale_ptr, batch, row_len,
                            o_sb, o_si, g_sb, g_si,
                            w_hi, w_lo, c_hi, c_lo, p_hi, p_lo,
                            HAS_SCALE: tl.constexpr, ONE_SIDED: tl.constexpr, REDUCTION: tl.constexpr,
                            BLOCK: tl.constexpr):
    """dL/dg_b = go_b * weight * red * s^2 * phi'(n_b)/n_b * g_b; one block of one row per program."""
    b, j, mask = _row_block(row_len, BLOCK)
    acc = norms_ptr.dtype.element_ty
    weight, center, power, s = _penalty_params(w_hi, w_lo, c_hi, c_lo, p_hi, p_lo, scale_ptr, HAS_SCALE, acc)
    go = tl.load(go_ptr + b * go_stride).to(acc)
    n = tl.load(norms_ptr + b)
    red = reduction_factor(REDUCTION, batch, acc)
    coef = go * (weight * s * s) * red * penalty_coef(n, center, power, ONE_SIDED)
    g = tl.load(g_ptr + b * g_sb + j * g_si, mask=mask, other=0).to(acc)
    tl.store(out_ptr + b * o_sb + j * o_si, (coef * g).to(out_ptr.dtype.element_ty), mask=mask)
