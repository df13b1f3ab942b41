"""Shared test helpers: one tolerance table per dtype, backend lists, inputs."""

import pytest
import torch

import fastgp

# (rtol, atol) for values computed from inputs of this dtype vs a float64 oracle.
TOLERANCES = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-5, 1e-6),
    torch.bfloat16: (2e-2, 2e-2),
    torch.float16: (5e-3, 5e-3),
}

CPU_BACKENDS = [b for b in ("cpp", "torch") if b in fastgp.available_backends("cpu")]


def assert_close(actual, expected, dtype):
    rtol, atol = TOLERANCES[dtype]
    torch.testing.assert_close(actual.double(), expected.double(), rtol=rtol, atol=atol)


def make_grads(shape, dtype=torch.float32, layout="contiguous", seed=0):
    """A random gradient-like tensor with the requested memory layout."""
    gen = torch.Generator().manual_seed(seed)
    if layout == "contiguous":
        return torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    if layout == "channels_last":
        return torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype).to(
            memory_format=torch.channels_last if len(shape) == 4 else torch.channels_last_3d)
    if layout == "transposed":  # swap the last two dims: non-contiguous, still dense
        s = list(shape)
        s[-1], s[-2] = s[-2], s[-1]
        return torch.randn(s, generator=gen, dtype=torch.float64).to(dtype).transpose(-1, -2)
    if layout == "sliced":  # every other element of the last dim: not dense
        s = list(shape)
        s[-1] *= 2
        return torch.randn(s, generator=gen, dtype=torch.float64).to(dtype)[..., ::2]
    if layout == "expanded":  # stride 0 in a non-batch dim, as autograd returns for sum()
        s = list(shape)
        s[-1] = 1
        return torch.randn(s, generator=gen, dtype=torch.float64).to(dtype).expand(shape)
    raise ValueError(layout)


@pytest.fixture(params=CPU_BACKENDS)
def backend(request):
    return request.param
