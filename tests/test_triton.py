"""The Triton backend from the outside: the test matrix on CPU tensors through
the Triton interpreter (run in a fresh interpreter, since TRITON_INTERPRET=1
must precede the import of triton), availability and its error messages, the
ops' CPU kernels when the interpreter is off, code generation for a GPU
without one, and on CUDA agreement with the C++/CUDA extension.
"""

from __future__ import annotations


import pytest
import torch

import fastgp
from fastgp import backends, reference
from fastgp.backends import triton as triton_backend

from conftest import assert_close, cuda_only, make_tensor, python_in_subprocess, row_len

HAS_TRITON = triton_backend._installed() and triton_backend.load() is None
INTERPRETED_FILES = ["tests/test_interpolate.py", "tests/test_penalty.py", "tests/test_opcheck.py",
                     "tests/test_end_to_end.py", "tests/test_semantics.py", "tests/test_triton_kernels.py",
                     "tests/test_triton_review.py"]




@pytest.mark.slow
@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
def test_interpreted_matrix():
    """The op-level matrix for the Triton kernels on CPU tensors through the
    Triton interpreter (tests/conftest.py's --backends=triton), less the heavy
    cases; the critic-level tests exercise the same ops through the same API."""
    if triton_backend.INTERPRETED:
        pytest.skip("this session is interpreted: the matrix runs the Triton backend here directly")
    proc = python_in_subprocess(f"""
        import sys, pytest
        sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "--backends=triton", "-m", "not heavy",
                              *{INTERPRETED_FILES!r}]))
    """, interpret=True, timeout=2400)
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, tail
    summary = tail.strip().splitlines()[-1]
    assert " passed" in summary and " failed" not in summary and " error" not in summary, tail


@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
def test_triton_on_cpu_without_interpreter_says_why():
    proc = python_in_subprocess("""
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
    proc = python_in_subprocess("""
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
    why = triton_backend.unavailable_reason(torch.device("mps"))
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


# GPU code generation without a GPU: tests/test_triton_review.py::test_kernels_compile_for_a_cuda_target


# ----------------------------------------------------------------- CUDA
@cuda_only("triton", "cpp")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [(1, 300_001), (64, 3, 32, 32), (7, 5)], ids=str)
def test_agrees_with_cuda_extension(dtype, shape):
    """Two fused implementations of the same arithmetic: within twice the
    tolerance each has against the float64 reference (sqrt(4 n) = 2 sqrt(n))."""
    g = make_tensor(shape, dtype, device="cuda").requires_grad_(True)
    p_t, n_t = fastgp.penalty_from_grads(g, weight=10.0, return_norms=True, backend="triton")
    p_c, n_c = fastgp.penalty_from_grads(g, weight=10.0, return_norms=True, backend="cpp")
    n = row_len(g)
    top = float(n_c.max()) + 1
    assert_close(n_t, n_c, dtype, row_len=4 * n, power=1.0, scale=top)
    assert_close(p_t, p_c, dtype, row_len=4 * n, batch=4 * shape[0], scale=10.0 * top ** 2)
    d_t, d_c = torch.autograd.grad(p_t, g)[0], torch.autograd.grad(p_c, g)[0]
    assert_close(d_t, d_c, dtype, row_len=4 * n, batch=4 * shape[0], stored=dtype)
    real, fake = torch.randn_like(g), torch.randn_like(g)
    alpha = torch.rand(shape[0], device="cuda", dtype=reference.accumulation_dtype(dtype))
    assert_close(fastgp.interpolate(real, fake, alpha, backend="triton"),
                 fastgp.interpolate(real, fake, alpha, backend="cpp"), dtype, stored=dtype, power=4.0)
