"""The CUDA kernels' code, unchanged, run on the CPU.

csrc/simt/cuda_kernels_on_cpu.cpp compiles the kernels and their host code
(csrc/cuda/*.cuh) with the host compiler against a SIMT emulation
(csrc/simt/simt_emulation.h: threads for lanes, barriers for shuffles, votes
and __syncthreads), as a test-only library built here on first use. So the
arithmetic that no GPU has run yet (the packed rows' sums, the pairwise trees,
the folded and the split forward, the finalize, the range rescues, the
backward's coefficients) is checked against the float64 reference, and the
claim that a result does not depend on how the device cuts the work is
checked bit for bit: ``resident_warps`` stands for devices from tiny to huge,
which changes the plan (folded or split, chunk sizes, the grid).

What this cannot show: speed, the GPU's memory model, and anything of nvcc's
code generation (the same source, another compiler).
"""

from __future__ import annotations

import functools
import os
import shutil

import pytest
import torch

from fastgp import reference

from conftest import COEF_RANGE_ENDS, RANGE_ENDS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(ROOT, "csrc", "simt", "cuda_kernels_on_cpu.cpp")
WARPS = [8, 64, 2112, 10**6]  # devices from tiny (rows split into chunks) to huge (whole rows per warp)
pytestmark = pytest.mark.slow


class _EmulatedOps:
    """torch.ops.fastgp_simt, built on first use: collecting this module (say,
    with -m "not slow") compiles nothing, and a machine that cannot build it
    skips the tests that use it."""

    def __getattr__(self, name):
        return getattr(_build(), name)


@functools.lru_cache(maxsize=None)
def _build():
    from torch.utils.cpp_extension import load

    if shutil.which(os.environ.get("CXX", "c++")) is None:
        pytest.skip("no C++ compiler to build the emulation with")
    try:
        load(name="fastgp_simt_kernels", sources=[SOURCE], extra_cflags=["-O1"], is_python_module=False,
             verbose=False)
    except Exception as e:  # a machine that cannot build C++ extensions at all
        if "ninja" in str(e).lower() and shutil.which("ninja") is None:
            pytest.skip(f"cannot build the emulation here: {e}")
        raise
    return torch.ops.fastgp_simt


SIMT = _EmulatedOps()


def rand(*shape, dtype=torch.float32, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype)


ACC_TOL = {torch.float32: (2e-5, 1e-6), torch.float64: (1e-12, 1e-12)}
OUT_TOL = {torch.float16: (4e-3, 2e-3), torch.bfloat16: (3e-2, 1.6e-2), torch.float32: (4e-5, 1e-5),
           torch.float64: (1e-11, 1e-12)}
CODES = {"none": 0, "mean": 1, "sum": 2}


def forward(grads, warps, reduction="mean", inv_scale=None, **opts):
    o = {"weight": 10.0, "center": 1.0, "power": 2.0, "one_sided": False, **opts}
    return SIMT.penalty_forward(list(grads), inv_scale, o["weight"], o["center"], o["power"], o["one_sided"],
                                CODES[reduction], warps)


def check_forward(grads, reduction="mean", inv_scale=None, warps=WARPS, **opts):
    """Same bits for every device size, and the float64 reference's values."""
    results = [forward(grads, w, reduction, inv_scale, **opts) for w in warps]
    for p, n in results[1:]:
        assert torch.equal(p, results[0][0]) and torch.equal(n, results[0][1]), (p, results[0][0])
    penalty, norms = results[0]
    o = {"weight": 10.0, "center": 1.0, "power": 2.0, "one_sided": False, **opts}
    ref_p, ref_n = reference.penalty_from_grads([g.double() for g in grads], reduction=reduction,
                                                inv_scale=None if inv_scale is None else inv_scale.double(), **o)
    rtol, atol = ACC_TOL[reference.accumulation_dtype(grads[0].dtype)]
    assert torch.isfinite(norms).all() == torch.isfinite(ref_n).all()
    torch.testing.assert_close(norms.double(), ref_n, rtol=rtol, atol=atol)
    # the op returns its penalty in its own dtype: a value beyond that dtype's range is inf there too
    ref_p = ref_p.to(penalty.dtype).double()
    finite = ref_p[torch.isfinite(ref_p)]
    big = max(1.0, float(finite.abs().max())) if finite.numel() else 1.0
    torch.testing.assert_close(penalty.double(), ref_p, rtol=rtol, atol=atol * big)
    return penalty, norms


