"""What only CUDA has: the build's CUDA kernels registered, CUDA graph capture,
no host synchronization on the penalty path, kernel launch counts, and sums
that do not depend on the load path. The CUDA kernels' correctness is the
matrix's (test_penalty.py, test_interpolate.py, test_opcheck.py, ... on the
"cuda" device). The first test runs everywhere; the others need a GPU."""

from __future__ import annotations

import copy

import pytest
import torch

import fastgp
from fastgp._ext import state

from conftest import cuda_only, cuda_work, make_alpha, make_tensor

OPS = ("interpolate", "penalty_forward", "penalty_backward")


def test_cuda_kernels_registered_when_built_with_cuda():
    """Skips on a machine without a GPU whose build has no CUDA; where a GPU is
    visible, kernels that are not there fail (a skip would prove nothing)."""
    build = state.build or {}
    gpu = torch.cuda.is_available()
    if not state.loaded:
        if gpu:
            pytest.fail(f"a CUDA device is present but the C++ extension is not loaded: {state.reason}")
        pytest.skip(f"the C++ extension is not loaded: {state.reason}")
    if not build.get("with_cuda"):
        if gpu:
            pytest.fail(f"a CUDA device is present but the extension was built without CUDA (build info: {build})")
        pytest.skip(f"the extension was built without CUDA (build info: {build})")
    for op in OPS:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"fastgp::{op}", "CUDA"), op
    assert build.get("cuda_archs"), "a CUDA build must record its archs"
    assert str(build.get("torch_cuda_version")).split(".")[0] == str(torch.version.cuda).split(".")[0]


def test_missing_cuda_kernels_fail_on_a_gpu_machine(monkeypatch):
    """cuda_only turns the extension's missing CUDA kernels into a failure where a GPU is visible."""
    from fastgp import backends

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(backends, "unavailable_reason",
                        lambda name, device=None: "built without CUDA" if name == "cpp" else None)
    def needs_the_kernels():  # a named function: pytest marks take a lambda for a mark argument
        pass

    test = cuda_only("cpp")(needs_the_kernels)
    with pytest.raises(pytest.fail.Exception, match="CUDA kernels are not usable: built without CUDA"):
        test()
    monkeypatch.setattr(backends, "unavailable_reason",
                        lambda name, device=None: "triton is not installed" if name == "triton" else None)
    marks = [m.name for m in getattr(cuda_only("triton")(needs_the_kernels), "pytestmark", [])]
    assert "skipif" in marks  # another backend missing stays a skip


@cuda_only("cpp")
def test_auto_backend_uses_the_cuda_kernels():
    assert fastgp.available_backends("cuda")[0] == "cpp"


@cuda_only("cpp")
def test_sums_do_not_depend_on_the_load_path():
    """Vectorized, scalar and index-computing paths visit a row's elements in the same order."""
    shape = (3, 3, 40, 64)
    norms = [torch.ops.fastgp.penalty_forward([make_tensor(shape, torch.float32, layout, device="cuda")], None, 1.0,
                                              1.0, 2.0, False, 1)[1]
             for layout in ("contiguous", "misaligned", "padded", "batch_strided")]
    for n in norms[1:]:
        assert torch.equal(n, norms[0])


