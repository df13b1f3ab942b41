"""Norm + penalty, forward and backward, on every (backend, device) of the
matrix against fastgp.reference in float64: dtypes, shapes, layouts, options,
reductions, loss scales, zero and empty rows, several gradient tensors, and
any strides (hypothesis)."""

from __future__ import annotations

import pytest
import torch

try:  # a test extra
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:
    given = None

import fastgp
from fastgp import reference
from fastgp.backends.shared import REDUCTION_CODES

from conftest import DTYPES, assert_close, make_tensor, row_len

WGAN_GP = dict(weight=10.0, center=1.0, power=2.0, one_sided=False)
OPTIONS = {
    "wgan_gp": WGAN_GP,
    "r1": dict(weight=0.1, center=0.0, power=2.0, one_sided=False),  # 0.1 is inexact in float32
    "one_sided": dict(weight=1.0, center=1.0, power=2.0, one_sided=True),
    "one_sided_p1.5": dict(weight=2.5, center=1.0, power=1.5, one_sided=True),
    "p1_center0.5": dict(weight=1.0 / 3.0, center=0.5, power=1.0, one_sided=False),
    "p1_center1.5_one_sided": dict(weight=0.5, center=1.5, power=1.0, one_sided=True),
    "center0_p3": dict(weight=1.0, center=0.0, power=3.0, one_sided=False),
    "center0_p6": dict(weight=1.0, center=0.0, power=6.0, one_sided=False),
    "center0.7_p3_one_sided": dict(weight=1.0, center=0.7, power=3.0, one_sided=True),
    "center3_p3": dict(weight=2.0, center=3.0, power=3.0, one_sided=False),
    "p2.5_one_sided": dict(weight=1.0, center=1.0, power=2.5, one_sided=True),
}


# ------------------------------------------------------------------ oracle
def grad_scale(norms, grads, opts, grad_out_max, inv_scale=1.0):
    """The magnitude of the terms that cancel in dL/dg_i = go_i * w * red * s^2 *
    phi'(n_i)/n_i * g_i: per row p (n_i + |c|)^(p-1) / n_i times the row's
    largest |g|, the largest over rows (grad_out_max includes the reduction's 1/B)."""
    weight, center, power = opts["weight"], opts["center"], opts["power"]
    norms = norms.detach().double().cpu()
    coef = abs(weight) * inv_scale ** 2 * max(power, 1.0) * (norms + abs(center)) ** max(power - 1, 0.0) / norms
    coef = torch.where(norms > 0, coef, torch.zeros_like(coef))  # zero rows have zero gradients
    batch = norms.shape[0]
    rows = sum(g.detach().double().reshape(batch, -1).abs().amax(1).cpu() if g.numel() else torch.zeros(batch)
               for g in grads)
    return float((coef * rows).max()) * grad_out_max


def check_penalty(grads, backend, reduction="mean", inv_scale=None, opts=WGAN_GP, seed=99):
    """fastgp.penalty_from_grads on `backend` (values, norms, dtypes, and d penalty
    / d grads through autograd for a seeded grad_out) vs the float64 reference on
    the same inputs. Returns (penalty, norms, d_grads)."""
    dtype = grads[0].dtype
    acc = reference.accumulation_dtype(dtype)
    grads = [g.detach().requires_grad_(True) for g in grads]
    penalty, norms = fastgp.penalty_from_grads(tuple(grads), reduction=reduction, inv_scale=inv_scale,
                                               return_norms=True, backend=backend, **opts)
    batch = grads[0].shape[0]
    assert penalty.dtype == acc and norms.dtype == acc and norms.shape == (batch,)
    assert penalty.shape == ((batch,) if reduction == "none" else ())
    assert not norms.requires_grad
    gen = torch.Generator().manual_seed(seed)
    grad_out = (torch.rand(penalty.shape, generator=gen, dtype=torch.float64) + 0.5).to(penalty)
    d_grads = torch.autograd.grad(penalty, grads, grad_out)

    g64 = [g.detach().double().requires_grad_(True) for g in grads]
    s64 = None if inv_scale is None else inv_scale.double().reshape(())
    ref_penalty, ref_norms = reference.penalty_from_grads(g64, reduction=reduction, inv_scale=s64, **opts)
    ref_d = torch.autograd.grad(ref_penalty, g64, grad_out.double(), allow_unused=True)
    ref_penalty, ref_norms = ref_penalty.detach(), ref_norms.detach()

    n = sum(row_len(g) for g in grads)
    power, center, weight = opts["power"], opts["center"], opts["weight"]
    top = float(ref_norms.max()) + abs(center)
    per_term = abs(weight) * top ** power  # the terms that cancel in |n - c|^p
    assert_close(norms, ref_norms, dtype, row_len=n, power=1.0, scale=top)
    assert_close(penalty, ref_penalty, dtype, row_len=n, batch=batch, power=power,
                 scale=per_term * (batch if reduction == "sum" else 1))
    scale = grad_scale(ref_norms, grads, opts, (1.0 / batch if reduction == "mean" else 1.0) * float(
        grad_out.abs().max()), 1.0 if inv_scale is None else float(inv_scale))
    for d, r, g in zip(d_grads, ref_d, grads):
        assert d.dtype == dtype and d.shape == g.shape
        assert torch.isfinite(d).all()
        assert_close(d, torch.zeros_like(g, dtype=torch.float64) if r is None else r, dtype, row_len=n, batch=batch,
                     power=power, stored=dtype, scale=scale)
    return penalty, norms, d_grads


