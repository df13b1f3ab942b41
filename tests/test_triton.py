"""The Triton backend from the outside: the interpreted kernel tests (run in a
subprocess, since TRITON_INTERPRET=1 must precede the import of triton),
availability and its error messages, the CPU fallback kernels of the ops,
and on CUDA: opcheck, torch.compile and agreement with the C++/CUDA extension.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch

import fastgp
from fastgp import backends, reference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
triton_backend = pytest.importorskip("fastgp.triton")
HAS_TRITON = triton_backend.load() is None
cuda = pytest.mark.skipif(not (torch.cuda.is_available() and triton_backend.unavailable_reason("cuda") is None
                               and not triton_backend.INTERPRETED), reason="needs a CUDA device and triton")


def _python(code: str, interpret: bool, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
def test_interpreted_kernels_match_reference():
    """tests/test_triton_kernels.py on CPU tensors through the Triton interpreter."""
    if triton_backend.INTERPRETED:
        pytest.skip("this session is interpreted: tests/test_triton_kernels.py runs here directly")
    proc = _python("""
        import sys, pytest
        sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "tests/test_triton_kernels.py"]))
    """, interpret=True, timeout=900)
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, tail
    assert " passed" in tail and " skipped" not in tail.splitlines()[-1], tail


@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
def test_triton_on_cpu_without_interpreter_says_why():
    proc = _python("""
        import torch, fastgp
        assert "triton" not in fastgp.available_backends("cpu"), fastgp.available_backends("cpu")
        critic = torch.nn.Linear(3, 1)
        try:
            fastgp.gradient_penalty(critic, torch.randn(4, 3), torch.randn(4, 3), backend="triton")
        except RuntimeError as e:
            print("ERROR:", e)
        else:
            raise SystemExit("no error")
    """, interpret=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    message = proc.stdout
    assert "backend 'triton' is unavailable on cpu" in message and "TRITON_INTERPRET=1" in message, message


def test_import_without_triton():
    proc = _python("""
        import sys
        sys.modules["triton"] = None  # as if triton were not installed
        import torch, fastgp
        print("backends:", fastgp.available_backends("cpu"))
        print("info:", fastgp.info()["backends"]["cpu"]["triton"])
        try:
            fastgp.penalty_from_grads(torch.randn(2, 3), backend="triton")
        except RuntimeError as e:
            print("ERROR:", e)
    """, interpret=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "'triton'" not in out.splitlines()[0], out
    assert "ERROR: fastgp backend 'triton' is unavailable on cpu: triton is not installed" in out, out
    assert "pip install triton" in out, out


def test_unavailable_reason_names_the_device():
    why = triton_backend.unavailable_reason("mps")
    assert why is not None and "'mps'" in why
    if not torch.cuda.is_available() and not triton_backend.INTERPRETED:
        assert "no CUDA device" in backends.unavailable_reason("triton", "cuda")


# ------------------------------ the ops' CPU kernels (interpreter off)
needs_cpu_fallback = pytest.mark.skipif(not HAS_TRITON or triton_backend.INTERPRETED,
                                        reason="the reference CPU kernels are registered only without the interpreter")


@needs_cpu_fallback
def test_cpu_fallback_kernels_are_the_reference():
    g = [torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True), torch.randn(4, 7, dtype=torch.float64,
                                                                                    requires_grad=True)]
    s = torch.tensor(0.5)
    penalty, norms = torch.ops.fastgp.triton_penalty_forward(g, s, 10.0, 1.0, 1.5, True, 0)
    ref_penalty, ref_norms = reference.penalty_from_grads(g, weight=10.0, power=1.5, one_sided=True,
                                                          reduction="none", inv_scale=s)
    torch.testing.assert_close(penalty, ref_penalty)
    torch.testing.assert_close(norms, ref_norms)
    go = torch.randn(4, dtype=torch.float64)
    torch.testing.assert_close(torch.autograd.grad(penalty, g, go), torch.autograd.grad(ref_penalty, g, go))
    r, f, a = torch.randn(3, 4), torch.randn(3, 4), torch.rand(3)
    torch.testing.assert_close(torch.ops.fastgp.triton_interpolate(r, f, a), reference.interpolate(r, f, a))


@needs_cpu_fallback
def test_opcheck_on_cpu_without_compilation():
    # test_aot_dispatch_dynamic needs a GPU: torch analyses the kernels with the device's Triton backend.
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    for rg in (False, True):
        g = [torch.randn(3, 5, requires_grad=rg), torch.randn(3, 2, 2, requires_grad=rg)]
        torch.library.opcheck(torch.ops.fastgp.triton_penalty_forward.default, (g, None, 10.0, 1.0, 2.0, False, 1),
                              test_utils=utils)
        torch.library.opcheck(torch.ops.fastgp.triton_penalty_forward.default,
                              (g, torch.tensor(0.25), 1.0, 0.0, 2.0, False, 0), test_utils=utils)
        r, f = torch.randn(3, 4, requires_grad=rg), torch.randn(3, 4, requires_grad=rg)
        torch.library.opcheck(torch.ops.fastgp.triton_interpolate.default, (r, f, torch.rand(3)), test_utils=utils)


# -------------------------------- GPU code generation, without a GPU
def _signature(kernel, dtype: str, constexprs: dict) -> dict:
    """Triton signature of a kernel for a data dtype, from its argument names."""
    fn = kernel.fn if hasattr(kernel, "configs") else kernel  # unwrap the autotuner
    acc = "fp64" if dtype == "fp64" else "fp32"
    acc_ptrs = {"alpha_ptr", "partial_ptr", "go_ptr", "norms_ptr"}
    if fn.__name__ == "penalty_finalize_kernel":
        acc_ptrs.add("out_ptr")
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name == "scale_ptr":
            sig[name] = "*fp32"
        elif name.endswith("_ptr"):
            sig[name] = f"*{acc}" if name in acc_ptrs else f"*{dtype}"
        elif name.endswith(("_hi", "_lo")):
            sig[name] = "fp32"
        else:
            sig[name] = "i64"
    return sig


@pytest.mark.slow
@pytest.mark.skipif(not HAS_TRITON or triton_backend.INTERPRETED, reason="needs triton with the interpreter off")
def test_kernels_compile_for_a_cuda_target():
    """Lower every kernel to a cubin for sm_90 (the compiler needs no GPU), and check
    that float64 kernels keep float64 math (no float32 approximations)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile as triton_compile

    from fastgp.triton import kernels

    block = {"BLOCK": kernels.MAX_BLOCK}
    flags = {"HAS_SCALE": True, "ONE_SIDED": True, "REDUCTION": 1}
    builds = [(kernels.penalty_finalize_kernel, dt, {**flags, "BLOCK_B": kernels.FINALIZE_BLOCK_B,
                                                     "BLOCK_C": kernels.FINALIZE_BLOCK_C}) for dt in ("fp32", "fp64")]
    for dt in ("fp32", "fp64", "bf16"):
        builds += [(kernels.interpolate_kernel, dt, block), (kernels.sumsq_partial_kernel, dt, block),
                   (kernels.penalty_backward_kernel, dt, {**flags, **block})]
    for kernel, dt, constexprs in builds:
        fn = kernel.fn if hasattr(kernel, "configs") else kernel
        compiled = triton_compile(ASTSource(fn=fn, signature=_signature(kernel, dt, constexprs), constexprs=constexprs),
                                  target=GPUTarget("cuda", 90, 32))
        assert compiled.asm.get("cubin"), (fn.__name__, dt)
        if dt == "fp64":  # float32 approximations (lg2/ex2.approx.f32) would cap float64 accuracy
            assert not re.search(r"\.approx(\.ftz)?\.f32", compiled.asm["ptx"]), (fn.__name__, dt)


