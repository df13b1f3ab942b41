"""Triton kernels of the fastgp ops. Imported only where triton is.

A row is one sample: element j of row b sits at ``base + b * row_stride +
j * inner_stride`` (host.py reduces every supported layout to that). Every
kernel works on tiles of ROWS rows x BLOCK elements: several short rows per
program (ROWS > 1), or one block of one long row. The tile sizes and the
split of long rows come from the shapes alone (host.tile_shape,
host.forward_chunks), never from timing or the device: the summation order, hence every bit of the results,
is the same in every process. Offsets are int64; loads upcast to the
accumulation dtype, read off an output pointer (float32; float64 for float64
data). Python floats reach Triton as float32, so a double travels as two
float32 halves (``hi + lo``) and float64 kernels rebuild it to about 1e-14.

Sums of squares follow the range rule of csrc/penalty_math.h: a tile's sums
are taken in the accumulation dtype; rows whose sum overflowed, or fell below
the rescue threshold (underflowed squares may have cost precision), are
summed again from memory: in float64 for float32 accumulation, and for
float64 data scaled by 2^-e, e = floor(log2(max |x|)), kept as a pair
(ssq, e) meaning ssq * 4^e. Partial sums are float64 pairs, and the finalize
works in float64, as the CUDA kernels do.

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

# Elements per program tile and warps per program (host.tile_shape). The
# interpreter gets small tiles, so that short test rows still span several
# tiles and chunks.
TILE = 64 if INTERPRETED else 4096
NUM_WARPS = 1 if INTERPRETED else 8
# Rows per program of the finalize, and programs a split forward aims for.
FINALIZE_ROWS = 4 if INTERPRETED else 256
TARGET_PROGRAMS = 8 if INTERPRETED else 2048

REDUCTION_NONE, REDUCTION_MEAN, REDUCTION_SUM = tl.constexpr(0), tl.constexpr(1), tl.constexpr(2)
# The range rule's thresholds (csrc/penalty_math.h: rescue_below, and the
# largest float32), and the largest fast sum of float64 data.
RESCUE_BELOW_F32 = tl.constexpr(2.0**-100)
RESCUE_BELOW_F64 = tl.constexpr(2.0**-990)
FLOAT32_MAX = tl.constexpr(3.4028234663852886e38)
F64_FAST_MAX = tl.constexpr(2.0**900)


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
    if REDUCTION == REDUCTION_MEAN:
        return tl.cast(1.0, acc) / tl.cast(batch, acc)
    else:
        return tl.cast(1.0, acc)


@triton.jit
def _penalty_params(w_hi, w_lo, c_hi, c_lo, p_hi, p_lo, scale_ptr, HAS_SCALE: tl.constexpr, acc: tl.constexpr):
    """weight, center, power (each sent as two fp32 halves) and inv_scale (1 without one), in acc."""
    s = tl.cast(1.0, acc)
    if HAS_SCALE:
        s = tl.load(scale_ptr).to(acc)
    return _double(w_hi, w_lo, acc), _double(c_hi, c_lo, acc), _double(p_hi, p_lo, acc), s


@triton.jit
def _tile(batch, row_len, ROWS: tl.constexpr, BLOCK: tl.constexpr):
    """Rows (int64, [ROWS]) and element indices (int64, [BLOCK]) of this
    program's tile of an elementwise op, with their masks: programs run over
    (row tiles) x (blocks of a row)."""
    pid = tl.program_id(0).to(tl.int64)
    blocks_per_row = tl.cdiv(row_len, BLOCK)
    rows = (pid // blocks_per_row) * ROWS + tl.arange(0, ROWS).to(tl.int64)
    cols = (pid % blocks_per_row) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    return rows, cols, rows < batch, cols < row_len


# -------------------------------------------------------- sums of squares
@triton.jit
def _sq_add(s1, e1, s2, e2):
    """(s1, e1) + (s2, e2), pairs meaning s * 4^e (float64; e = 0 for float32 data)."""
    e = tl.maximum(e1, e2)
    total = s1 * tl.exp2(2.0 * (e1 - e)) + s2 * tl.exp2(2.0 * (e2 - e))
    return tl.where(s1 == 0, s2, tl.where(s2 == 0, s1, total)), tl.where(s1 == 0, e2, tl.where(s2 == 0, e1, e))


@triton.jit
def _row_squares(g_ptr, rows, rmask, row_stride, inner_stride, begin, end, acc: tl.constexpr, BLOCK: tl.constexpr):
    """Per row of the tile, the sum of squares of elements [begin, end), in acc."""
    lanes = tl.zeros([rows.shape[0], BLOCK], acc)
    base = g_ptr + rows[:, None] * row_stride
    for start in range(begin, end, BLOCK):
        j = start + tl.arange(0, BLOCK).to(tl.int64)
        m = rmask[:, None] & (j < end)[None, :]
        x = tl.load(base + j[None, :] * inner_stride, mask=m, other=0).to(acc)
        lanes += x * x
    return tl.sum(lanes, axis=1)


@triton.jit
def _rescued_squares(g_ptr, rows, rmask, row_stride, inner_stride, begin, end, BLOCK: tl.constexpr,
                     SCALED: tl.constexpr):
    """The same sums, accurate where the fast ones overflowed or underflowed:
    (ssq, e) in float64, the squares of x * 2^-e (e = 0 unless SCALED)."""
    base = g_ptr + rows[:, None] * row_stride
    e = tl.zeros([rows.shape[0]], tl.float64)
    if SCALED:
        largest = tl.zeros([rows.shape[0]], tl.float64)
        for start in range(begin, end, BLOCK):
            j = start + tl.arange(0, BLOCK).to(tl.int64)
            m = rmask[:, None] & (j < end)[None, :]
            x = tl.load(base + j[None, :] * inner_stride, mask=m, other=0).to(tl.float64)
            largest = tl.maximum(largest, tl.max(tl.abs(x), axis=1))
        finite = (largest > 0) & (largest <= 1.7976931348623157e308)
        # e >= -1000 keeps 2^-e a float64 (subnormal data), as the CPU kernels do
        e = tl.where(finite, tl.maximum(tl.floor(tl.log2(tl.where(finite, largest, 1.0))), -1000.0), 0.0)
    scale = tl.exp2(-e)
    lanes = tl.zeros([rows.shape[0], BLOCK], tl.float64)
    for start in range(begin, end, BLOCK):
        j = start + tl.arange(0, BLOCK).to(tl.int64)
        m = rmask[:, None] & (j < end)[None, :]
        x = tl.load(base + j[None, :] * inner_stride, mask=m, other=0).to(tl.float64) * scale[:, None]
        lanes += x * x
    return tl.sum(lanes, axis=1), e


@triton.jit
def _safe_squares(g_ptr, rows, rmask, row_stride, inner_stride, begin, end, acc: tl.constexpr, BLOCK: tl.constexpr):
    """(ssq, e) per row of the tile (float64): the fast sum where it is in range, else the rescued one."""
    s = _row_squares(g_ptr, rows, rmask, row_stride, inner_stride, begin, end, acc, BLOCK)
    if acc == tl.float64:
        fast = (s >= RESCUE_BELOW_F64) & (s <= F64_FAST_MAX)
    else:
        fast = (s >= RESCUE_BELOW_F32) & (s <= FLOAT32_MAX)
    ssq = s.to(tl.float64)
    e = tl.zeros([rows.shape[0]], tl.float64)
    need = rmask & ~fast & (s == s)  # NaN (a NaN in the data) is kept as it is
    if tl.max(need.to(tl.int32), axis=0) > 0:
        r_ssq, r_e = _rescued_squares(g_ptr, rows, rmask, row_stride, inner_stride, begin, end, BLOCK,
                                      acc == tl.float64)
        ssq = tl.where(need, r_ssq, ssq)
        e = tl.where(need, r_e, e)
    return ssq, e


@triton.jit
def _finish_rows(ssq, e, rows, rmask, out_ptr, norms_ptr, s, weight, center, power,
                 ONE_SIDED: tl.constexpr, REDUCTION: tl.constexpr):
    """Norms (and for reduction "none" the weighted penalties) of finished rows;
    returns their penalties in float64 (0 for masked rows)."""
    acc = norms_ptr.dtype.element_ty
    n = (tl.sqrt(ssq) * s.to(tl.float64) * tl.exp2(e)).to(acc)  # float64 sqrt is IEEE (correctly rounded)
    tl.store(norms_ptr + rows, n, mask=rmask)
    v = penalty_value(n, center, power, ONE_SIDED)
    if REDUCTION == REDUCTION_NONE:
        tl.store(out_ptr + rows, weight * v, mask=rmask)
    return tl.where(rmask, v.to(tl.float64), 0.0)


# ----------------------------------------------------------------- kernels
@triton.jit
def interpolate_kernel(out_ptr, real_ptr, fake_ptr, alpha_ptr, batch, row_len,
                       out_row_stride, out_inner_stride, real_row_stride, real_inner_stride,
                       fake_row_stride, fake_inner_stride, ROWS: tl.constexpr, BLOCK: tl.constexpr):
    """out_b = alpha_b * real_b + (1 - alpha_b) * fake_b, one tile per program."""
    rows, cols, rmask, cmask = _tile(batch, row_len, ROWS, BLOCK)
    m = rmask[:, None] & cmask[None, :]
    acc = alpha_ptr.dtype.element_ty
    a = tl.load(alpha_ptr + rows, mask=rmask, other=0)[:, None]
    r = tl.load(real_ptr + rows[:, None] * real_row_stride + cols[None, :] * real_inner_stride, mask=m,
                other=0).to(acc)
    f = tl.load(fake_ptr + rows[:, None] * fake_row_stride + cols[None, :] * fake_inner_stride, mask=m,
                other=0).to(acc)
    y = a * r + (1.0 - a) * f
    tl.store(out_ptr + rows[:, None] * out_row_stride + cols[None, :] * out_inner_stride,
             y.to(out_ptr.dtype.element_ty), mask=m)


@triton.jit
def sumsq_kernel(partial_ptr, g_ptr, out_ptr, norms_ptr, tile_values_ptr, scale_ptr,
                 batch, row_len, row_stride, inner_stride, chunk, chunks_per_row, ncols, col,
                 w_hi, w_lo, c_hi, c_lo, p_hi, p_lo,
                 FOLD: tl.constexpr, HAS_SCALE: tl.constexpr, ONE_SIDED: tl.constexpr, REDUCTION: tl.constexpr,
                 ROWS: tl.constexpr, BLOCK: tl.constexpr):
    """Sums of squares of one tensor over (ROWS rows) x (one chunk of each).

    Without FOLD: the pair (ssq, e) of each (row, chunk) goes to column
    col + chunk of the float64 partials [batch, ncols, 2]. With FOLD (whole
    rows, the last tensor of the call): columns 0 .. col - 1 hold the rows'
    sums over the earlier tensors; the program finishes its rows (norms,
    penalties) and, for a mean or sum, writes its rows' penalty sum to
    tile_values[pid] (float64), for the finalize."""
    pid = tl.program_id(0).to(tl.int64)
    acc = norms_ptr.dtype.element_ty
    tile = pid // chunks_per_row
    c = pid % chunks_per_row
    rows = tile * ROWS + tl.arange(0, ROWS).to(tl.int64)
    rmask = rows < batch
    begin = c * chunk
    end = tl.minimum(begin + chunk, row_len)
    ssq, e = _safe_squares(g_ptr, rows, rmask, row_stride, inner_stride, begin, end, acc, BLOCK)
    if FOLD:
        for k in range(0, col):
            p = partial_ptr + (rows * ncols + k) * 2
            ssq, e = _sq_add(tl.load(p, mask=rmask, other=0), tl.load(p + 1, mask=rmask, other=0), ssq, e)
        weight, center, power, s = _penalty_params(w_hi, w_lo, c_hi, c_lo, p_hi, p_lo, scale_ptr, HAS_SCALE, acc)
        v = _finish_rows(ssq, e, rows, rmask, out_ptr, norms_ptr, s, weight, center, power, ONE_SIDED, REDUCTION)
        if REDUCTION != REDUCTION_NONE:
            tl.store(tile_values_ptr + pid, tl.sum(v, axis=0))
    else:
        p = partial_ptr + (rows * ncols + col + c) * 2
        tl.store(p, ssq, mask=rmask)
        tl.store(p + 1, e, mask=rmask)


@triton.jit
def penalty_finalize_kernel(out_ptr, norms_ptr, partial_ptr, tile_values_ptr, scale_ptr, batch, ncols, nvalues,
                            w_hi, w_lo, c_hi, c_lo, p_hi, p_lo,
                            FROM_TILES: tl.constexpr, HAS_SCALE: tl.constexpr, ONE_SIDED: tl.constexpr,
                            REDUCTION: tl.constexpr, BLOCK_B: tl.constexpr):
    """One program, float64 throughout, in a fixed order. FROM_TILES: adds the
    folded forward's per-tile penalty sums. Else (a split forward: few rows):
    adds each row's partial sums in column order, takes norms and penalties,
    and reduces them."""
    acc = norms_ptr.dtype.element_ty
    weight, center, power, s = _penalty_params(w_hi, w_lo, c_hi, c_lo, p_hi, p_lo, scale_ptr, HAS_SCALE, acc)
    total = tl.zeros([BLOCK_B], tl.float64)
    if FROM_TILES:
        for i0 in range(0, nvalues, BLOCK_B):
            i = i0 + tl.arange(0, BLOCK_B)
            total += tl.load(tile_values_ptr + i, mask=i < nvalues, other=0)
    else:
        for b0 in range(0, batch, BLOCK_B):
            rows = b0 + tl.arange(0, BLOCK_B).to(tl.int64)
            rmask = rows < batch
            ssq = tl.zeros([BLOCK_B], tl.float64)
            e = tl.zeros([BLOCK_B], tl.float64)
            for k in range(0, ncols):
                p = partial_ptr + (rows * ncols + k) * 2
                ssq, e = _sq_add(ssq, e, tl.load(p, mask=rmask, other=0), tl.load(p + 1, mask=rmask, other=0))
            total += _finish_rows(ssq, e, rows, rmask, out_ptr, norms_ptr, s, weight, center, power, ONE_SIDED,
                                  REDUCTION)
    if REDUCTION != REDUCTION_NONE:
        red = reduction_factor(REDUCTION, batch, tl.float64)
        tl.store(out_ptr, (weight.to(tl.float64) * red * tl.sum(total, axis=0)).to(acc))


@triton.jit
def penalty_backward_kernel(out_ptr, g_ptr, go_ptr, go_stride, norms_ptr, scale_ptr, batch, row_len,
                            out_row_stride, out_inner_stride, g_row_stride, g_inner_stride,
                            w_hi, w_lo, c_hi, c_lo, p_hi, p_lo,
                            HAS_SCALE: tl.constexpr, ONE_SIDED: tl.constexpr, REDUCTION: tl.constexpr,
                            ROWS: tl.constexpr, BLOCK: tl.constexpr):
    """dL/dg_b = go_b * weight * red * s^2 * phi'(n_b)/n_b * g_b, one tile per program.
    Rows whose coefficient left acc's range are computed in float64 with the
    coefficient's exponent kept apart (csrc/penalty_math.h: backward_coef_scaled)."""
    rows, cols, rmask, cmask = _tile(batch, row_len, ROWS, BLOCK)
    m = rmask[:, None] & cmask[None, :]
    acc = norms_ptr.dtype.element_ty
    weight, center, power, s = _penalty_params(w_hi, w_lo, c_hi, c_lo, p_hi, p_lo, scale_ptr, HAS_SCALE, acc)
    go = tl.load(go_ptr + rows * go_stride, mask=rmask, other=0).to(acc)
    n = tl.load(norms_ptr + rows, mask=rmask, other=1)
    red = reduction_factor(REDUCTION, batch, acc)
    coef = go * (weight * s * s) * red * penalty_coef(n, center, power, ONE_SIDED)
    g = tl.load(g_ptr + rows[:, None] * g_row_stride + cols[None, :] * g_inner_stride, mask=m, other=0).to(acc)
    y = coef[:, None] * g
    # the range rule for the coefficient (csrc/penalty_math.h: coef_needs_rescue)
    prefactor = go.to(tl.float64) * (weight.to(tl.float64) * s.to(tl.float64) * s.to(tl.float64)) * red.to(tl.float64)
    gap = penalty_gap(n, center, ONE_SIDED)
    if acc == tl.float64:
        smallest, largest = 2.2250738585072014e-308, 1.7976931348623157e308
    else:
        smallest, largest = 1.1754943508222875e-38, FLOAT32_MAX
    exact_finite = (tl.abs(prefactor) <= 1.7976931348623157e308) & (n != 0) & (tl.abs(n) <= largest)
    exact_zero = (prefactor == 0) | (gap == 0)
    lost = tl.where(exact_zero, coef != 0, ~((tl.abs(coef) >= smallest) & (tl.abs(coef) <= largest)))
    need = rmask & exact_finite & lost
    if tl.max(need.to(tl.int32), axis=0) > 0:
        # c = prefactor * power * sign * |gap|^(power - 1) / n, with logs of the magnitudes
        n64 = n.to(tl.float64)
        gap64 = gap.to(tl.float64)
        p64 = power.to(tl.float64)
        sign = tl.where(gap64 < 0, -1.0, 1.0) * tl.where(prefactor < 0, -1.0, 1.0)
        log_c = (tl.log2(tl.abs(prefactor) * p64) + (p64 - 1.0) * tl.log2(tl.where(gap64 == 0, 1.0, tl.abs(gap64)))
                 - tl.log2(tl.where(n64 == 0, 1.0, n64)))
        whole = tl.floor(log_c)
        mant = sign * tl.exp2(log_c - whole)
        y_rescued = tl.where(exact_zero[:, None], 0.0,
                             (mant[:, None] * g.to(tl.float64)) * tl.exp2(whole)[:, None])
        y = tl.where(need[:, None], y_rescued.to(acc), y)
    tl.store(out_ptr + rows[:, None] * out_row_stride + cols[None, :] * out_inner_stride,
             y.to(out_ptr.dtype.element_ty), mask=m)
