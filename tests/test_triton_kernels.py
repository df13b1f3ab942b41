"""The Triton kernels against the reference, through the public API with
backend="triton": on CUDA when there is a GPU, and on CPU tensors through the
Triton interpreter, which must be switched on (TRITON_INTERPRET=1) before
triton is imported. tests/test_triton.py runs this file in such a subprocess;
in an ordinary session without a GPU every test here skips.
"""

from __future__ import annotations

import pytest
import torch

import fastgp
from fastgp import reference

triton_backend = pytest.importorskip("fastgp.triton")
if triton_backend.unavailable_reason("cpu") is None:
    DEVICES = ["cpu"]  # interpreted
elif triton_backend.unavailable_reason("cuda") is None:
    DEVICES = ["cuda"]
else:
    pytest.skip("needs a GPU, or TRITON_INTERPRET=1 before import (tests/test_triton.py runs this file so)",
                allow_module_level=True)

from fastgp.triton import host, kernels  # noqa: E402  (triton is importable here)

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# (rtol, atol) against a float64 reference: "acc" for outputs in the
# accumulation dtype (norms, penalty), "out" for outputs in the data dtype.
TOL = {
    torch.float64: {"acc": (1e-12, 1e-12), "out": (1e-12, 1e-12)},
    torch.float32: {"acc": (1e-5, 1e-6), "out": (1e-5, 1e-6)},
    torch.float16: {"acc": (1e-5, 1e-6), "out": (1e-3, 1e-5)},
    torch.bfloat16: {"acc": (1e-5, 1e-6), "out": (8e-3, 1e-5)},
}

WGAN_GP = dict(weight=10.0, center=1.0, power=2.0, one_sided=False)
OPTIONS = {
    "wgan_gp": WGAN_GP,
    "r1": dict(weight=0.1, center=0.0, power=2.0, one_sided=False),  # 0.1 is inexact in float32
    "one_sided_p1.5": dict(weight=2.5, center=1.0, power=1.5, one_sided=True),
    "p1_center0.5": dict(weight=1.0 / 3.0, center=0.5, power=1.0, one_sided=False),
    "center0_p3": dict(weight=1.0, center=0.0, power=3.0, one_sided=False),
}


def _randn(*shape, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)


# Each case builds the list of gradient tensors (any layout) for a dtype and device.
def _zero_rows(dtype, device):
    g = _randn(5, 37, dtype=dtype, device=device, seed=5)
    g[1] = 0
    g[3] = 0
    return [g]


def _channels_last(dtype, device):
    return [_randn(3, 4, 5, 6, dtype=dtype, device=device, seed=8).to(memory_format=torch.channels_last)]


GRAD_CASES = {
    "B1_long_row": lambda dt, dev: [_randn(1, 1000, dtype=dt, device=dev, seed=1)],
    "odd_3d": lambda dt, dev: [_randn(3, 5, 7, dtype=dt, device=dev, seed=2)],
    "rows_over_blocks": lambda dt, dev: [_randn(3, 300, dtype=dt, device=dev, seed=3)],
    "wide_batch": lambda dt, dev: [_randn(20, 33, dtype=dt, device=dev, seed=4)],
    "one_per_row": lambda dt, dev: [_randn(6, dtype=dt, device=dev, seed=6)],
    "several": lambda dt, dev: [_randn(4, 3, 5, dtype=dt, device=dev, seed=7),
                                _randn(4, 200, dtype=dt, device=dev, seed=17),
                                _randn(4, dtype=dt, device=dev, seed=27)],
    "zero_rows": _zero_rows,
    "zero_length_rows": lambda dt, dev: [_randn(3, 0, dtype=dt, device=dev, seed=0),
                                         _randn(3, 4, dtype=dt, device=dev, seed=9)],
    "all_zero_length": lambda dt, dev: [_randn(3, 0, 2, dtype=dt, device=dev, seed=0)],
    "transposed": lambda dt, dev: [_randn(50, 4, dtype=dt, device=dev, seed=10).t()],
    "batch_slice": lambda dt, dev: [_randn(8, 3, 10, dtype=dt, device=dev, seed=11)[::2]],
    "strided_inner": lambda dt, dev: [_randn(4, 60, dtype=dt, device=dev, seed=12)[:, ::3]],
    "channels_last": _channels_last,
    "channels_last_3d": lambda dt, dev: [_randn(2, 3, 2, 3, 4, dtype=dt, device=dev, seed=18).to(
        memory_format=torch.channels_last_3d)],
    "permuted_copy": lambda dt, dev: [_randn(4, 5, 6, dtype=dt, device=dev, seed=13).transpose(1, 2)],
    "expanded": lambda dt, dev: [_randn(1, 40, dtype=dt, device=dev, seed=14).expand(3, 40)],
}
if DEVICES == ["cuda"]:  # long enough to split rows and to reach every autotune config on a GPU
    GRAD_CASES["gpu_B1_very_long"] = lambda dt, dev: [_randn(1, 300_001, dtype=dt, device=dev, seed=15)]
    GRAD_CASES["gpu_B2_images"] = lambda dt, dev: [_randn(2, 3, 128, 129, dtype=dt, device=dev, seed=16)]


