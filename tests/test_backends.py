"""Every backend available on CPU against the reference: values, norms and
gradients w.r.t. the gradient tensors, across dtypes, shapes and layouts."""

import pytest
import torch

import fastgp
from fastgp import reference

from conftest import assert_close, make_grads

DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
SHAPES = [(1, 3), (7, 1), (5, 13), (3, 3, 5, 7), (2, 1, 4, 3, 5), (4, 3, 64, 64), (2, 70001)]
VARIANTS = [
    dict(),
    dict(center=0.0),
    dict(one_sided=True),
    dict(center=0.0, power=6.0),
    dict(center=0.7, power=3.0, one_sided=True),
    dict(weight=10.0, reduction="sum"),
    dict(weight=2.5, reduction="none"),
]


def _oracle(grads, inv_scale=None, **kw):
    g64 = [g.detach().double().requires_grad_(True) for g in grads]
    s64 = None if inv_scale is None else inv_scale.double()
    penalty, norms = reference.penalty_from_grads(g64, inv_scale=s64, **kw)
    seed = torch.linspace(0.5, 1.5, penalty.numel(), dtype=torch.float64).reshape(penalty.shape)
    d = torch.autograd.grad(penalty, g64, seed)
    return penalty, norms, d, seed


def _check(grads, backend, dtype, inv_scale=None, **kw):
    gs = [g.detach().requires_grad_(True) for g in grads]
    penalty, norms = fastgp.penalty_from_grads(gs, inv_scale=inv_scale, return_norms=True, backend=backend, **kw)
    exp_penalty, exp_norms, exp_d, seed = _oracle(grads, inv_scale, **kw)
    assert penalty.dtype == reference.accumulation_dtype(dtype) and norms.dtype == penalty.dtype
    assert penalty.shape == exp_penalty.shape
    assert_close(norms, exp_norms, dtype)
    assert_close(penalty, exp_penalty, dtype)
    d = torch.autograd.grad(penalty, gs, seed.to(penalty.dtype))
    for got, exp, g in zip(d, exp_d, gs):
        assert got.dtype == g.dtype and got.shape == g.shape
        assert_close(got, exp, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_penalty_matches_reference(backend, dtype, shape):
    _check([make_grads(shape, dtype)], backend, dtype)


@pytest.mark.parametrize("kw", VARIANTS, ids=str)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_penalty_variants(backend, dtype, kw):
    _check([make_grads((6, 3, 5, 5), dtype)], backend, dtype, **kw)


@pytest.mark.parametrize("layout", ["channels_last", "transposed", "sliced", "expanded"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_penalty_any_strides(backend, layout, dtype):
    shape = (3, 4, 5, 6) if layout != "channels_last" else (3, 4, 5, 6)
    g = make_grads(shape, dtype, layout)
    _check([g], backend, dtype)


def test_penalty_five_d_channels_last(backend):
    _check([make_grads((2, 3, 4, 5, 6), torch.float64, "channels_last")], backend, torch.float64)


def test_several_gradient_tensors_share_one_norm(backend):
    grads = [make_grads((5, 3, 4, 4), torch.float64, seed=1), make_grads((5, 10), torch.float64, seed=2),
             make_grads((5, 2, 3), torch.float64, "transposed", seed=3)]
    _check(grads, backend, torch.float64)
    norms = fastgp.grad_norms(grads, backend=backend)
    torch.testing.assert_close(norms, torch.cat([g.reshape(5, -1) for g in grads], 1).norm(dim=1))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_inv_scale(backend, dtype):
    g = make_grads((4, 3, 8, 8), dtype) * 1024
    _check([g], backend, dtype, inv_scale=torch.tensor(1 / 1024.0))
    _check([g], backend, dtype, inv_scale=torch.tensor([1 / 1024.0], dtype=torch.float64), center=0.0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "transposed", "sliced"])
def test_interpolate_matches_reference(backend, dtype, layout):
    real = make_grads((5, 3, 6, 7), dtype, layout, seed=1)
    fake = make_grads((5, 3, 6, 7), dtype, "contiguous", seed=2)
    alpha = torch.rand(5, dtype=reference.accumulation_dtype(dtype))
    got = fastgp.interpolate(real, fake, alpha, backend=backend)
    exp = reference.interpolate(real.double(), fake.double(), alpha.double())
    assert got.dtype == dtype and got.shape == real.shape
    assert_close(got, exp, dtype)
    if layout == "channels_last":
        assert got.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("shape", [(1, 1), (3,), (9, 5), (2, 1, 3, 70001 // 3)], ids=str)
def test_interpolate_shapes_and_alpha_forms(backend, shape):
    real, fake = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
    alpha = torch.rand(shape[0], dtype=torch.float64)
    exp = reference.interpolate(real, fake, alpha)
    torch.testing.assert_close(fastgp.interpolate(real, fake, alpha, backend=backend), exp)
    torch.testing.assert_close(
        fastgp.interpolate(real, fake, alpha.reshape(-1, *[1] * (len(shape) - 1)), backend=backend), exp)


def test_interpolate_gradients(backend):
    real = torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True)
    fake = torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True)
    alpha = torch.rand(4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 5, dtype=torch.float64)
    got = torch.autograd.grad((fastgp.interpolate(real, fake, alpha, backend=backend) * w).sum(), [real, fake, alpha])
    exp = torch.autograd.grad((reference.interpolate(real, fake, alpha) * w).sum(), [real, fake, alpha])
    for a, b in zip(got, exp):
        torch.testing.assert_close(a, b)


def test_tuples_interpolate_with_one_alpha(backend):
    reals = (torch.randn(4, 3, 2, 2, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64))
    fakes = (torch.randn(4, 3, 2, 2, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64))
    alpha = torch.rand(4, dtype=torch.float64)
    out = fastgp.interpolate(reals, fakes, alpha, backend=backend)
    assert isinstance(out, tuple) and len(out) == 2
    for o, r, f in zip(out, reals, fakes):
        torch.testing.assert_close(o, reference.interpolate(r, f, alpha))


def test_cpu_kernels_are_deterministic():
    if "cpp" not in fastgp.available_backends("cpu"):
        pytest.skip("C++ extension not loaded")
    g = torch.randn(3, 3, 300, 300)
    first = fastgp.penalty_from_grads(g, return_norms=True, backend="cpp")
    for threads in (1, 2):
        prev = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            again = fastgp.penalty_from_grads(g, return_norms=True, backend="cpp")
        finally:
            torch.set_num_threads(prev)
        assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
