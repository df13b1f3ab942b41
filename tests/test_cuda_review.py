"""The CUDA kernels on the cases a review of csrc/cuda/ found untested: many
rows (the finalize), packed short rows, more gradients than one launch holds,
strided and dense tensors in one launch, rows of no elements, expanded
grad_out, float16/bfloat16 with other penalties, float16 inv_scale, a side
stream, CUDA-graph capture, the ends of the float range, launch counts, and
sums that do not depend on how rows were cut into tasks.

Every test needs a CUDA device and skips without one. On a machine that has
one, the C++ extension must have registered its CUDA kernels: otherwise every
test here fails (a silent skip would prove nothing).
"""

from __future__ import annotations

import copy

import pytest
import torch

import fastgp
from fastgp import reference
from fastgp._ext import state

from conftest import COEF_RANGE_ENDS, RANGE_ENDS, cuda_work

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA device", allow_module_level=True)

OPS = ("interpolate", "penalty_forward", "penalty_backward")
REGISTERED = state.loaded and all(
    torch._C._dispatch_has_kernel_for_dispatch_key(f"fastgp::{op}", "CUDA") for op in OPS)
pytestmark = pytest.mark.gpu

DEV = "cuda"
# (rtol, atol) against float64: outputs in the data dtype, and in the accumulation dtype.
OUT_TOL = {torch.float16: (2e-3, 2e-3), torch.bfloat16: (1.6e-2, 1.6e-2), torch.float32: (1e-5, 1e-5),
           torch.float64: (1e-12, 1e-12)}
ACC_TOL = {torch.float32: (2e-5, 1e-5), torch.float64: (1e-11, 1e-11)}


@pytest.fixture(autouse=True)
def cuda_kernels():
    if not REGISTERED:
        pytest.fail(f"a CUDA device is present but fastgp's CUDA kernels are not registered "
                    f"(extension loaded={state.loaded}, reason={state.reason}, build={state.build})")


def test_cuda_kernels_are_registered():
    assert REGISTERED
    assert (state.build or {}).get("with_cuda")


def rand(shape, dtype=torch.float32, seed=0, scale=1.0):
    g = torch.Generator(device=DEV).manual_seed(seed)
    return (torch.randn(shape, generator=g, device=DEV, dtype=torch.float32) * scale).to(dtype)


def acc_tol(dtype):
    return ACC_TOL[reference.accumulation_dtype(dtype)]


def check_penalty(grads, reduction="mean", inv_scale=None, grad_out=None, **opts):
    """Forward (penalty, norms) and backward of fastgp::penalty_* against the float64 reference."""
    opts = {"weight": 10.0, "center": 1.0, "power": 2.0, "one_sided": False, **opts}
    code = {"none": 0, "mean": 1, "sum": 2}[reduction]
    dtype = grads[0].dtype
    penalty, norms = torch.ops.fastgp.penalty_forward(list(grads), inv_scale, opts["weight"], opts["center"],
                                                      opts["power"], opts["one_sided"], code)
    ref64 = [g.detach().double().requires_grad_(True) for g in grads]
    s64 = None if inv_scale is None else inv_scale.double()
    ref_penalty, ref_norms = reference.penalty_from_grads(ref64, reduction=reduction, inv_scale=s64, **opts)
    rtol, atol = acc_tol(dtype)
    torch.testing.assert_close(norms.double(), ref_norms.detach(), rtol=rtol, atol=atol)
    scale = max(1.0, float(ref_penalty.detach().abs().max())) if ref_penalty.numel() else 1.0
    torch.testing.assert_close(penalty.double(), ref_penalty.detach(), rtol=rtol, atol=atol * scale)
    if grad_out is None:
        grad_out = torch.ones_like(penalty) if reduction != "none" else rand(penalty.shape, penalty.dtype, 99)
    outs = torch.ops.fastgp.penalty_backward(grad_out, list(grads), norms, inv_scale, opts["weight"], opts["center"],
                                             opts["power"], opts["one_sided"], code)
    ref_d = torch.autograd.grad(ref_penalty, ref64, grad_out.double(), allow_unused=True)
    rtol, atol = OUT_TOL[dtype]
    for g, out, r in zip(grads, outs, ref_d):
        r = torch.zeros_like(g, dtype=torch.float64) if r is None else r
        assert out.shape == g.shape and out.dtype == dtype and out.stride() == torch.empty_like(g).stride()
        big = max(1.0, float(r.abs().max())) if r.numel() else 1.0
        torch.testing.assert_close(out.double(), r, rtol=rtol * 4, atol=atol * big)
    return penalty, norms