# ---------------------------------------------------------- the GP path
def _critic(channels=3, size=16):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(channels, 8, 3, padding=1), torch.nn.LeakyReLU(0.2),
        torch.nn.Conv2d(8, 8, 3, stride=2, padding=1), torch.nn.GroupNorm(2, 8), torch.nn.SiLU(),
        torch.nn.Flatten(), torch.nn.Linear(8 * (size // 2) ** 2, 1)).cuda()


def _gp_step(critic, real, fake, alpha, inv_scale):
    """interpolate -> critic -> input gradient -> penalty -> critic parameter gradients."""
    x_hat = torch.ops.fastgp.interpolate(real, fake, alpha).requires_grad_(True)
    out = critic(x_hat)
    (g,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    pen, _ = torch.ops.fastgp.penalty_forward([g], inv_scale, 10.0, 1.0, 2.0, False, 1)
    pen.backward()
    return pen


@cuda_only("cpp")
def test_cuda_graph_capture_matches_eager():
    critic = _critic()
    twin = copy.deepcopy(critic)
    real, fake = make_tensor((8, 3, 16, 16), seed=1, device="cuda"), make_tensor((8, 3, 16, 16), seed=2, device="cuda")
    alpha = make_alpha(8, device="cuda")
    inv = torch.tensor([1.0], device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up outside the capture, as PyTorch's recipe does
        for _ in range(2):
            critic.zero_grad(set_to_none=True)
            _gp_step(critic, real, fake, alpha, inv)
    torch.cuda.current_stream().wait_stream(side)
    critic.zero_grad(set_to_none=True)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_pen = _gp_step(critic, real, fake, alpha, inv)
    # New inputs copied into the captured buffers, as a training loop would.
    real.copy_(make_tensor((8, 3, 16, 16), seed=3, device="cuda"))
    alpha.copy_(make_alpha(8, device="cuda", seed=1))
    inv.fill_(0.5)
    graph.replay()
    torch.cuda.synchronize()
    eager = _gp_step(twin, real, fake, alpha, inv)
    torch.testing.assert_close(static_pen, eager, rtol=1e-5, atol=1e-6)
    for p, q in zip(critic.parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6)


@cuda_only("cpp")
def test_no_host_sync_on_the_gp_path():
    critic = _critic()
    real, fake = make_tensor((8, 3, 16, 16), seed=1, device="cuda"), make_tensor((8, 3, 16, 16), seed=2, device="cuda")
    scaler = torch.amp.GradScaler("cuda", init_scale=256.0)
    inv = torch.tensor(0.5, device="cuda")  # made here: a host-to-device copy synchronizes

    def step():
        pen = fastgp.gradient_penalty(critic, real, fake, weight=10.0, scaler=scaler, backend="cpp")
        pen.backward()
        x = fastgp.interpolate(real, fake, backend="cpp")
        g = torch.randn_like(x).requires_grad_(True)
        fastgp.penalty_from_grads(g, inv_scale=inv, reduction="none", backend="cpp").sum().backward()

    step()  # warm-up: lazy initializations may synchronize once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


def _fastgp_kernels(fn):
    """(everything the GPU ran during fn, the fastgp kernels among it)."""
    kernels = cuda_work(fn)
    return kernels, [k for k in kernels if "fastgp" in k]


@cuda_only("cpp")
@pytest.mark.parametrize("shape", [(256, 2), (16, 3, 256, 256), (4, 3, 1024, 1024)], ids=str)
def test_at_most_four_launches_per_gp_call(shape):
    real = make_tensor(shape, torch.bfloat16, seed=1, device="cuda")
    fake = make_tensor(shape, torch.bfloat16, seed=2, device="cuda")
    alpha = make_alpha(shape[0], device="cuda")
    g = make_tensor(shape, torch.bfloat16, seed=3, device="cuda")
    go = torch.ones((), device="cuda")

    def ops_only():
        torch.ops.fastgp.interpolate(real, fake, alpha)
        _, norms = torch.ops.fastgp.penalty_forward([g], None, 10.0, 1.0, 2.0, False, 1)
        torch.ops.fastgp.penalty_backward(go, [g], norms, None, 10.0, 1.0, 2.0, False, 1)

    kernels, ours = _fastgp_kernels(ops_only)
    assert len(kernels) == 4 and len(ours) == 4, kernels
    assert sum("interpolate" in k for k in ours) == 1
    assert sum("partials" in k for k in ours) == 1 and sum("finalize" in k for k in ours) == 1
    assert sum("backward" in k for k in ours) == 1


@cuda_only("cpp")
def test_gradient_penalty_launches_four_fastgp_kernels():
    critic = _critic()
    real, fake = make_tensor((8, 3, 16, 16), seed=1, device="cuda"), make_tensor((8, 3, 16, 16), seed=2, device="cuda")
    _, ours = _fastgp_kernels(lambda: fastgp.gradient_penalty(critic, real, fake, backend="cpp").backward())
    assert len(ours) == 4, ours