def _reference(grads, inv_scale, grad_out, reduction, opts):
    """float64 reference penalty, norms and d penalty / d grads (contracted with grad_out)."""
    gs = [g.detach().double().requires_grad_(True) for g in grads]
    s = None if inv_scale is None else inv_scale.double()
    penalty, norms = reference.penalty_from_grads(gs, reduction=reduction, inv_scale=s, **opts)
    d = torch.autograd.grad(penalty, gs, grad_out.double(), allow_unused=True)
    return penalty, norms, [torch.zeros_like(g) if x is None else x for g, x in zip(gs, d)]


def _check_penalty(grads, dtype, device, reduction="mean", inv_scale=None, opts=WGAN_GP):
    grads = [g.requires_grad_(True) for g in grads]
    penalty, norms = fastgp.penalty_from_grads(tuple(grads), reduction=reduction, inv_scale=inv_scale,
                                               return_norms=True, backend="triton", **opts)
    acc = reference.accumulation_dtype(dtype)
    batch = grads[0].shape[0]
    assert penalty.dtype == acc and norms.dtype == acc and norms.shape == (batch,)
    assert penalty.shape == ((batch,) if reduction == "none" else ())
    grad_out = _randn(*penalty.shape, dtype=acc, device=device, seed=99)
    d_grads = torch.autograd.grad(penalty, grads, grad_out)
    ref_penalty, ref_norms, ref_d = _reference(grads, inv_scale, grad_out, reduction, opts)
    rtol, atol = TOL[dtype]["acc"]
    torch.testing.assert_close(norms.double(), ref_norms, rtol=rtol, atol=atol)
    torch.testing.assert_close(penalty.double(), ref_penalty, rtol=rtol, atol=atol)
    rtol, atol = TOL[dtype]["out"]
    for d, r, g in zip(d_grads, ref_d, grads):
        assert d.dtype == dtype and d.shape == g.shape
        assert torch.isfinite(d).all()
        scale = max(1.0, r.abs().amax().item()) if r.numel() else 1.0
        torch.testing.assert_close(d.double(), r, rtol=rtol, atol=atol * scale)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(GRAD_CASES))