def check_interpolate(real, fake, alpha):
    out = torch.ops.fastgp.interpolate(real, fake, alpha)
    ref = reference.interpolate(real.double(), fake.double(), alpha.double())
    assert out.stride() == torch.empty_like(real).stride()
    rtol, atol = OUT_TOL[real.dtype]
    torch.testing.assert_close(out.double(), ref, rtol=rtol, atol=atol)
    return out


# ------------------------------------------------------- many rows, short rows
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("shape", [(513, 7), (4097, 33), (600, 3, 16, 16), (100_000, 3), (700, 5000)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_batches_beyond_one_finalize_block(shape, dtype, reduction):
    check_penalty([rand(shape, dtype, seed=1)], reduction)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_a_million_rows_of_two(dtype):
    B = 1_000_000
    g = rand((B, 2), dtype, seed=2)
    check_penalty([g], "mean")
    check_penalty([g], "none", power=1.5, one_sided=True)
    check_interpolate(g, rand((B, 2), dtype, seed=3), torch.rand(B, device=DEV))


@pytest.mark.parametrize("row", [1, 2, 3, 5, 8, 16, 17, 33, 65, 129, 257])
def test_packed_short_rows_of_every_length(row):
    for dtype in (torch.float32, torch.bfloat16):
        for B in (1, 1000):
            g = rand((B, row), dtype, seed=row)
            check_penalty([g], "mean")
            check_penalty([g[:, ::1].t().contiguous().t()], "sum")  # batch-minor: the strided path
            check_interpolate(g, rand((B, row), dtype, seed=row + 1), torch.rand(B, device=DEV))


# ------------------------------------------------------ launches and layouts
def test_backward_with_more_grads_than_one_launch_holds_strided_and_dense():
    B = 6
    grads = []
    for k in range(11):
        shape = (B, 3, 8 + k, 5)
        g = rand(shape, torch.float32, seed=10 + k)
        if k % 3 == 1:
            g = rand((B, 3, 8 + k, 10), torch.float32, seed=10 + k)[..., ::2]  # strided inner dim
        elif k % 3 == 2:
            g = g.contiguous(memory_format=torch.channels_last)
        grads.append(g)
    grads.append(torch.empty(B, 0, device=DEV))  # a row of no elements among them
    check_penalty(grads, "mean")
    check_penalty(grads, "none", center=0.0)


def test_strided_and_dense_grads_in_one_launch():
    dense = rand((8, 3, 32, 32), torch.bfloat16, seed=20)
    strided = rand((8, 3, 32, 64), torch.bfloat16, seed=21)[..., ::2]
    misaligned = rand((8 * 3 * 32 * 32 + 1,), torch.bfloat16, seed=22)[1:].view(8, 3, 32, 32)
    for grads in ([dense, strided], [strided, dense, misaligned], [misaligned, dense]):
        check_penalty(grads, "mean")
        check_penalty(grads, "none", power=3.0)


def test_more_grads_than_one_finalize_pass():
    grads = [rand((5, 2 + k % 4), torch.float32, seed=k) for k in range(70)]
    check_penalty(grads, "mean")
    check_penalty(grads, "none")


def test_rows_of_no_elements_mixed_with_others():
    B = 9
    empty, empty3 = torch.empty(B, 0, device=DEV), torch.empty(B, 0, 4, device=DEV)
    check_penalty([empty, rand((B, 5), seed=30), empty3, rand((B, 700), seed=31)], "mean")
    check_penalty([empty], "mean")  # every norm 0
    check_penalty([empty, empty3], "none", center=0.0)
    check_interpolate(empty3, empty3.clone(), torch.rand(B, device=DEV))


def test_expanded_grad_out():
    B = 1000
    g = rand((B, 24), seed=40)
    one = torch.ones((), device=DEV)
    check_penalty([g], "none", grad_out=one.expand(B))  # stride 0
    base = rand((2 * B,), seed=41)
    check_penalty([g], "none", grad_out=base[::2])  # strided
    check_penalty([g], "none", grad_out=rand((B,), torch.float64, seed=42))  # another float dtype


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("opts", [dict(power=1.0), dict(power=1.5, one_sided=True), dict(power=3.0, center=0.5),
                                  dict(power=2.0, one_sided=True), dict(center=0.0, power=2.0)])
def test_half_precision_with_other_penalties(dtype, opts):
    for shape in [(64, 3, 16, 16), (5000, 6)]:
        g = rand(shape, dtype, seed=50, scale=0.05)  # norms on both sides of the center
        check_penalty([g], "mean", **opts)
        check_penalty([g], "none", **opts)


@pytest.mark.parametrize("sdtype", [torch.float16, torch.bfloat16, torch.float32])
def test_inv_scale_in_half_precision(sdtype):
    g = rand((32, 3, 16, 16), torch.float16, seed=60, scale=1024.0)  # gradients of a loss scaled by 2^10
    inv = torch.tensor(1.0 / 1024, device=DEV, dtype=sdtype)
    check_penalty([g], "mean", inv_scale=inv)
    check_penalty([g], "none", inv_scale=inv.reshape(1))


def test_a_non_default_stream():
    side = torch.cuda.Stream()
    g = rand((300, 3, 32, 32), seed=70)
    real, fake, alpha = rand((64, 3, 32, 32), seed=71), rand((64, 3, 32, 32), seed=72), torch.rand(64, device=DEV)
    ref_penalty, ref_norms = torch.ops.fastgp.penalty_forward([g], None, 10.0, 1.0, 2.0, False, 1)
    ref_x = torch.ops.fastgp.interpolate(real, fake, alpha)
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        h = g * 1.0  # produced on the side stream: the kernels must run after it, on it
        penalty, norms = torch.ops.fastgp.penalty_forward([h], None, 10.0, 1.0, 2.0, False, 1)
        (d,) = torch.ops.fastgp.penalty_backward(torch.ones((), device=DEV), [h], norms, None, 10.0, 1.0, 2.0, False,
                                                 1)
        x = torch.ops.fastgp.interpolate(real * 1.0, fake, alpha)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    assert torch.equal(penalty, ref_penalty) and torch.equal(norms, ref_norms) and torch.equal(x, ref_x)
    (ref_d,) = torch.ops.fastgp.penalty_backward(torch.ones((), device=DEV), [g], ref_norms, None, 10.0, 1.0, 2.0,
                                                 False, 1)
    assert torch.equal(d, ref_d)


def _critic():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.SiLU(), torch.nn.Flatten(),
                               torch.nn.Linear(8 * 16 * 16, 1)).to(DEV)


@pytest.mark.parametrize("shape", [(8, 3, 16, 16), (4096, 3, 16, 16)])
def test_penalty_step_captured_in_a_cuda_graph_replays_like_eager(shape):
    critic = _critic()
    twin = copy.deepcopy(critic)
    real, fake = rand(shape, seed=80), rand(shape, seed=81)
    alpha = torch.rand(shape[0], device=DEV)

    def step(model):
        x = torch.ops.fastgp.interpolate(real, fake, alpha).requires_grad_(True)
        (g,) = torch.autograd.grad(model(x).sum(), x, create_graph=True)
        penalty = fastgp.penalty_from_grads(g, weight=10.0, backend="cpp")
        penalty.backward()
        return penalty

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture (PyTorch's recipe)
        for _ in range(2):
            critic.zero_grad(set_to_none=True)
            step(critic)
    torch.cuda.current_stream().wait_stream(side)
    critic.zero_grad(set_to_none=True)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step(critic)
    real.copy_(rand(shape, seed=82))  # new inputs in the captured buffers
    alpha.copy_(torch.rand(shape[0], device=DEV))
    graph.replay()
    torch.cuda.synchronize()
    eager = step(twin)
    torch.testing.assert_close(captured, eager, rtol=1e-5, atol=1e-6)
    for p, q in zip(critic.parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------- the ends of the range
FLOAT16_RANGE_ENDS = (6e4, 1e-7)  # float16 data accumulates in float32: values near float16's own limits


@pytest.mark.parametrize("dtype", [*RANGE_ENDS, torch.float16], ids=str)
def test_norms_at_the_ends_of_the_range(dtype):
    """Norms are finite and accurate wherever the true norm is representable."""
    for v in RANGE_ENDS.get(dtype, FLOAT16_RANGE_ENDS):
        for shape in [(3, 4), (2, 3, 40, 40), (1, 100_000)]:
            g = torch.full(shape, v, dtype=dtype, device=DEV)
            g[0].mul_(-1.0)
            _, norms = torch.ops.fastgp.penalty_forward([g], None, 1.0, 0.0, 2.0, False, 1)
            ref = reference.grad_norms([g.cpu()]).to(DEV)
            assert torch.isfinite(ref).all(), "the case itself must be representable"
            assert torch.isfinite(norms).all(), (v, shape, norms)
            rtol, atol = acc_tol(dtype)
            torch.testing.assert_close(norms, ref, rtol=rtol, atol=0)


def test_backward_coefficients_at_the_ends_of_the_range():
    """Tiny norms make phi'(n)/n overflow float32 (n below 2 / FLT_MAX): dL/dg
    is still finite and right."""
    for v in COEF_RANGE_ENDS:
        g = torch.full((4, 3), v, device=DEV)
        check_penalty([g], "mean")
        check_penalty([g], "none", power=1.5)


def test_nan_and_inf_propagate():
    g = rand((4, 100), seed=90)
    g[1, 7] = float("nan")
    g[2, 3] = float("inf")
    _, norms = torch.ops.fastgp.penalty_forward([g], None, 1.0, 1.0, 2.0, False, 0)
    assert torch.isnan(norms[1]) and torch.isinf(norms[2]) and torch.isfinite(norms[[0, 3]]).all()


def test_huge_row_beyond_int32_offsets():
    n = 2**31 + 5  # offsets past 2^31 (about 4.3 GB of bfloat16)
    if torch.cuda.get_device_properties(0).total_memory < 3 * n * 2 + 2**30:
        pytest.skip("needs about 14 GB of GPU memory")
    g = torch.ones((1, n), dtype=torch.bfloat16, device=DEV)
    g[0, -1] = 3.0
    _, norms = torch.ops.fastgp.penalty_forward([g], None, 1.0, 0.0, 2.0, False, 1)
    expected = (n - 1 + 9) ** 0.5  # every sum here is of integers below 2^53: exact before the sqrt
    assert abs(norms.item() - expected) <= 1e-6 * expected
    (d,) = torch.ops.fastgp.penalty_backward(torch.ones((), device=DEV), [g], norms, None, 1.0, 0.0, 2.0, False, 1)
    assert d[0, -1].item() == 6.0 and d[0, 0].item() == 2.0 and d[0, 2**31].item() == 2.0
    del d
    x = torch.ops.fastgp.interpolate(g, torch.zeros_like(g), torch.full((1,), 0.5, device=DEV))
    assert x[0, 2**31].item() == 0.5 and x[0, -1].item() == 1.5


# ------------------------------------------ reproducible, whatever the plan
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_sums_do_not_depend_on_how_rows_were_cut(dtype):
    """A row's norm is the same bits alone, in a small batch (rows split into
    chunks, the finalize adds them) and in a big one (whole rows per warp),
    with or without other rows or other gradients; every run gives the same bits."""
    rows = rand((2, 3, 64, 64), dtype, seed=100)
    _, alone = torch.ops.fastgp.penalty_forward([rows], None, 1.0, 1.0, 2.0, False, 0)
    big = rand((20000, 3, 64, 64), dtype, seed=101)
    big[:2] = rows
    _, in_big = torch.ops.fastgp.penalty_forward([big], None, 1.0, 1.0, 2.0, False, 0)
    assert torch.equal(alone, in_big[:2])
    again = torch.ops.fastgp.penalty_forward([big], None, 1.0, 1.0, 2.0, False, 1)
    assert torch.equal(again[0], torch.ops.fastgp.penalty_forward([big], None, 1.0, 1.0, 2.0, False, 1)[0])
    # channels_last and contiguous rows: same dense row, same order
    _, cl = torch.ops.fastgp.penalty_forward([rows.contiguous(memory_format=torch.channels_last)], None, 1.0, 1.0,
                                             2.0, False, 0)
    _, flat = torch.ops.fastgp.penalty_forward([rows.permute(0, 2, 3, 1).contiguous()], None, 1.0, 1.0, 2.0, False, 0)
    assert torch.equal(cl, flat)
    # a misaligned copy takes the scalar path: the same sums
    mis = torch.empty(rows.numel() + 1, dtype=dtype, device=DEV)[1:].view(rows.shape).copy_(rows)
    _, mis_norms = torch.ops.fastgp.penalty_forward([mis], None, 1.0, 1.0, 2.0, False, 0)
    assert torch.equal(mis_norms, alone)


# ---------------------------------------------------------------- launches
@pytest.mark.parametrize("shape", [(1_000_000, 2), (65536, 16), (4096, 1024), (256, 3, 64, 64), (1, 2**22),
                                   (16, 3, 256, 256)])
@pytest.mark.parametrize("ngrads", [1, 3])
def test_launches_per_call(shape, ngrads):
    grads = [rand(shape, torch.bfloat16, seed=k) for k in range(ngrads)]
    real, fake, alpha = grads[0], rand(shape, torch.bfloat16, seed=9), torch.rand(shape[0], device=DEV)
    go = torch.ones((), device=DEV)
    for code, forward_launches in ((1, (1, 2)), (0, (1, 2))):
        launched = cuda_work(lambda: torch.ops.fastgp.penalty_forward(grads, None, 10.0, 1.0, 2.0, False, code))
        assert len(launched) in forward_launches and all("fastgp" in k for k in launched), launched
    _, norms = torch.ops.fastgp.penalty_forward(grads, None, 10.0, 1.0, 2.0, False, 1)
    launched = cuda_work(lambda: torch.ops.fastgp.penalty_backward(go, grads, norms, None, 10.0, 1.0, 2.0, False, 1))
    assert len(launched) == 1 and "backward" in launched[0], launched
    launched = cuda_work(lambda: torch.ops.fastgp.interpolate(real, fake, alpha))
    assert len(launched) == 1 and "interpolate" in launched[0], launched


def test_a_folded_forward_without_reduction_is_one_launch():
    g = rand((100_000, 16), torch.float32, seed=3)
    launched = cuda_work(lambda: torch.ops.fastgp.penalty_forward([g], None, 10.0, 1.0, 2.0, False, 0))
    assert len(launched) == 1 and "partials" in launched[0], launched
