"""The registered ops: torch.library.opcheck (schema, fake kernel, autograd
registration, AOT dispatch) and gradcheck / gradgradcheck in float64."""

import pytest
import torch

import fastgp
from fastgp.ops import REDUCTION_CODES

pytestmark = pytest.mark.skipif("cpp" not in fastgp.available_backends("cpu"), reason="C++ extension not loaded")

PARAMS = [
    (1.0, 1.0, 2.0, False, "mean"),
    (10.0, 0.0, 2.0, False, "sum"),
    (2.0, 1.0, 2.0, True, "none"),
    (1.0, 0.5, 3.0, False, "mean"),
]


def _grads(requires_grad, dtype=torch.float64):
    return [torch.randn(3, 2, 4, 5, dtype=dtype, requires_grad=requires_grad),
            torch.randn(3, 6, dtype=dtype, requires_grad=requires_grad)]


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("params", PARAMS, ids=str)
def test_opcheck_penalty_forward(requires_grad, params):
    weight, center, power, one_sided, reduction = params
    for inv_scale in (None, torch.tensor(0.5, dtype=torch.float64)):
        args = (_grads(requires_grad), inv_scale, weight, center, power, one_sided, REDUCTION_CODES[reduction])
        torch.library.opcheck(torch.ops.fastgp.penalty_forward.default, args)


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("params", PARAMS, ids=str)
def test_opcheck_penalty_backward(requires_grad, params):
    weight, center, power, one_sided, reduction = params
    grads = _grads(requires_grad)
    _, norms = torch.ops.fastgp.penalty_forward(grads, None, weight, center, power, one_sided,
                                                REDUCTION_CODES[reduction])
    grad_out = torch.rand(3 if reduction == "none" else (), dtype=torch.float64, requires_grad=requires_grad)
    args = (grad_out, grads, norms, None, weight, center, power, one_sided, REDUCTION_CODES[reduction])
    torch.library.opcheck(torch.ops.fastgp.penalty_backward.default, args)


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_opcheck_interpolate(requires_grad, dtype):
    real = torch.randn(4, 3, 5, dtype=dtype, requires_grad=requires_grad)
    fake = torch.randn(4, 3, 5, dtype=dtype, requires_grad=requires_grad)
    alpha_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    alpha = torch.rand(4, dtype=alpha_dtype, requires_grad=requires_grad)
    torch.library.opcheck(torch.ops.fastgp.interpolate.default, (real, fake, alpha))


@pytest.mark.parametrize("params", PARAMS, ids=str)
def test_gradcheck_and_gradgradcheck_penalty(params):
    weight, center, power, one_sided, reduction = params
    grads = [g * 0.3 for g in _grads(False)]  # norms on both sides of the center
    grads = [g.detach().requires_grad_(True) for g in grads]

    def f(*gs):
        return fastgp.penalty_from_grads(gs, weight=weight, center=center, power=power, one_sided=one_sided,
                                         reduction=reduction, inv_scale=torch.tensor(1.5, dtype=torch.float64),
                                         backend="cpp")

    assert torch.autograd.gradcheck(f, grads)
    assert torch.autograd.gradgradcheck(f, grads)


def test_gradcheck_and_gradgradcheck_interpolate():
    real = torch.randn(3, 2, 3, dtype=torch.float64, requires_grad=True)
    fake = torch.randn(3, 2, 3, dtype=torch.float64, requires_grad=True)
    alpha = torch.rand(3, dtype=torch.float64, requires_grad=True)

    def f(r, fk, a):
        return fastgp.interpolate(r, fk, a, backend="cpp")

    assert torch.autograd.gradcheck(f, (real, fake, alpha))
    assert torch.autograd.gradgradcheck(f, (real, fake, alpha))
