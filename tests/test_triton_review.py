"""The Triton kernels after their review: tiles of several short rows, the
split of long rows and its finalize, the folded forward over several
tensors, the range rule (overflow and underflow), a configuration that is a
function of the shapes (no autotuning: the same bits in every process, no
host sync, graph-capturable), and code generation for a CUDA target.

The kernel tests run on CPU tensors through the Triton interpreter, which
must be on before triton is imported: tests/test_triton.py runs this file in
its interpreted session (TRITON_INTERPRET=1), with the matrix; the tests at
the bottom run one computation in two fresh processes to compare their bits.
"""

from __future__ import annotations

import re
import textwrap

import pytest
import torch

import fastgp
from fastgp import reference

from conftest import COEF_RANGE_ENDS, RANGE_ENDS, python_in_subprocess

pytest.importorskip("triton")
from fastgp.backends import triton as triton_backend  # noqa: E402
HAS_TRITON = triton_backend.load() is None
INTERPRETED = HAS_TRITON and triton_backend.INTERPRETED
ON_GPU = (HAS_TRITON and not INTERPRETED and torch.cuda.is_available()
          and triton_backend.unavailable_reason("cuda") is None)
DEVICE = "cuda" if ON_GPU else "cpu"  # where the kernel tests run: a GPU, or CPU tensors interpreted

pytestmark = pytest.mark.for_backends("triton")  # kept by the interpreted session (--backends=triton)

WGAN = dict(weight=10.0, center=1.0, power=2.0, one_sided=False)
TOL = {torch.float64: (1e-12, 1e-12), torch.float32: (1e-5, 1e-6), torch.float16: (1e-5, 1e-6),
       torch.bfloat16: (1e-5, 1e-6)}  # outputs in the accumulation dtype
OUT_TOL = {torch.float64: (1e-12, 1e-12), torch.float32: (1e-5, 1e-6), torch.float16: (1e-3, 1e-5),
           torch.bfloat16: (8e-3, 1e-5)}  # outputs in the data dtype


def randn(*shape, dtype=torch.float32, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype).to(DEVICE)


def check(grads, reduction="mean", inv_scale=None, **opts):
    """penalty_from_grads(backend="triton") vs the float64 reference: penalty, norms, d/d grads."""
    opts = {**WGAN, **opts}
    grads = [g.detach().requires_grad_(True) for g in grads]
    penalty, norms = fastgp.penalty_from_grads(tuple(grads), reduction=reduction, inv_scale=inv_scale,
                                               return_norms=True, backend="triton", **opts)
    ref64 = [g.detach().double().requires_grad_(True) for g in grads]
    ref_penalty, ref_norms = reference.penalty_from_grads(
        ref64, reduction=reduction, inv_scale=None if inv_scale is None else inv_scale.double(), **opts)
    dtype = grads[0].dtype
    rtol, atol = TOL[dtype]
    assert torch.isfinite(ref_norms).all() == torch.isfinite(norms).all()
    torch.testing.assert_close(norms.double(), ref_norms.detach(), rtol=rtol, atol=atol)
    big = max(1.0, float(ref_penalty.detach().abs().max()))
    torch.testing.assert_close(penalty.double(), ref_penalty.detach(), rtol=rtol, atol=atol * big)
    go = torch.ones_like(penalty) if reduction != "none" else randn(*penalty.shape, dtype=penalty.dtype, seed=9)
    d = torch.autograd.grad(penalty, grads, go)
    ref_d = torch.autograd.grad(ref_penalty, ref64, go.double())
    rtol, atol = OUT_TOL[dtype]
    for x, r in zip(d, ref_d):
        assert torch.isfinite(x).all() == torch.isfinite(r).all()
        scale = max(1.0, float(r.abs().max())) if r.numel() else 1.0
        torch.testing.assert_close(x.double(), r, rtol=rtol, atol=atol * scale)
    return penalty, norms


def check_interpolate(real, fake, seed=0):
    alpha = torch.rand(real.shape[0], generator=torch.Generator().manual_seed(seed),
                       dtype=reference.accumulation_dtype(real.dtype)).to(DEVICE)
    out = fastgp.interpolate(real, fake, alpha, backend="triton")
    ref = reference.interpolate(real.double(), fake.double(), alpha.double())
    assert out.stride() == torch.empty_like(real).stride()
    rtol, atol = OUT_TOL[real.dtype]
    torch.testing.assert_close(out.double(), ref, rtol=rtol, atol=atol)


kernels_run_here = pytest.mark.skipif(not (INTERPRETED or ON_GPU),
                                      reason="needs a GPU, or TRITON_INTERPRET=1 (the tests below run it so)")