def test_penalty_layouts_and_shapes(case, dtype, device):
    _check_penalty(GRAD_CASES[case](dtype, device), dtype, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("scaled", [False, True], ids=["unscaled", "inv_scale"])
@pytest.mark.parametrize("reduction", reference.REDUCTIONS)
@pytest.mark.parametrize("option", list(OPTIONS))
def test_penalty_options(option, reduction, scaled, dtype, device):
    # several tensors, one sample with a zero gradient, rows split over programs
    grads = [_randn(3, 130, dtype=dtype, device=device, seed=20), _randn(3, 2, 3, dtype=dtype, device=device, seed=21)]
    for g in grads:
        g[1] = 0
    inv_scale = None
    if scaled:  # gradients of a loss scaled by 2**10, unscaled inside the kernel
        grads = [g * 1024 for g in grads]
        inv_scale = torch.tensor(1.0 / 1024, device=device)
    _check_penalty(grads, dtype, device, reduction, inv_scale, OPTIONS[option])


@pytest.mark.parametrize("device", DEVICES)
def test_penalty_is_deterministic(device):
    g = _randn(2, 3000, dtype=torch.float32, device=device, seed=30)
    chunk, chunks = host.chunking(2, 3000, torch.device(device))
    assert chunks > 1  # the per-row split (and its combine) is exercised
    first = fastgp.penalty_from_grads(g, return_norms=True, backend="triton")
    second = fastgp.penalty_from_grads(g, return_norms=True, backend="triton")
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("case", list(GRAD_CASES))
def test_penalty_backward_outputs_are_empty_like_grads(case, dtype, device):
    """The op itself (autograd may restride what it returns): strides of empty_like(g), values of the reference."""
    grads = GRAD_CASES[case](dtype, device)
    batch = grads[0].shape[0]
    grad_out = _randn(batch, dtype=dtype, device=device, seed=98)
    _, norms, ref = _reference(grads, None, grad_out, "none", WGAN_GP)
    outs = torch.ops.fastgp.triton_penalty_backward(grad_out, grads, norms.to(dtype), None, 10.0, 1.0, 2.0, False, 0)
    rtol, atol = TOL[dtype]["out"]
    for out, g, r in zip(outs, grads, ref):
        assert out.dtype == dtype and out.stride() == torch.empty_like(g).stride(), (out.stride(), g.stride())
        torch.testing.assert_close(out.double(), r, rtol=rtol, atol=atol)


def test_elementwise_rows_copies_only_what_it_must():
    cl = torch.channels_last
    real, fake = torch.randn(2, 3, 4, 5).to(memory_format=cl), torch.randn(2, 3, 4, 5)
    (r, f), out, target, _ = host.elementwise_rows([real, fake])
    assert target is out and r is real and f.is_contiguous(memory_format=cl)  # fake follows out, no scratch
    permuted = torch.randn(4, 5, 6).transpose(1, 2)
    (p,), out, target, layouts = host.elementwise_rows([permuted])
    assert target is not out and target.is_contiguous() and p.is_contiguous() and layouts == [(30, 1), (30, 1)]
    assert host.finish(out, target.fill_(2.0)) is out and out.stride() == permuted.stride() and (out == 2).all()


def test_penalty_backward_checks_name_the_argument():
    g, op = [torch.randn(3, 4)], "fastgp::triton_penalty_backward"
    with pytest.raises(RuntimeError, match=r"grad_out must be a scalar or have shape \(3,\)"):
        host.check_penalty_backward(torch.ones(2), g, torch.ones(3), None, 1, op)
    with pytest.raises(RuntimeError, match="grad_out and norms must be on the gradients' device cpu"):
        host.check_penalty_backward(torch.ones(()), g, torch.ones(3, device="meta"), None, 1, op)
    with pytest.raises(RuntimeError, match="reduction code"):
        host.check_penalty_backward(torch.ones(()), g, torch.ones(3), None, 5, op)


def test_chunking_splits_long_rows_of_short_batches():
    dev = torch.device(DEVICES[0])
    chunk, chunks = host.chunking(1, 10**7, dev)
    assert chunks > 1 and chunk % kernels.MAX_BLOCK == 0 and chunk * chunks >= 10**7 > chunk * (chunks - 1)
    assert host.chunking(10**6, 10**4, dev)[1] == 1  # a big batch fills the device alone
    assert host.chunking(1, 0, dev)[1] == 1


# ------------------------------------------------------------ interpolate
def _interp_case(name, dtype, device):
    r = lambda *s, seed: _randn(*s, dtype=dtype, device=device, seed=seed)  # noqa: E731
    if name == "B1_long_row":
        return r(1, 1000, seed=40), r(1, 1000, seed=41)
    if name == "odd_3d":
        return r(3, 5, 7, seed=42), r(3, 5, 7, seed=43)
    if name == "one_per_row":
        return r(6, seed=44), r(6, seed=45)
    if name == "transposed_and_contiguous":
        return r(50, 4, seed=46).t(), r(4, 50, seed=47)
    if name == "channels_last":
        cl = torch.channels_last
        return r(2, 3, 4, 5, seed=48).to(memory_format=cl), r(2, 3, 4, 5, seed=49).to(memory_format=cl)
    if name == "channels_last_and_contiguous":
        return r(2, 3, 4, 5, seed=50).to(memory_format=torch.channels_last), r(2, 3, 4, 5, seed=51)
    if name == "contiguous_and_channels_last":
        return r(2, 3, 4, 5, seed=56), r(2, 3, 4, 5, seed=57).to(memory_format=torch.channels_last)
    if name == "channels_last_3d_and_contiguous":
        return r(2, 3, 2, 3, 4, seed=58).to(memory_format=torch.channels_last_3d), r(2, 3, 2, 3, 4, seed=59)
    if name == "batch_slice":
        return r(8, 3, 10, seed=52)[::2], r(4, 3, 10, seed=53)
    if name == "permuted":
        return r(4, 5, 6, seed=54).transpose(1, 2), r(4, 5, 6, seed=55).transpose(1, 2)
    if name == "permuted_and_contiguous":
        return r(4, 5, 6, seed=61).transpose(1, 2), r(4, 6, 5, seed=62)
    if name == "permuted_4d_and_channels_last":  # a dense permutation that is not channels_last
        return (r(2, 4, 5, 3, seed=63).permute(0, 3, 2, 1),
                r(2, 3, 5, 4, seed=64).to(memory_format=torch.channels_last))
    raise KeyError(name)


INTERP_CASES = ["B1_long_row", "odd_3d", "one_per_row", "transposed_and_contiguous", "channels_last",
                "channels_last_and_contiguous", "contiguous_and_channels_last", "channels_last_3d_and_contiguous",
                "batch_slice", "permuted", "permuted_and_contiguous", "permuted_4d_and_channels_last"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", INTERP_CASES)
def test_interpolate(case, dtype, device):
    real, fake = _interp_case(case, dtype, device)
    alpha = torch.rand(real.shape[0], generator=torch.Generator().manual_seed(60), dtype=torch.float64)
    alpha[0] = 0.0  # endpoints exactly
    if real.shape[0] > 1:
        alpha[1] = 1.0
    alpha = alpha.to(device=device, dtype=reference.accumulation_dtype(dtype))
    out = fastgp.interpolate(real, fake, alpha, backend="triton")
    ref = reference.interpolate(real.double(), fake.double(), alpha.double())
    assert out.dtype == dtype and out.shape == real.shape
    assert out.stride() == torch.empty_like(real).stride()  # what the fake kernel promises
    rtol, atol = TOL[dtype]["out"]
    torch.testing.assert_close(out.double(), ref, rtol=rtol, atol=atol)
    torch.testing.assert_close(out[0], fake[0], rtol=0, atol=0)


# ------------------------------------------------- the math helpers alone
@triton.jit
def _helpers_kernel(norms_ptr, value_ptr, coef_ptr, n, c_hi, c_lo, p_hi, p_lo,
                    ONE_SIDED: tl.constexpr, BLOCK: tl.constexpr):
    acc = norms_ptr.dtype.element_ty
    center = kernels._double(c_hi, c_lo, acc)
    power = kernels._double(p_hi, p_lo, acc)
    i = tl.arange(0, BLOCK)
    x = tl.load(norms_ptr + i, mask=i < n, other=0)
    tl.store(value_ptr + i, kernels.penalty_value(x, center, power, ONE_SIDED), mask=i < n)
    tl.store(coef_ptr + i, kernels.penalty_coef(x, center, power, ONE_SIDED), mask=i < n)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("option", list(OPTIONS))
def test_penalty_math_helpers(option, dtype, device):
    opts = OPTIONS[option]
    center, power, one_sided = opts["center"], opts["power"], opts["one_sided"]
    norms = torch.tensor([0.0, center, 1e-3, 0.3, 0.5, 0.99, 1.0, 1.7, 4.0], dtype=dtype, device=device)
    value, coef = torch.empty_like(norms), torch.empty_like(norms)
    _helpers_kernel[(1,)](norms, value, coef, norms.numel(), *host.split_double(center, "center"),
                          *host.split_double(power, "power"), ONE_SIDED=one_sided, BLOCK=16)
    n = norms.double().requires_grad_(True)
    ref_value = reference.per_sample_penalty(n, center, power, one_sided)
    (dphi,) = torch.autograd.grad(ref_value.sum(), n)
    rtol, atol = TOL[dtype]["acc"]
    torch.testing.assert_close(value.double(), ref_value.detach(), rtol=rtol, atol=atol)
    positive = norms > 0
    torch.testing.assert_close(coef.double()[positive], (dphi / n.detach())[positive], rtol=rtol, atol=atol)
    # At n = 0 phi'(n)/n is its finite limit (2 for center 0, power 2), else 0: never NaN.
    assert coef[0].item() == (2.0 if center == 0 and power == 2 else 0.0)


# ------------------------------------------------------ through a critic
def _mlp():
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def _conv():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.GELU(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 2 * 2, 1))


class _TwoInputs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(12, 8), torch.nn.Linear(5, 8)
        self.out = torch.nn.Linear(8, 1)

    def forward(self, x, y):
        return self.out(torch.tanh(self.a(x.flatten(1)) + self.b(y)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("critic_name", ["mlp", "conv", "two_inputs"])
def test_gradient_penalty_critic_grads_match_reference(critic_name, dtype, device):
    torch.manual_seed(0)
    critic = {"mlp": _mlp, "conv": _conv, "two_inputs": _TwoInputs}[critic_name]().to(device=device, dtype=dtype)
    batch = 5
    shape = (batch, 3, 2, 2)
    real = _randn(*shape, dtype=dtype, device=device, seed=70)
    fake = _randn(*shape, dtype=dtype, device=device, seed=71)
    if critic_name == "two_inputs":
        real = (real, _randn(batch, 5, dtype=dtype, device=device, seed=72))
        fake = (fake, _randn(batch, 5, dtype=dtype, device=device, seed=73))
    alpha = torch.rand(batch, generator=torch.Generator().manual_seed(74), dtype=dtype).to(device)
    results = {}
    for backend in ("triton", "torch"):
        critic.zero_grad()
        penalty, norms = fastgp.gradient_penalty(critic, real, fake, weight=10.0, alpha=alpha, return_norms=True,
                                                 backend=backend)
        penalty.backward()
        results[backend] = (penalty.detach(), norms, [torch.zeros_like(p) if p.grad is None else p.grad.clone()
                                                   for p in critic.parameters()])
    rtol, atol = TOL[dtype]["out"]
    (p_t, n_t, g_t), (p_r, n_r, g_r) = results["triton"], results["torch"]
    torch.testing.assert_close(p_t, p_r, rtol=rtol, atol=atol)
    torch.testing.assert_close(n_t, n_r, rtol=rtol, atol=atol)
    for a, b in zip(g_t, g_r):
        torch.testing.assert_close(a, b, rtol=rtol * 10, atol=atol * 10)


# ----------------------------------------------------------------- errors
@pytest.mark.parametrize("device", DEVICES)
def test_direct_op_calls_reject_bad_arguments(device):
    g = torch.randn(3, 4, device=device)
    op = torch.ops.fastgp.triton_penalty_forward
    with pytest.raises(RuntimeError, match="grads must hold at least one tensor"):
        op([], None, 1.0, 1.0, 2.0, False, 1)
    with pytest.raises(RuntimeError, match=r"grads\[1\] must have batch size 3"):
        op([g, torch.randn(2, 4, device=device)], None, 1.0, 1.0, 2.0, False, 1)
    with pytest.raises(RuntimeError, match="reduction code"):
        op([g], None, 1.0, 1.0, 2.0, False, 3)
    with pytest.raises(RuntimeError, match="inv_scale"):
        op([g], torch.ones(2, device=device), 1.0, 1.0, 2.0, False, 1)
    with pytest.raises(RuntimeError, match="alpha must be"):
        torch.ops.fastgp.triton_interpolate(g, g, torch.rand(2, device=device))
    with pytest.raises(RuntimeError, match="norms must have shape"):
        torch.ops.fastgp.triton_penalty_backward(torch.tensor(1.0, device=device), [g], torch.ones(2, device=device),
                                                 None, 1.0, 1.0, 2.0, False, 1)
