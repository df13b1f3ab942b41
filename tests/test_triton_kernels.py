"""The Triton backend's internals, where its kernels can run (a GPU, or the
CPU through the Triton interpreter, which tests/test_triton.py starts): the
host-side planning (row layouts, row splitting) and the penalty helpers of
kernels.py alone. The kernels' correctness is the matrix's (test_penalty.py,
test_interpolate.py, ...); in an ordinary CPU session every test here skips.
"""

from __future__ import annotations

import pytest
import torch

import fastgp
from fastgp import reference
from fastgp.backends import triton as triton_backend

from conftest import assert_close, make_tensor

if triton_backend.unavailable_reason(torch.device("cpu")) is None:
    DEVICES = ["cpu"]  # interpreted
elif triton_backend.unavailable_reason(torch.device("cuda")) is None:
    DEVICES = ["cuda"]
else:
    pytest.skip("needs a GPU, or TRITON_INTERPRET=1 before import (tests/test_triton.py runs this file so)",
                allow_module_level=True)

from fastgp.triton import host, kernels  # noqa: E402  (triton is importable here)

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

# Selected by ``--backends=triton`` like the matrix tests.
pytestmark = [pytest.mark.parametrize("backend", ["triton"]), pytest.mark.parametrize("device", DEVICES)]

OPTIONS = {
    "wgan_gp": dict(center=1.0, power=2.0, one_sided=False),
    "r1": dict(center=0.0, power=2.0, one_sided=False),
    "one_sided_p1.5": dict(center=1.0, power=1.5, one_sided=True),
    "p1_center0.5": dict(center=0.5, power=1.0, one_sided=False),
    "center0_p3": dict(center=0.0, power=3.0, one_sided=False),
}


def test_penalty_is_deterministic_when_rows_are_split(backend, device):
    g = make_tensor((2, 3000), torch.float32, seed=30, device=device)
    _, chunks = host.forward_chunks(2, 3000)
    assert chunks > 1  # the per-row split (and its combine) is exercised
    first = fastgp.penalty_from_grads(g, return_norms=True, backend=backend)
    second = fastgp.penalty_from_grads(g, return_norms=True, backend=backend)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_elementwise_rows_copies_only_what_it_must(backend, device):
    cl = torch.channels_last
    real, fake = torch.randn(2, 3, 4, 5, device=device).to(memory_format=cl), torch.randn(2, 3, 4, 5, device=device)
    (r, f), out, target, _ = host.elementwise_rows([real, fake])
    assert target is out and r is real and f.is_contiguous(memory_format=cl)  # fake follows out, no scratch
    permuted = torch.randn(4, 5, 6, device=device).transpose(1, 2)
    (p,), out, target, layouts = host.elementwise_rows([permuted])
    assert target is not out and target.is_contiguous() and p.is_contiguous() and layouts == [(30, 1), (30, 1)]
    assert host.write_back(out, target.fill_(2.0)) is out and out.stride() == permuted.stride() and (out == 2).all()


# How long rows are split: tests/test_triton_review.py::test_configuration_is_a_function_of_the_shape


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("option", list(OPTIONS))
def test_penalty_math_helpers(backend, device, option, dtype):
    opts = OPTIONS[option]
    center, power, one_sided = opts["center"], opts["power"], opts["one_sided"]
    norms = torch.tensor([0.0, center, 1e-3, 0.3, 0.5, 0.99, 1.0, 1.7, 4.0], dtype=dtype, device=device)
    value, coef = torch.empty_like(norms), torch.empty_like(norms)
    _helpers_kernel[(1,)](norms, value, coef, norms.numel(), *host.split_double(center, "center"),
                          *host.split_double(power, "power"), ONE_SIDED=one_sided, BLOCK=16)
    n = norms.double().requires_grad_(True)
    ref_value = reference.per_sample_penalty(n, center, power, one_sided)
    (dphi,) = torch.autograd.grad(ref_value.sum(), n)
    # a few scalar operations on one number: the row length is 1
    assert_close(value, ref_value.detach(), dtype, power=power, scale=(4.0 + center) ** power)
    positive = norms > 0
    assert_close(coef[positive], (dphi / n.detach())[positive], dtype, power=power,
                 scale=power * (4.0 + center) ** max(power - 1, 0) / 1e-3)
    # At n = 0 phi'(n)/n is its finite limit (2 for center 0, power 2), else 0: never NaN.
    assert coef[0].item() == (2.0 if center == 0 and power == 2 else 0.0)