# ------------------------------------ the kernels (interpreted, or on a GPU)
@kernels_run_here
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("row", [1, 2, 3, 5, 16, 17, 33, 64, 65, 200])
def test_tiles_of_short_rows(row, dtype):
    from fastgp.triton import host, kernels

    rows, block = host.tile_shape(row)
    assert (rows > 1) == (row <= kernels.TILE // 2) and block >= min(row, kernels.TILE)
    for B in (1, 7):
        g = randn(B, row, dtype=dtype, seed=row)
        for reduction in ("mean", "none"):
            check([g], reduction)
        check_interpolate(g, randn(B, row, dtype=dtype, seed=row + 1), seed=row)
    if rows >= 4:  # B = 300 > 128: many tiles of packed rows, and many tile sums in the finalize
        g = randn(300, row, dtype=dtype, seed=row)
        check([g], "mean")
        check_interpolate(g, randn(300, row, dtype=dtype, seed=row + 1), seed=row)


@kernels_run_here
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_split_rows_and_their_finalize(reduction):
    from fastgp.triton import host, kernels

    # a small batch of long rows: split, and more rows than a finalize step holds
    B, L = kernels.FINALIZE_ROWS + 3, 8 * kernels.TILE
    assert B < kernels.TARGET_PROGRAMS and host.forward_chunks(B, L)[1] > 1
    check([randn(B, L, seed=1)], reduction)
    check([randn(B, L, seed=2), randn(B, 3, seed=3), randn(B, 0)], reduction)  # split: one column per chunk
    check([randn(B, L, dtype=torch.float64, seed=4)], reduction, power=1.5, one_sided=True)


@kernels_run_here
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_folded_forward_over_several_tensors(reduction):
    B = 150  # whole rows everywhere: the last tensor adds the others' columns and finishes the rows
    grads = [randn(B, 5, seed=1), randn(B, 3, 4, seed=2), randn(B, 0), randn(B, 32, seed=3)[:, ::2]]
    check(grads, reduction)
    check(grads, reduction, inv_scale=torch.tensor(0.25, device=DEVICE))


@kernels_run_here
@pytest.mark.parametrize("dtype", list(RANGE_ENDS), ids=str)
def test_norms_at_the_ends_of_the_range(dtype):
    for v in RANGE_ENDS[dtype]:
        for shape in [(3, 4), (5, 8 * 64)]:
            g = torch.full(shape, v, dtype=dtype, device=DEVICE)
            g[1] = randn(*shape[1:], dtype=dtype, seed=5)  # an ordinary row among them
            norms = fastgp.penalty_from_grads(g, return_norms=True, backend="triton")[1]
            ref = reference.grad_norms([g.cpu()]).to(DEVICE)
            assert torch.isfinite(ref).all() and torch.isfinite(norms).all(), (v, norms)
            torch.testing.assert_close(norms, ref, rtol=TOL[dtype][0] * 2, atol=0)


@kernels_run_here
def test_backward_coefficients_at_the_ends_of_the_range():
    for v in COEF_RANGE_ENDS:
        check([torch.full((4, 3), v, device=DEVICE)], "mean")
        check([torch.full((4, 3), v, device=DEVICE)], "none", power=1.5)


@kernels_run_here
def test_nan_and_inf_propagate():
    g = randn(4, 100, seed=6)
    g[1, 7], g[2, 3] = float("nan"), float("inf")
    norms = fastgp.penalty_from_grads(g, return_norms=True, backend="triton", reduction="none")[1]
    assert torch.isnan(norms[1]) and torch.isinf(norms[2]) and torch.isfinite(norms[[0, 3]]).all()


@kernels_run_here
def test_no_autotuning_anywhere():
    import triton

    from fastgp.triton import kernels

    for name in ("interpolate_kernel", "sumsq_kernel", "penalty_finalize_kernel", "penalty_backward_kernel"):
        assert not isinstance(getattr(kernels, name), triton.runtime.Autotuner), name


# ---------------------------------------------- in an ordinary session


_DIGEST = """
    import hashlib, torch, fastgp
    h = hashlib.sha256()
    for shape, dtype in [((300, 5), torch.float32), ((3, 40 * 64), torch.float32), ((2, 3, 9, 9), torch.bfloat16),
                         ((50, 3), torch.float64)]:
        g = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)
        g = g.to(DEVICE).requires_grad_(True)
        p, n = fastgp.penalty_from_grads(g, weight=10.0, return_norms=True, backend="triton")
        (d,) = torch.autograd.grad(p, g)
        x = fastgp.interpolate(g.detach(), g.detach().flip(0), torch.linspace(0, 1, shape[0], device=DEVICE,
                               dtype=n.dtype), backend="triton")
        for t in (p, n, d, x):
            h.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    print("DIGEST", h.hexdigest())
"""


@pytest.mark.slow
@pytest.mark.skipif(not HAS_TRITON or INTERPRETED, reason="needs triton; this session is already interpreted")
def test_same_bits_in_two_processes():
    """The configuration is a function of the shapes: two fresh processes agree
    bit for bit (on a GPU when there is one and the Triton kernels run on it,
    else under the interpreter)."""
    on_gpu = torch.cuda.is_available() and triton_backend.unavailable_reason("cuda") is None
    code = f"DEVICE = {'cuda' if on_gpu else 'cpu'!r}\n" + textwrap.dedent(_DIGEST)
    digests = []
    for _ in range(2):
        proc = python_in_subprocess(code, interpret=not on_gpu)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        digests.append(re.search(r"DIGEST (\w+)", proc.stdout).group(1))
    assert digests[0] == digests[1]


def _signature(fn, dtype: str, constexprs: dict) -> dict:
    """Triton signature of a kernel for a data dtype, from its argument names."""
    acc = "fp64" if dtype == "fp64" else "fp32"
    data_ptrs = {"real_ptr", "fake_ptr", "g_ptr"} | ({"out_ptr"} if fn.__name__ in (
        "interpolate_kernel", "penalty_backward_kernel") else set())
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name in ("partial_ptr", "tile_values_ptr"):
            sig[name] = "*fp64"
        elif name == "scale_ptr":
            sig[name] = "*fp32"
        elif name.endswith("_ptr"):
            sig[name] = f"*{dtype}" if name in data_ptrs else f"*{acc}"
        elif name.endswith(("_hi", "_lo")):
            sig[name] = "fp32"
        else:
            sig[name] = "i64"
    return sig


@pytest.mark.slow
@pytest.mark.skipif(not HAS_TRITON or INTERPRETED, reason="needs triton with the interpreter off")
def test_kernels_compile_for_a_cuda_target():
    """Every kernel, in the tile shapes the host picks, lowers to a cubin for
    sm_90 (the compiler needs no GPU); float64 kernels keep float64 math."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.compiler import compile as triton_compile

    from fastgp.triton import host, kernels

    flags = {"HAS_SCALE": True, "ONE_SIDED": True, "REDUCTION": 1}
    builds = [(kernels.penalty_finalize_kernel, dt, {**flags, "FROM_TILES": tiles, "BLOCK_B": kernels.FINALIZE_ROWS})
              for dt in ("fp32", "fp64") for tiles in (True, False)]
    for dt in ("fp32", "fp64", "bf16"):
        for row_len in (2, 300, 10**6):
            rows, block = host.tile_shape(row_len)
            tile = {"ROWS": rows, "BLOCK": block}
            builds += [(kernels.interpolate_kernel, dt, tile), (kernels.penalty_backward_kernel, dt, {**flags, **tile})]
            builds += [(kernels.sumsq_kernel, dt, {**flags, **tile, "FOLD": fold}) for fold in (True, False)]
    for fn, dt, constexprs in builds:
        compiled = triton_compile(ASTSource(fn=fn, signature=_signature(fn, dt, constexprs), constexprs=constexprs),
                                  target=GPUTarget("cuda", 90, 32), options={"num_warps": kernels.NUM_WARPS})
        assert compiled.asm.get("cubin"), (fn.__name__, dt, constexprs)
        if dt == "fp64":  # float32 approximations (lg2/ex2.approx.f32) would cap float64 accuracy
            assert not re.search(r"\.approx(\.ftz)?\.f32", compiled.asm["ptx"]), (fn.__name__, dt)


def test_configuration_is_a_function_of_the_shape():
    """No device, no timing: the same shapes give the same tiles and chunks, and
    the tiles cover rows exactly."""
    from fastgp.triton import host, kernels

    for row_len in [0, 1, 2, 3, 64, 65, 4096, 4097, 10**7]:
        rows, block = host.tile_shape(row_len)
        if row_len > kernels.TILE:
            assert (rows, block) == (1, kernels.TILE)
        else:  # whole rows, as many as fill a tile
            assert block >= max(row_len, 1) and block < 2 * max(row_len, 1) and rows * block == kernels.TILE
        for batch in [1, 3, 1000, 10**6]:
            chunk, chunks = host.forward_chunks(batch, row_len)
            assert host.forward_chunks(batch, row_len) == (chunk, chunks)
            assert chunks == 1 or (chunk % block == 0 and chunk * chunks >= row_len > chunk * (chunks - 1))
            assert chunks == 1 or batch < kernels.TARGET_PROGRAMS
