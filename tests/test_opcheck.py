"""The registered ops of every backend that has them (the Backend protocol's
``ops``), on every (backend, device) of the matrix: torch.library.opcheck
(schema, fake kernel, autograd registration, AOT dispatch) with requires_grad
on and off; the argument checks of direct calls, in the real kernels and in
the fake kernels alike; and, for every backend, gradcheck / gradgradcheck of
the public functions in float64."""

from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import fastgp
from fastgp.backends import triton as triton_backend
from fastgp.backends.shared import REDUCTION_CODES

from conftest import make_tensor, no_fake_tracing

PARAMS = [
    (1.0, 1.0, 2.0, False, "mean"),
    (10.0, 0.0, 2.0, False, "sum"),
    (2.0, 1.0, 2.0, True, "none"),
    (1.0, 0.5, 3.0, False, "mean"),
]


def _opcheck(op, args, backend, device):
    if no_fake_tracing(backend, device):
        torch.library.opcheck(op, args, test_utils=("test_schema", "test_autograd_registration"))
    else:
        torch.library.opcheck(op, args)


def _grads(requires_grad, device, dtype=torch.float64):
    return [make_tensor((3, 2, 4, 5), dtype, seed=1, device=device).requires_grad_(requires_grad),
            make_tensor((3, 6), dtype, "transposed", seed=2, device=device).requires_grad_(requires_grad)]


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("params", PARAMS, ids=str)
def test_opcheck_penalty_forward(ops, backend, device, requires_grad, params):
    _, forward, _ = ops
    weight, center, power, one_sided, reduction = params
    for inv_scale in (None, torch.tensor(0.5, dtype=torch.float64, device=device)):
        args = (_grads(requires_grad, device), inv_scale, weight, center, power, one_sided,
                REDUCTION_CODES[reduction])
        _opcheck(forward, args, backend, device)


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("params", PARAMS, ids=str)
def test_opcheck_penalty_backward(ops, backend, device, requires_grad, params):
    _, forward, backward = ops
    weight, center, power, one_sided, reduction = params
    grads = _grads(requires_grad, device)
    code = REDUCTION_CODES[reduction]
    inv_scale = torch.tensor(0.5, device=device)
    _, norms = forward(grads, inv_scale, weight, center, power, one_sided, code)
    grad_out = torch.rand(3 if reduction == "none" else (), dtype=torch.float64, device=device,
                          requires_grad=requires_grad)
    _opcheck(backward, (grad_out, grads, norms, inv_scale, weight, center, power, one_sided, code), backend, device)


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_opcheck_interpolate(ops, backend, device, requires_grad, dtype):
    interpolate, _, _ = ops
    real = make_tensor((4, 3, 8, 8), dtype, seed=1, device=device).requires_grad_(requires_grad)
    fake = make_tensor((4, 3, 8, 8), dtype, "channels_last", seed=2, device=device).requires_grad_(requires_grad)
    alpha = torch.rand(4, dtype=torch.float64 if dtype == torch.float64 else torch.float32, device=device,
                       requires_grad=requires_grad)
    _opcheck(interpolate, (real, fake, alpha), backend, device)


# gradcheck perturbs every element, one kernel call each: heavy for the Triton
# interpreter (the backends' double backward is shared.py's, checked through cpp)
@pytest.mark.heavy
@pytest.mark.parametrize("params", PARAMS, ids=str)
def test_gradcheck_and_gradgradcheck_penalty(backend, device, params):
    weight, center, power, one_sided, reduction = params
    # small, since gradcheck differentiates by each element; norms on both sides of 1
    grads = [make_tensor((3, 2, 3), torch.float64, seed=1, device=device).mul(0.3).requires_grad_(True),
             make_tensor((3, 4), torch.float64, "transposed", seed=2, device=device).mul(0.3).requires_grad_(True)]
    inv_scale = torch.tensor(1.5, dtype=torch.float64, device=device)

    def f(*gs):
        return fastgp.penalty_from_grads(gs, weight=weight, center=center, power=power, one_sided=one_sided,
                                         reduction=reduction, inv_scale=inv_scale, backend=backend)

    assert torch.autograd.gradcheck(f, grads)
    assert torch.autograd.gradgradcheck(f, grads)


@pytest.mark.heavy
def test_gradcheck_and_gradgradcheck_interpolate(backend, device):
    real = make_tensor((3, 2, 3), torch.float64, seed=1, device=device).requires_grad_(True)
    fake = make_tensor((3, 2, 3), torch.float64, seed=2, device=device).requires_grad_(True)
    alpha = torch.rand(3, dtype=torch.float64, device=device, requires_grad=True)

    def f(r, fk, a):
        return fastgp.interpolate(r, fk, a, backend=backend)

    assert torch.autograd.gradcheck(f, (real, fake, alpha))
    assert torch.autograd.gradgradcheck(f, (real, fake, alpha))