def check_backward(grads, reduction="mean", inv_scale=None, grad_out=None, warps=64, **opts):
    o = {"weight": 10.0, "center": 1.0, "power": 2.0, "one_sided": False, **opts}
    code = CODES[reduction]
    ref64 = [g.double().requires_grad_(True) for g in grads]
    ref_p, _ = reference.penalty_from_grads(ref64, reduction=reduction,
                                            inv_scale=None if inv_scale is None else inv_scale.double(), **o)
    _, norms = forward(grads, warps, reduction, inv_scale, **opts)
    if grad_out is None:
        grad_out = torch.ones(()) if reduction != "none" else rand(grads[0].shape[0], seed=77)
    outs = SIMT.penalty_backward(grad_out, list(grads), norms, inv_scale, o["weight"], o["center"], o["power"],
                                 o["one_sided"], code, warps)
    refs = torch.autograd.grad(ref_p, ref64, grad_out.double().expand_as(ref_p), allow_unused=True)
    rtol, atol = OUT_TOL[grads[0].dtype]
    for g, out, r in zip(grads, outs, refs):
        r = torch.zeros_like(g, dtype=torch.float64) if r is None else r
        assert out.shape == g.shape and out.dtype == g.dtype and out.stride() == torch.empty_like(g).stride()
        assert torch.isfinite(out).all() == torch.isfinite(r).all()
        big = max(1.0, float(r.abs().max())) if r.numel() else 1.0
        torch.testing.assert_close(out.double(), r, rtol=rtol, atol=atol * big)
    return outs


def check_interpolate(real, fake, warps=64):
    alpha = torch.rand(real.shape[0], generator=torch.Generator().manual_seed(3),
                       dtype=reference.accumulation_dtype(real.dtype))
    out = SIMT.interpolate(real, fake, alpha, warps)
    assert out.stride() == torch.empty_like(real).stride()
    ref = reference.interpolate(real.double(), fake.double(), alpha.double())
    rtol, atol = OUT_TOL[real.dtype]
    torch.testing.assert_close(out.double(), ref, rtol=rtol, atol=atol)


DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


# ----------------------------------------------------------------- forward
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1, 1), (7, 2), (600, 3), (5, 16), (33, 17), (9, 100), (3, 5000), (2, 3, 33, 31),
                                   (700, 65)])
def test_forward_same_bits_on_every_device(shape, dtype):
    g = rand(*shape, dtype=dtype, seed=sum(shape))
    for reduction in ("mean", "none"):
        check_forward([g], reduction)


@pytest.mark.parametrize("layout", ["channels_last", "sliced", "transposed", "expanded", "misaligned", "batch_minor"])
def test_forward_layouts(layout):
    base = rand(6, 3, 10, 12, seed=5)
    g = {"channels_last": lambda: base.contiguous(memory_format=torch.channels_last),
         "sliced": lambda: rand(6, 3, 10, 24, seed=5)[..., ::2],
         "transposed": lambda: base.transpose(-1, -2),
         "expanded": lambda: rand(6, 3, 10, 1, seed=5).expand(6, 3, 10, 12),
         "misaligned": lambda: torch.cat([torch.zeros(1), base.reshape(-1)])[1:].view(6, 3, 10, 12),
         "batch_minor": lambda: base.permute(3, 2, 1, 0).contiguous().permute(3, 2, 1, 0)}[layout]()
    check_forward([g], "sum")
    check_forward([g, base], "mean")  # one strided tensor beside a dense one


def test_forward_options_and_inv_scale():
    g = rand(40, 30, seed=6, scale=0.2)  # norms on both sides of the center
    for opts in (dict(power=1.0), dict(power=1.5, one_sided=True), dict(center=0.0), dict(power=3.0, center=0.5)):
        check_forward([g], "mean", **opts)
        check_forward([g], "none", **opts)
    for sdtype in (torch.float16, torch.bfloat16, torch.float64):
        check_forward([g * 1024], "mean", inv_scale=torch.tensor(1 / 1024, dtype=sdtype))


def test_forward_several_grads_and_empty_rows():
    B = 50
    grads = [rand(B, 0), rand(B, 5, seed=1), rand(B, 0, 3), rand(B, 700, seed=2), rand(B, 3, 2, 2, seed=3)]
    check_forward(grads, "mean")
    check_forward(grads, "none")
    check_forward([rand(B, 0)], "mean")  # every row empty: norms 0