# ------------------------------------------------------------------ cases
def _zero_rows(dt, dev):
    g = make_tensor((5, 37), dt, seed=5, device=dev)
    g[1] = 0
    g[3] = 0
    return [g]


CASES = {
    "one_row_of_3": lambda dt, dev: [make_tensor((1, 3), dt, seed=1, device=dev)],
    "B1_long_row": lambda dt, dev: [make_tensor((1, 1000), dt, seed=1, device=dev)],
    "one_element_rows": lambda dt, dev: [make_tensor((7, 1), dt, seed=2, device=dev)],
    "one_per_row_1d": lambda dt, dev: [make_tensor((6,), dt, seed=6, device=dev)],
    "odd_2d": lambda dt, dev: [make_tensor((5, 13), dt, seed=3, device=dev)],
    "odd_3d": lambda dt, dev: [make_tensor((3, 5, 7), dt, seed=2, device=dev)],
    "rows_over_blocks": lambda dt, dev: [make_tensor((3, 300), dt, seed=3, device=dev)],
    "wide_batch": lambda dt, dev: [make_tensor((20, 33), dt, seed=4, device=dev)],
    "4d": lambda dt, dev: [make_tensor((3, 3, 5, 7), dt, seed=7, device=dev)],
    "5d": lambda dt, dev: [make_tensor((2, 1, 4, 3, 5), dt, seed=8, device=dev)],
    "images": lambda dt, dev: [make_tensor((4, 3, 64, 64), dt, seed=9, device=dev)],
    "long_rows": lambda dt, dev: [make_tensor((2, 70001), dt, seed=10, device=dev)],
    "several": lambda dt, dev: [make_tensor((4, 3, 5), dt, seed=7, device=dev),
                                make_tensor((4, 200), dt, seed=17, device=dev),
                                make_tensor((4,), dt, seed=27, device=dev)],
    "eleven_tensors": lambda dt, dev: [make_tensor((4, 3 + k, 5), dt, seed=k, device=dev) for k in range(11)],
    "mixed_layouts": lambda dt, dev: [make_tensor((5, 3, 16, 16), dt, "channels_last", 1, dev),
                                      make_tensor((5, 10), dt, "contiguous", 2, dev),
                                      make_tensor((5, 2, 7, 9), dt, "padded", 3, dev)],
    "zero_rows": _zero_rows,
    "zero_length_rows": lambda dt, dev: [make_tensor((3, 0), dt, device=dev),
                                         make_tensor((3, 4), dt, seed=9, device=dev)],
    "all_zero_length": lambda dt, dev: [make_tensor((3, 0, 2), dt, device=dev)],
    "transposed_2d": lambda dt, dev: [make_tensor((50, 4), dt, seed=10, device=dev).t()],
    "channels_last_3d": lambda dt, dev: [make_tensor((2, 3, 2, 3, 4), dt, "channels_last", 18, dev)],
    "many_dims": lambda dt, dev: [make_tensor((3,) + (3,) * 8, dt, seed=19, device=dev)[
        (slice(None),) + (slice(0, 2),) * 8]],
}
# every layout of the layout maker, on a 4-D gradient
CASES.update({f"layout_{layout}": (lambda layout: lambda dt, dev: [make_tensor((6, 3, 9, 10), dt, layout, 11, dev)])(
    layout) for layout in ("channels_last", "transposed", "sliced", "padded", "batch_strided", "misaligned", "permuted",
                           "expanded")})