# ----------------------------------------------------------------- CUDA
def _cuda_grads(rg=True, dtype=torch.float32):
    return [torch.randn(4, 3, 8, 8, device="cuda", dtype=dtype, requires_grad=rg),
            torch.randn(4, 10, device="cuda", dtype=dtype, requires_grad=rg)]


@cuda
@pytest.mark.gpu
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck_cuda(requires_grad):
    g = _cuda_grads(requires_grad)
    s = torch.tensor(0.5, device="cuda")
    for reduction in (0, 1, 2):
        torch.library.opcheck(torch.ops.fastgp.triton_penalty_forward.default,
                              (g, s, 10.0, 1.0, 2.0, False, reduction))
    torch.library.opcheck(torch.ops.fastgp.triton_penalty_forward.default, (g, None, 0.5, 0.0, 2.0, False, 1))
    n = torch.rand(4, device="cuda")
    torch.library.opcheck(torch.ops.fastgp.triton_penalty_backward.default,
                          (torch.randn(4, device="cuda"), [x.detach() for x in g], n, s, 10.0, 1.0, 2.0, False, 0))
    r = torch.randn(4, 3, 8, 8, device="cuda", requires_grad=requires_grad)
    f = torch.randn(4, 3, 8, 8, device="cuda", requires_grad=requires_grad)
    torch.library.opcheck(torch.ops.fastgp.triton_interpolate.default, (r, f, torch.rand(4, device="cuda")))


