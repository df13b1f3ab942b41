"""Norms at the ends of the floating-point range, in every CPU backend.

The rule: a per-sample norm is finite and accurate whenever the true norm is
representable in the accumulation dtype (float32; float64 for float64 inputs),
and inf/NaN inputs propagate. dL/dg = weight * red * phi'(n)/n * g is finite and
accurate where the true value is representable too. Expectations come from
Python's math.hypot / math.fsum over the float64 values (exact squares of
float16/bfloat16/float32 numbers), independent of torch.
"""

import math

import pytest
import torch

import fastgp
from fastgp import reference

BACKENDS = [b for b in ("torch", "cpp") if b in fastgp.available_backends("cpu")]
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# Per dtype: (huge, tiny) element magnitudes whose norms over a row of up to
# ROW_MAX elements stay representable in the accumulation dtype. float32
# squares overflow above ~1.8e19 and underflow below ~1e-19.5 (1e-40 is a
# subnormal float32); float64 squares above ~1.3e154 / below ~1e-154.
EXTREMES = {
    torch.float16: [(6e4, 6e-8)],
    torch.bfloat16: [(1e20, 1e-25), (1e36, 1e-40)],
    torch.float32: [(1e20, 1e-25), (1e36, 1e-40)],
    torch.float64: [(1e200, 1e-200), (1e305, 1e-310)],
}
ROW_MAX = 70_000  # more than one chunk of the CPU kernels (2**15 elements)


def _acc(dtype):
    return reference.accumulation_dtype(dtype)


def _unit(dtype):
    return torch.finfo(_acc(dtype)).eps / 2


def _tiny(dtype):
    return torch.finfo(_acc(dtype)).smallest_normal * torch.finfo(_acc(dtype)).eps  # the smallest subnormal


def exact_norm(values) -> float:
    """The L2 norm of Python floats (float64 values; inf/NaN as math.hypot has them)."""
    return math.hypot(*values)


def _expected_norms(grads):
    flat = torch.cat([g.detach().double().reshape(g.shape[0], -1) for g in grads], dim=1)
    return [exact_norm(row) for row in flat.tolist()]


def _norm_rtol(dtype, row_len):
    """A float-accumulated sum of k non-negative terms is within (k - 1) units of
    roundoff; the kernels sum each row in 16 lanes over chunks of up to 2**15
    elements, then add the chunks' sums in float64; the reference sums in
    float64 throughout. The sqrt halves the error, the final rounding into the
    accumulation dtype adds one unit."""
    terms = min(row_len, 1 << 15) // 16 + 16 + row_len // (1 << 15) + 1
    return (terms / 2 + 2) * _unit(dtype)


