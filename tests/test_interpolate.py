"""Interpolation alpha_i * real_i + (1 - alpha_i) * fake_i on every (backend,
device) of the matrix against fastgp.reference in float64: dtypes, shapes,
layouts, alpha forms, endpoints, gradients, tuples."""

from __future__ import annotations

import pytest
import torch

import fastgp
from fastgp import reference

from conftest import DTYPES, assert_close, make_alpha, make_tensor


def check_interpolate(real, fake, alpha, backend, impl=None):
    """fastgp.interpolate (or impl.interpolate, the op itself) vs the float64 reference;
    the error is relative to the terms |alpha real| + |(1 - alpha) fake|."""
    out = impl.interpolate(real, fake, alpha) if impl is not None else \
        fastgp.interpolate(real, fake, alpha, backend=backend)
    expected = reference.interpolate(real.double(), fake.double(), alpha.double())
    assert out.dtype == real.dtype and out.shape == real.shape
    scale = max(float(real.abs().max()), float(fake.abs().max())) if real.numel() else 1.0
    assert_close(out, expected, real.dtype, stored=real.dtype, scale=scale)
    return out


HEAVY = pytest.mark.heavy
SHAPES = [(1, 3), (1, 1000), (6,), (7, 1), (5, 13), (3, 5, 7), (3, 3, 5, 7), (2, 1, 4, 3, 5), (6, 0, 4),
          pytest.param((4, 3, 64, 64), marks=HEAVY), pytest.param((2, 1, 3, 70001 // 3), marks=HEAVY)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_interpolate_matches_reference(backend, device, dtype, shape):
    real, fake = make_tensor(shape, dtype, seed=1, device=device), make_tensor(shape, dtype, seed=2, device=device)
    alpha = make_alpha(shape[0], dtype, device, seed=60)
    alpha[0] = 0.0  # an endpoint: exactly fake
    out = check_interpolate(real, fake, alpha, backend)
    assert torch.equal(out[0], fake[0])


# (real layout, fake layout): every layout of the maker against a contiguous
# fake, and the pairs whose memory orders disagree
LAYOUT_PAIRS = [(layout, "contiguous") for layout in ("contiguous", "channels_last", "transposed", "sliced", "padded",
                                                      "batch_strided", "misaligned", "permuted", "expanded")] + [
    ("channels_last", "channels_last"), ("contiguous", "channels_last"), ("permuted", "permuted"),
    ("permuted", "channels_last"), ("transposed", "sliced")]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("layouts", LAYOUT_PAIRS, ids="-".join)
def test_interpolate_layouts(impl, device, dtype, layouts):
    """The op itself on any pair of layouts: the reference's values, and for a
    backend with registered ops the strides of empty_like(real), as its fake kernel promises."""
    real = make_tensor((5, 3, 9, 12), dtype, layouts[0], seed=1, device=device)
    fake = make_tensor((5, 3, 9, 12), dtype, layouts[1], seed=2, device=device)
    alpha = make_alpha(10, dtype, device)[::2]  # a strided alpha
    out = check_interpolate(real, fake, alpha, None, impl)
    if impl.ops:
        assert out.stride() == torch.empty_like(real).stride(), (out.stride(), real.stride())


@pytest.mark.parametrize("real_layout", ["contiguous", "channels_last"])
def test_interpolate_five_d(impl, device, real_layout):
    real = make_tensor((2, 3, 2, 3, 4), torch.float32, real_layout, seed=58, device=device)
    fake = make_tensor((2, 3, 2, 3, 4), torch.float32, seed=59, device=device)
    out = check_interpolate(real, fake, make_alpha(2, device=device), None, impl)
    if impl.ops:
        assert out.stride() == torch.empty_like(real).stride()


def test_interpolate_many_dims_and_alpha_dtypes(impl, device):
    """9 dims, every one sliced (more unmergeable dims than a kernel argument
    describes), with alpha in float32, float64 and float16."""
    def many_dims(seed):
        full = make_tensor((3,) + (3,) * 8, torch.float32, seed=seed, device=device)
        return full[(slice(None),) + (slice(0, 2),) * 8]

    real, fake = many_dims(1), many_dims(2)
    for adtype in (torch.float32, torch.float64, torch.float16):
        check_interpolate(real, fake, make_alpha(3, device=device).to(adtype), None, impl)


@pytest.mark.parametrize("shape", [(1, 1), (3,), (9, 5), pytest.param((2, 1, 3, 70001 // 3), marks=HEAVY)], ids=str)
def test_alpha_shapes(backend, device, shape):
    """alpha of shape (B,) or (B, 1, ..., 1) means the same."""
    real, fake = make_tensor(shape, torch.float64, seed=1, device=device), make_tensor(shape, torch.float64, seed=2,
                                                                                       device=device)
    alpha = make_alpha(shape[0], torch.float64, device)
    expected = reference.interpolate(real, fake, alpha)
    torch.testing.assert_close(fastgp.interpolate(real, fake, alpha, backend=backend), expected)
    torch.testing.assert_close(
        fastgp.interpolate(real, fake, alpha.reshape(-1, *[1] * (len(shape) - 1)), backend=backend), expected)


def test_interpolate_gradients(backend, device):
    real = make_tensor((4, 3, 5), torch.float64, seed=1, device=device).requires_grad_(True)
    fake = make_tensor((4, 3, 5), torch.float64, seed=2, device=device).requires_grad_(True)
    alpha = make_alpha(4, torch.float64, device).requires_grad_(True)
    w = make_tensor((4, 3, 5), torch.float64, seed=3, device=device)
    got = torch.autograd.grad((fastgp.interpolate(real, fake, alpha, backend=backend) * w).sum(), [real, fake, alpha])
    exp = torch.autograd.grad((reference.interpolate(real, fake, alpha) * w).sum(), [real, fake, alpha])
    for a, b in zip(got, exp):
        torch.testing.assert_close(a, b)


def test_tuples_interpolate_with_one_alpha(backend, device):
    reals = (make_tensor((4, 3, 2, 2), torch.float64, seed=1, device=device),
             make_tensor((4, 5), torch.float64, seed=2, device=device))
    fakes = (make_tensor((4, 3, 2, 2), torch.float64, seed=3, device=device),
             make_tensor((4, 5), torch.float64, seed=4, device=device))
    alpha = make_alpha(4, torch.float64, device)
    out = fastgp.interpolate(reals, fakes, alpha, backend=backend)
    assert isinstance(out, tuple) and len(out) == 2
    for o, r, f in zip(out, reals, fakes):
        torch.testing.assert_close(o, reference.interpolate(r, f, alpha))


def test_drawn_alpha_is_one_uniform_number_per_sample(backend, device):
    """Without alpha, one U[0, 1) weight per sample: recovered from the best
    conditioned element of each row, it explains the whole row."""
    real, fake = make_tensor((64, 3, 4, 4), seed=1, device=device), make_tensor((64, 3, 4, 4), seed=2, device=device)
    x = fastgp.interpolate(real, fake, generator=torch.Generator(device).manual_seed(1), backend=backend)
    diff = (real - fake).flatten(1).double()
    best = diff.abs().argmax(1, keepdim=True)
    a = ((x - fake).flatten(1).double().gather(1, best) / diff.gather(1, best)).squeeze(1)
    assert ((a >= 0) & (a <= 1)).all() and a.std() > 0.1, "one alpha for the whole batch"
    # recovering a from x costs a few roundings of |real| + |fake| over |real - fake| (at least 1 here)
    expected = reference.interpolate(real.double(), fake.double(), a)
    scale = max(float(real.abs().max()), float(fake.abs().max()))
    assert_close(x, expected, torch.float32, stored=torch.float32, power=4.0, scale=scale)