# --------------------------------------------------------- argument checks
def _bad_calls(ops, device, make=torch.randn):
    """(call, message) pairs: direct op calls with one bad argument each."""
    interpolate, forward, backward = ops
    other = "meta" if device == "cpu" else "cpu"  # a tensor on another device
    g = make(3, 4, device=device)
    return [
        (lambda: forward([g, make(2, 4, device=device)], None, 1.0, 1.0, 2.0, False, 1),
         r"grads\[1\] must have batch size 3"),
        (lambda: forward([g, make(3, 4, device=device, dtype=torch.float64)], None, 1.0, 1.0, 2.0, False, 1),
         r"grads\[1\]"),
        (lambda: forward([make(3, 4, device=device).to(torch.int32)], None, 1.0, 1.0, 2.0, False, 1),
         r"grads\[0\] must be float16, bfloat16, float32 or float64"),
        (lambda: forward([g], None, 1.0, 1.0, 2.0, False, 7), "reduction code"),
        (lambda: forward([g], make(2, device=device), 1.0, 1.0, 2.0, False, 1), "inv_scale"),
        (lambda: interpolate(g, g, make(2, device=device)), "alpha must"),
        (lambda: interpolate(g, make(3, 5, device=device), make(3, device=device)), "real|fake"),
        (lambda: interpolate(g, g, make(3, device=device).to(torch.int64)), "alpha must"),
        (lambda: backward(make((), device=device), [g], make(2, device=device), None, 1.0, 1.0, 2.0, False, 1),
         "norms must have shape"),
        (lambda: backward(make(2, device=device), [g], make(3, device=device), None, 1.0, 1.0, 2.0, False, 0),
         r"grad_out must be a scalar or have shape \(3,\)"),
        (lambda: forward([g], make((), device=other), 1.0, 1.0, 2.0, False, 1), f"inv_scale is on {other}"),
        (lambda: interpolate(g, g, make(3, device=other)), "real, fake and alpha must share a device"),
        (lambda: backward(make((), device=device), [g], make(3, device=other), None, 1.0, 1.0, 2.0, False, 1),
         "grad_out and norms must be on the gradients' device"),
    ]


def test_direct_calls_reject_bad_arguments(ops, device):
    for call, message in _bad_calls(ops, device):
        with pytest.raises(RuntimeError, match=message):
            call()
    _, forward, _ = ops
    with pytest.raises(RuntimeError, match="no tensor arguments|grads must hold at least one tensor"):
        forward([], None, 1.0, 1.0, 2.0, False, 1)


def test_fake_kernels_check_like_the_real_ones(ops, backend, device):
    """Under FakeTensorMode (torch.compile's tracing) a bad call fails with the
    real kernel's message instead of tracing a wrong shape."""
    if no_fake_tracing(backend, device):
        pytest.skip(no_fake_tracing(backend, device))
    with FakeTensorMode():
        for call, message in _bad_calls(ops, device):
            with pytest.raises(RuntimeError, match=message):
                call()


def test_fake_kernels_promise_the_real_outputs(ops, backend, device):
    if no_fake_tracing(backend, device):
        pytest.skip(no_fake_tracing(backend, device))
    interpolate, forward, backward = ops
    real = make_tensor((4, 3, 5, 6), torch.bfloat16, "channels_last", device=device)
    g = make_tensor((4, 3, 5, 6), torch.float16, "permuted", device=device)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fake_real, fake_g = mode.from_tensor(real), mode.from_tensor(g)
        x = interpolate(fake_real, fake_real, mode.from_tensor(torch.rand(4, device=device)))
        pen, norms = forward([fake_g], None, 1.0, 1.0, 2.0, False, REDUCTION_CODES["none"])
        (d,) = backward(mode.from_tensor(torch.ones(4, device=device)), [fake_g], norms, None, 1.0, 1.0, 2.0, False, 0)
    assert x.dtype == real.dtype and x.shape == real.shape and x.stride() == torch.empty_like(real).stride()
    assert pen.shape == norms.shape == (4,) and pen.dtype == norms.dtype == torch.float32
    assert d.dtype == g.dtype and d.stride() == torch.empty_like(g).stride()


@pytest.mark.skipif(not triton_backend._installed() or triton_backend.load() is not None or triton_backend.INTERPRETED,
                    reason="needs triton, with the interpreter off")
def test_opcheck_triton_ops_cpu_kernels():
    """The Triton ops' CPU kernels (the reference, registered when the interpreter is
    off): schema, autograd registration, fake tensors. AOT dispatch needs a GPU:
    torch analyses the kernels with the device's Triton backend."""
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    for rg in (False, True):
        g = [torch.randn(3, 5, requires_grad=rg), torch.randn(3, 2, 2, requires_grad=rg)]
        torch.library.opcheck(torch.ops.fastgp.triton_penalty_forward.default, (g, None, 10.0, 1.0, 2.0, False, 1),
                              test_utils=utils)
        torch.library.opcheck(torch.ops.fastgp.triton_penalty_forward.default,
                              (g, torch.tensor(0.25), 1.0, 0.0, 2.0, False, 0), test_utils=utils)
        r, f = torch.randn(3, 4, requires_grad=rg), torch.randn(3, 4, requires_grad=rg)
        torch.library.opcheck(torch.ops.fastgp.triton_interpolate.default, (r, f, torch.rand(3)), test_utils=utils)