def _mixed_rows(dtype, huge, tiny, row_len, gen):
    """Six samples: huge, tiny, ordinary, zero, one with an inf, one with a NaN;
    elements of random sign and magnitude in [0.5, 1) times the row's scale."""
    def row(s):
        mag = torch.rand(row_len, generator=gen, dtype=torch.float64) * 0.5 + 0.5
        sign = torch.randint(0, 2, (row_len,), generator=gen).double() * 2 - 1
        return (mag * sign * s).to(dtype)
    rows = [row(huge), row(tiny), row(1.0), torch.zeros(row_len, dtype=dtype), row(1.0), row(1.0)]
    rows[4][row_len // 2] = math.inf
    rows[5][row_len // 3] = math.nan
    return torch.stack(rows)


def _check_norms(norms, expected, dtype, row_len):
    acc = _acc(dtype)
    assert norms.dtype == acc
    rtol = _norm_rtol(dtype, row_len)
    finfo = torch.finfo(acc)
    for got, want in zip(norms.tolist(), expected):
        if math.isnan(want):
            assert math.isnan(got), (got, want)
        elif want > finfo.max:
            assert got == math.inf, (got, want)
        else:
            # below the smallest normal the result is a subnormal: absolute error of one of its units
            assert abs(got - want) <= rtol * want + _tiny(dtype), (got, want, (got - want) / want)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("row_len", [4, 100, ROW_MAX])
def test_norms_at_range_ends(backend, dtype, row_len):
    gen = torch.Generator().manual_seed(row_len)
    for huge, tiny in EXTREMES[dtype]:
        g = _mixed_rows(dtype, huge, tiny, row_len, gen)
        norms = fastgp.grad_norms(g, backend=backend)
        _check_norms(norms, _expected_norms([g]), dtype, row_len)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_norms_of_strided_and_several_tensors(backend, dtype):
    """Transposed storage (the kernels' run-by-run path) and two tensors per sample."""
    gen = torch.Generator().manual_seed(1)
    for huge, tiny in EXTREMES[dtype]:
        a = _mixed_rows(dtype, huge, tiny, 600, gen).reshape(6, 20, 30).transpose(1, 2)
        b = _mixed_rows(dtype, huge, tiny, 7, gen)
        norms = fastgp.grad_norms((a, b), backend=backend)
        _check_norms(norms, _expected_norms([a, b]), dtype, 607)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_chunks_of_different_scales_in_one_row(backend, dtype):
    """One row whose chunks are huge, tiny and ordinary: partial sums of very
    different scales are combined without overflow or loss."""
    chunk = 1 << 15
    huge, tiny = EXTREMES[dtype][0]
    row = torch.ones(3 * chunk + 5, dtype=torch.float64)
    row[:chunk] *= huge / 2
    row[chunk:2 * chunk] *= tiny
    row[2 * chunk:] *= 0.25
    rows = [row, row.flip(0), row[chunk:]]  # huge first, huge last, no huge chunk
    for r in rows:
        g = r.to(dtype)[None]
        norms = fastgp.grad_norms(g, backend=backend)
        _check_norms(norms, _expected_norms([g]), dtype, r.numel())


def _exact_coefficient(n, center, power, one_sided):
    """phi'(n)/n in Python floats, with the zero-norm rule of penalty_math.h."""
    if n == 0:
        return 2.0 if center == 0 and power == 2 else 0.0
    d = n - center
    if one_sided and d < 0:
        return 0.0
    if d == 0:
        return 0.0
    return power * math.copysign(abs(d) ** (power - 1), d) / n


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("params", [(1.0, 2.0, False), (0.0, 2.0, False), (1.0, 1.0, False), (0.5, 1.5, True)],
                         ids=str)
def test_backward_at_range_ends(backend, dtype, params):
    """dL/dg_i = weight * phi'(n_i)/n_i * g_i / B, finite and accurate for rows of
    huge and tiny gradients (and for the ordinary and zero rows beside them)."""
    center, power, one_sided = params
    weight, row_len = 3.0, 40
    gen = torch.Generator().manual_seed(2)
    finfo = torch.finfo(dtype)
    for huge, tiny in EXTREMES[dtype]:
        if backend == "torch" and dtype == torch.float64:
            continue  # the oracle's float64 gradient is autograd through its scaling: see reference._scaled_rows
        g = _mixed_rows(dtype, huge, tiny, row_len, gen)[:4].requires_grad_(True)  # huge, tiny, ordinary, zero
        penalty = fastgp.penalty_from_grads(g, weight=weight, center=center, power=power, one_sided=one_sided,
                                            backend=backend)
        (grad,) = torch.autograd.grad(penalty, g)
        coefs = [weight / 4 * _exact_coefficient(n, center, power, one_sided) for n in _expected_norms([g])]
        want = torch.tensor(coefs, dtype=torch.float64)[:, None] * g.detach().double()
        representable = want.abs() <= finfo.max
        assert torch.isfinite(grad[representable]).all(), (huge, tiny, grad)
        # the norm's relative error carries into phi'(n)/n (at most the exponent of
        # the gap, 1 here), plus the roundings of the coefficient and of the product
        rtol = _norm_rtol(dtype, row_len) + 4 * finfo.eps
        err = (grad.double() - want).abs()[representable]
        assert (err <= rtol * want.abs()[representable] + finfo.smallest_normal * finfo.eps).all(), (
            huge, tiny, grad, want)


@pytest.mark.skipif("cpp" not in BACKENDS, reason="C++ extension not loaded")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_backward_of_a_zero_cotangent_is_zero_at_tiny_norms(dtype):
    """grad_out 0 times a coefficient that overflows the accumulation type
    (phi'(n)/n of a subnormal norm) is 0, not 0 * inf = NaN."""
    tiny = 1e-44 if dtype == torch.float32 else 1e-322
    g = torch.full((3, 4), tiny, dtype=dtype)
    _, norms = torch.ops.fastgp.penalty_forward([g], None, 1.0, 1.0, 2.0, False, 0)
    grad_out = torch.tensor([0.0, 1.0, -2.0], dtype=dtype)
    (d,) = torch.ops.fastgp.penalty_backward(grad_out, [g], norms, None, 1.0, 1.0, 2.0, False, 0)
    assert torch.equal(d[0], torch.zeros(4, dtype=dtype))
    # 2 (n - 1) / n * g with n = 2 g (exact here): -1 per element, times grad_out
    torch.testing.assert_close(d[1:], -grad_out[1:, None].expand(2, 4), rtol=1e-6, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_issue_examples(backend, dtype):
    """grad_norms(full((2, 4), 1e20)) is 2e20 (it fits in float32), 1e-25 gives 2e-25."""
    for value in (1e20, 1e-25) if dtype != torch.float16 else (6e4, 6e-8):
        norms = fastgp.grad_norms(torch.full((2, 4), value, dtype=dtype), backend=backend)
        want = 2 * torch.tensor(value, dtype=dtype).item()
        torch.testing.assert_close(norms, torch.full((2,), want, dtype=_acc(dtype)), rtol=4 * _unit(dtype), atol=0)


def test_reference_is_at_least_as_accurate_as_the_kernels():
    """The oracle's norm of float32 rows of 2**20 elements is the correctly
    rounded one (up to one unit): float64 accumulation, where a float32 one
    is off by about 1e-4."""
    g = torch.randn(3, 1 << 20, generator=torch.Generator().manual_seed(3))
    exact = [math.sqrt(math.fsum(v * v for v in row)) for row in g.double().tolist()]
    got = reference.grad_norms([g]).double().tolist()
    for n, want in zip(got, exact):
        assert abs(n - want) <= 2 * _unit(torch.float32) * want, (n, want)


def test_reference_float64_is_scaled():
    """float64 rows above 1e154 or below 1e-154 would overflow or underflow
    their squares: the oracle scales them (as BLAS nrm2 does)."""
    g = torch.tensor([[3e200, 4e200], [3e-200, 4e-200], [3e-320, 4e-320]], dtype=torch.float64)
    norms = reference.grad_norms([g])
    torch.testing.assert_close(norms, torch.tensor([5e200, 5e-200, 5e-320], dtype=torch.float64), rtol=1e-15,
                               atol=_tiny(torch.float64))


def test_handwritten_penalty_is_the_common_formula():
    """The benchmarks' eager baseline computes the same penalty as the oracle on ordinary data."""
    g = torch.randn(8, 3, 5, 5, generator=torch.Generator().manual_seed(4))
    expected, _ = reference.penalty_from_grads([g], weight=10.0)
    torch.testing.assert_close(reference.handwritten_penalty(g, weight=10.0), expected)