@cuda
@pytest.mark.gpu
def test_torch_compile_fullgraph_cuda():
    def step(grads, real, fake, alpha):
        x = torch.ops.fastgp.triton_interpolate(real, fake, alpha)
        penalty, _ = torch.ops.fastgp.triton_penalty_forward(list(grads), None, 10.0, 1.0, 2.0, False, 1)
        return penalty + x.sum()

    compiled = torch.compile(step, fullgraph=True)
    real, fake, alpha = torch.randn(4, 3, 8, 8, device="cuda"), torch.randn(4, 3, 8, 8, device="cuda"), \
        torch.rand(4, device="cuda")
    g_eager = _cuda_grads()
    g_comp = [x.detach().clone().requires_grad_(True) for x in g_eager]
    out_e, out_c = step(tuple(g_eager), real, fake, alpha), compiled(tuple(g_comp), real, fake, alpha)
    torch.testing.assert_close(out_c, out_e)
    torch.testing.assert_close(torch.autograd.grad(out_c, g_comp), torch.autograd.grad(out_e, g_eager))


@cuda
@pytest.mark.gpu
@pytest.mark.skipif(backends.unavailable_reason("cpp", "cuda") is not None,
                    reason="the C++ extension has no CUDA kernels here")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str)
def test_agrees_with_cuda_extension(dtype):
    for shape in [(1, 300_001), (64, 3, 32, 32), (7, 5)]:
        g = torch.randn(*shape, device="cuda", dtype=dtype, requires_grad=True)
        p_t, n_t = fastgp.penalty_from_grads(g, weight=10.0, return_norms=True, backend="triton")
        p_c, n_c = fastgp.penalty_from_grads(g, weight=10.0, return_norms=True, backend="cpp")
        tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(p_t, p_c, **tol)
        torch.testing.assert_close(n_t, n_c, **tol)
        d_t, d_c = torch.autograd.grad(p_t, g)[0], torch.autograd.grad(p_c, g)[0]
        torch.testing.assert_close(d_t, d_c, **({} if dtype in (torch.float16, torch.bfloat16) else tol))
        real, fake = torch.randn_like(g), torch.randn_like(g)
        alpha = torch.rand(shape[0], device="cuda", dtype=reference.accumulation_dtype(dtype))
        torch.testing.assert_close(fastgp.interpolate(real, fake, alpha, backend="triton"),
                                   fastgp.interpolate(real, fake, alpha, backend="cpp"))