HEAVY = {"images", "long_rows", "eleven_tensors"}  # rows of 10^4 elements and more; a launch per tensor
CASE_PARAMS = [pytest.param(case, marks=pytest.mark.heavy) if case in HEAVY else case for case in CASES]
# long enough to split rows and to reach every launch configuration on a GPU
GPU_CASES = {
    "B1_very_long": lambda dt, dev: [make_tensor((1, 300_001), dt, seed=15, device=dev)],
    "B2_images": lambda dt, dev: [make_tensor((2, 3, 128, 129), dt, seed=16, device=dev)],
    "long_rows_small_batch": lambda dt, dev: [make_tensor((4, 3, 256, 256), dt, seed=20, device=dev)],
    "dcgan": lambda dt, dev: [make_tensor((64, 3, 64, 64), dt, seed=21, device=dev)],
}
# each case with one reduction, in turn: every dtype meets every reduction
REDUCTION_OF_CASE = {case: reference.REDUCTIONS[k % 3] for k, case in enumerate([*CASES, *GPU_CASES])}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASE_PARAMS + (list(GPU_CASES) if torch.cuda.is_available() else []))
def test_penalty_matches_reference(backend, device, dtype, case):
    if case in GPU_CASES and device != "cuda":
        pytest.skip("a GPU-sized case")
    check_penalty({**CASES, **GPU_CASES}[case](dtype, device), backend, REDUCTION_OF_CASE[case])


def _straddling(dtype, device, scaled):
    """Two gradient tensors whose per-sample norms lie on both sides of every
    center of OPTIONS (one row is zero), rows long enough to be split."""
    rows = torch.tensor([0.03, 0.0, 0.12, 0.4], dtype=torch.float64)
    grads = [make_tensor((4, 130), torch.float64, seed=20), make_tensor((4, 2, 3), torch.float64, seed=21)]
    grads = [(g * rows.view(-1, *[1] * (g.dim() - 1)) * (1024 if scaled else 1)).to(device=device, dtype=dtype)
             for g in grads]
    return grads, (torch.tensor(1.0 / 1024, device=device) if scaled else None)


@pytest.mark.parametrize("dtype,scaled", [(torch.float32, True), (torch.float64, False)],
                         ids=["float32-inv_scale", "float64-unscaled"])
@pytest.mark.parametrize("reduction", reference.REDUCTIONS)
@pytest.mark.parametrize("option", list(OPTIONS))
def test_penalty_options(backend, device, option, reduction, dtype, scaled):
    grads, inv_scale = _straddling(dtype, device, scaled)
    _, norms, _ = check_penalty(grads, backend, reduction, inv_scale, OPTIONS[option])
    c = OPTIONS[option]["center"]
    assert norms[1] == 0 and (c == 0 or ((norms[norms > 0] < c).any() and (norms > c).any()))


@pytest.mark.parametrize("option", ["wgan_gp", "r1", "one_sided", "center0_p6", "p1_center0.5"])
def test_zero_gradient_rows_are_finite(backend, device, option):
    """phi'(n)/n at n = 0 is its finite limit (2 for center 0, power 2) or 0: never NaN."""
    g = make_tensor((6, 3, 8, 8), torch.float64, device=device)
    g[1] = 0
    g[4] = 0
    penalty, norms, (d,) = check_penalty([g], backend, "none", opts=OPTIONS[option])
    assert torch.isfinite(penalty).all() and norms[1] == 0 and norms[4] == 0
    assert (d[1] == 0).all() and (d[4] == 0).all()