def test_forward_more_grads_than_one_launch_and_one_finalize_pass():
    grads = [rand(5, 1 + k % 5, seed=k) for k in range(70)]  # 9 partial launches, 2 finalize passes
    SIMT.launches()
    check_forward(grads, "mean", warps=[64])
    assert SIMT.launches() == 9 + 2
    check_forward(grads[:11], "none", warps=[8, 10**6])


@pytest.mark.parametrize("dtype", list(RANGE_ENDS), ids=str)
def test_forward_at_the_ends_of_the_range(dtype):
    for v in RANGE_ENDS[dtype]:
        for shape in [(3, 4), (2, 3000), (600, 3)]:
            g = torch.full(shape, v, dtype=dtype)
            g[1] = rand(*shape[1:], dtype=dtype, seed=4)  # an ordinary row among them
            assert torch.isfinite(reference.grad_norms([g])).all()
            check_forward([g], "none", center=0.0)


def test_forward_propagates_nan_and_inf():
    g = rand(4, 3000, seed=8)
    g[1, 7], g[2, 3] = float("nan"), float("inf")
    for w in WARPS:
        _, n = forward([g], w, "none")
        assert torch.isnan(n[1]) and torch.isinf(n[2]) and torch.isfinite(n[[0, 3]]).all()


def test_forward_launches():
    SIMT.launches()
    forward([rand(1000, 4)], 64, "none")
    assert SIMT.launches() == 1  # folded, no reduction: one launch
    forward([rand(1000, 4)], 64, "mean")
    assert SIMT.launches() == 2  # folded + the finalize of the tasks' sums
    forward([rand(2, 5000)], 64, "none")
    assert SIMT.launches() == 2  # split: partial sums + finalize


# ---------------------------------------------------------------- backward
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(7, 2), (600, 3), (5, 16), (9, 100), (3, 5000), (2, 3, 33, 31)])
def test_backward(shape, dtype):
    g = rand(*shape, dtype=dtype, seed=sum(shape), scale=0.3)
    check_backward([g], "mean")
    check_backward([g], "none", power=1.5, one_sided=True)


def test_backward_many_grads_strided_dense_and_empty():
    B = 6
    grads = [rand(B, 3, 5 + k, seed=k) if k % 3 else rand(B, 3, 2 * (5 + k), seed=k)[..., ::2] for k in range(11)]
    grads.append(rand(B, 0))
    check_backward(grads, "mean")
    check_backward(grads[:8], "none")
    _, norms = forward(grads, 64)
    for k, launches in ((8, 1), (12, 2)):  # one launch per 8 gradients
        SIMT.launches()
        SIMT.penalty_backward(torch.ones(()), grads[:k], norms, None, 10.0, 1.0, 2.0, False, 1, 64)
        assert SIMT.launches() == launches


def test_backward_grad_out_forms_and_inv_scale():
    B = 300
    g = rand(B, 24, seed=9)
    check_backward([g], "none", grad_out=torch.ones(()).expand(B))
    check_backward([g], "none", grad_out=rand(2 * B, seed=10)[::2])
    check_backward([g], "none", grad_out=rand(B, dtype=torch.float64, seed=11))
    check_backward([g * 1024], "mean", inv_scale=torch.tensor(1 / 1024, dtype=torch.float16))


def test_backward_coefficients_at_the_ends_of_the_range():
    for v in COEF_RANGE_ENDS:
        check_backward([torch.full((4, 3), v)], "mean")
        check_backward([torch.full((4, 3), v)], "none", power=1.5)


# ------------------------------------------------------------- interpolate
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_interpolate_layouts(dtype):
    a, b = rand(5, 3, 9, 11, dtype=dtype, seed=1), rand(5, 3, 9, 11, dtype=dtype, seed=2)
    cl = torch.channels_last
    check_interpolate(a, b)
    check_interpolate(a, b.contiguous(memory_format=cl))  # contiguous real, channels_last fake
    check_interpolate(a.contiguous(memory_format=cl), b)
    check_interpolate(a.transpose(1, 2), b.transpose(1, 2))
    check_interpolate(rand(700, 2, dtype=dtype, seed=3), rand(700, 2, dtype=dtype, seed=4))
    check_interpolate(rand(2, 5000, dtype=dtype, seed=5), rand(2, 5000, dtype=dtype, seed=6), warps=8)


def test_interpolate_is_one_launch():
    SIMT.launches()
    check_interpolate(rand(100, 7), rand(100, 7))
    assert SIMT.launches() == 1