@pytest.mark.parametrize("sdtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [(), (1,), (1, 1)], ids=str)
def test_inv_scale_forms(backend, device, sdtype, shape):
    """A loss scale handed over as a one-element tensor of any float dtype and shape."""
    scale = 1024.0
    g = make_tensor((5, 3, 12, 12), torch.float32, device=device) * scale
    inv = torch.full(shape, 1.0 / scale, device=device, dtype=sdtype)
    _, norms, _ = check_penalty([g], backend, "sum", inv)
    assert_close(norms, reference.grad_norms([(g / scale).double()]), torch.float32, row_len=row_len(g), power=1.0)


def test_rows_of_no_elements(backend, device):
    """A size-0 non-batch dim: norm 0, penalty weight * center^power, zero-sized dL/dg."""
    g = torch.empty(6, 0, 4, device=device, requires_grad=True)
    penalty, norms = fastgp.penalty_from_grads(g, weight=3.0, reduction="none", return_norms=True, backend=backend)
    assert torch.equal(norms, torch.zeros(6, device=device))
    assert torch.equal(penalty.detach(), torch.full((6,), 3.0, device=device))
    (d,) = torch.autograd.grad(penalty.sum(), g)
    assert d.shape == g.shape


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_sum_of_squares_beyond_half_range(backend, device, dtype):
    """300^2 * 4096 = 3.7e8 overflows float16 (max 65504): a float32 accumulator
    gives the exact norm 300 * 64."""
    g = torch.full((3, 4, 32, 32), 300.0, dtype=dtype, device=device)
    norms = fastgp.grad_norms(g, backend=backend)
    assert norms.dtype == torch.float32
    assert_close(norms, torch.full((3,), 19200.0), dtype, row_len=row_len(g), power=1.0)
    pen = fastgp.penalty_from_grads(g, center=0.0, backend=backend)
    assert_close(pen, torch.tensor(19200.0 ** 2), dtype, row_len=row_len(g))


# ------------------------------------------------------- the ops themselves
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("case", CASE_PARAMS)
def test_penalty_backward_op(impl, device, dtype, case):
    """penalty_backward called directly: the values of the reference, and for a
    backend with registered ops the strides of empty_like(g), as its fake kernel promises."""
    grads = CASES[case](dtype, device)
    batch = grads[0].shape[0]
    none = REDUCTION_CODES["none"]
    grad_out = make_tensor((batch,), reference.accumulation_dtype(dtype), seed=98, device=device)
    _, norms = impl.penalty_forward(grads, None, 10.0, 1.0, 2.0, False, none)
    outs = impl.penalty_backward(grad_out, grads, norms, None, 10.0, 1.0, 2.0, False, none)
    g64 = [g.detach().double().requires_grad_(True) for g in grads]
    ref, ref_norms = reference.penalty_from_grads(g64, weight=10.0, reduction="none")
    expected = torch.autograd.grad(ref, g64, grad_out.double(), allow_unused=True)
    n = sum(row_len(g) for g in grads)
    scale = grad_scale(ref_norms, grads, WGAN_GP, float(grad_out.abs().max()))
    for out, g, e in zip(outs, grads, expected):
        assert out.dtype == dtype and out.shape == g.shape
        if impl.ops:
            assert out.stride() == torch.empty_like(g).stride(), (out.stride(), g.stride())
        assert_close(out, torch.zeros_like(g, dtype=torch.float64) if e is None else e, dtype, row_len=n,
                     stored=dtype, scale=scale)


def test_penalty_backward_grad_out_forms(impl, device):
    """grad_out as a non-contiguous (B,) vector in another float dtype, or a 0-d
    tensor for the reduced penalty: the same as a contiguous float32 one."""
    grads = [make_tensor((5, 3, 16, 16), torch.float32, "channels_last", 1, device),
             make_tensor((5, 10), torch.float32, seed=2, device=device)]
    none, mean = REDUCTION_CODES["none"], REDUCTION_CODES["mean"]
    _, norms = impl.penalty_forward(grads, None, 1.0, 1.0, 2.0, False, none)
    go = torch.rand(10, device=device, dtype=torch.float64)[::2]
    got = impl.penalty_backward(go, grads, norms, None, 1.0, 1.0, 2.0, False, none)
    want = impl.penalty_backward(go.float().contiguous(), grads, norms, None, 1.0, 1.0, 2.0, False, none)
    for a, b in zip(got, want):
        assert_close(a, b, torch.float32, row_len=778)
    got = impl.penalty_backward(torch.tensor(2.0, device=device), grads, norms, None, 1.0, 1.0, 2.0, False, mean)
    want = impl.penalty_backward(torch.full((5,), 2.0 / 5, device=device), grads, norms, None, 1.0, 1.0, 2.0, False,
                                 none)
    for a, b in zip(got, want):
        assert_close(a, b, torch.float32, row_len=778, batch=5)


@pytest.mark.heavy
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_repeated_calls_are_bitwise_equal(backend, device, dtype):
    """No atomics, no run-to-run variation: the same bits every call (on a GPU at
    a size whose rows are split over several programs)."""
    shape = (4, 3, 512, 512) if device == "cuda" else (4, 3, 16, 96)
    g = make_tensor(shape, dtype, device=device).requires_grad_(True)
    runs = []
    for _ in range(3):
        outs = []
        for reduction in reference.REDUCTIONS:
            pen, norms = fastgp.penalty_from_grads(g, weight=10.0, reduction=reduction, return_norms=True,
                                                   backend=backend)
            outs += [pen, norms, *torch.autograd.grad(pen.sum(), [g])]
        runs.append(outs)
    for later in runs[1:]:
        for a, b in zip(runs[0], later):
            assert torch.equal(a, b)


def test_cpp_cpu_kernels_do_not_depend_on_the_thread_count():
    """The CPU kernels cut rows into tasks by the shape alone, so the bits do not
    depend on the number of threads."""
    if "cpp" not in fastgp.available_backends("cpu"):
        pytest.skip("the C++ extension is not loaded")
    g = make_tensor((3, 3, 300, 300), torch.float32)
    first = fastgp.penalty_from_grads(g, return_norms=True, backend="cpp")
    prev = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            again = fastgp.penalty_from_grads(g, return_norms=True, backend="cpp")
            assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1]), threads
    finally:
        torch.set_num_threads(prev)


def test_several_gradient_tensors_share_one_norm(backend, device):
    grads = [make_tensor((5, 3, 4, 4), torch.float64, seed=1, device=device),
             make_tensor((5, 10), torch.float64, seed=2, device=device),
             make_tensor((5, 2, 3), torch.float64, "transposed", seed=3, device=device)]
    norms = fastgp.grad_norms(grads, backend=backend)
    torch.testing.assert_close(norms, torch.cat([g.reshape(5, -1) for g in grads], 1).norm(dim=1))


if given is not None:  # property test over layouts (hypothesis)

    @pytest.mark.heavy
    @settings(max_examples=20, deadline=None)
    @given(data=st.data())
    def test_any_shape_and_strides(backend, device, data):
        """Any memory order, any slicing: interpolate, the penalty and its backward
        agree with the reference."""
        ndim = data.draw(st.integers(0, 4), label="non-batch dims")
        shape = [data.draw(st.integers(1, 6), label="batch")] + [data.draw(st.integers(1, 9)) for _ in range(ndim)]
        order = data.draw(st.permutations(range(1, ndim + 1)), label="memory order")
        step = data.draw(st.integers(1, 2), label="step of the last dim")
        dtype = data.draw(st.sampled_from([torch.float16, torch.float32, torch.float64]), label="dtype")

        def strided(seed):
            full = shape[:-1] + [shape[-1] * step] if ndim else shape
            perm = [0] + list(order)
            base = make_tensor([full[d] for d in perm], dtype, seed=seed, device=device)
            t = base.permute([perm.index(d) for d in range(len(perm))])
            return t[..., ::step] if ndim else t

        real, fake = strided(1), strided(2)
        alpha = torch.rand(shape[0], device=device, dtype=torch.float64)
        expected = reference.interpolate(real.double(), fake.double(), alpha)
        assert_close(fastgp.interpolate(real, fake, alpha, backend=backend), expected, dtype, stored=dtype)
        check_penalty([strided(3)], backend, "none", opts=OPTIONS["center0_p3"])
        check_penalty([strided(3)], backend, "mean")
