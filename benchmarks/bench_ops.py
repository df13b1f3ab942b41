"""Op benchmarks: interpolation, penalty forward, backward and forward+backward
over the shape matrix, every provider side by side, plus a plain tensor copy at
each shape: the memory bandwidth of this device, measured in the same run."""

from __future__ import annotations

import pytest
import torch

try:
    import resource  # Unix: page faults per call
except ImportError:
    resource = None

from fastgp import reference

from . import providers as P
from .matrix import PASSES, bytes_moved

TOLERANCES = {  # (rtol, atol) of each provider vs the eager reference
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-4, 1e-5),
    torch.bfloat16: (2e-2, 1e-2),
    torch.float16: (2e-3, 1e-3),
}


def _tensors(shape, dtype_name, device, seed=0):
    """real, fake, alpha, and a gradient whose per-sample norms are about 1."""
    gen = torch.Generator(device=device).manual_seed(seed)
    dtype = getattr(torch, dtype_name)
    real = torch.randn(shape.dims, generator=gen, device=device, dtype=dtype)
    fake = torch.randn(shape.dims, generator=gen, device=device, dtype=dtype)
    alpha = reference.sample_alpha(shape.dims[0], real, gen)
    row = max(1, shape.numel // shape.dims[0])
    g = torch.randn(shape.dims, generator=gen, device=device, dtype=dtype) * row ** -0.5
    return real, fake, alpha, g


def _skip_unavailable(provider, device):
    why = P.unavailable(provider, device)
    if why is not None:
        pytest.skip(why)


def _warm_and_check(fn, expected, dtype, provider):
    """Runs fn twice (compiles, autotunes, faults pages in) and checks its
    result against the eager reference: a wrong provider is not timed."""
    try:
        fn()
        out = fn()
    except Exception as e:
        if provider == "compile":  # torch.compile's own limits on this machine
            pytest.skip(f"torch.compile failed: {type(e).__name__}: {e}")
        raise
    rtol, atol = TOLERANCES[dtype]
    torch.testing.assert_close(out, expected, rtol=rtol, atol=atol, check_dtype=True)


def _page_faults_per_call(fn, calls=3):
    """Minor page faults per call: on CPU, an output allocation above glibc's
    mmap threshold (at most 32 MiB) is mapped afresh, and faulted in, on every
    call; the report uses this to explain a missed bandwidth target."""
    if resource is None:
        return None
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


def _info(shape, dtype_name, pass_name, provider):
    return dict(shape=list(shape.dims), shape_id=shape.id, family=shape.family, numel=shape.numel,
                dtype=dtype_name, pass_name=pass_name, provider=provider,
                bytes=bytes_moved(pass_name, shape.numel, dtype_name), kind="op")


def _group(pass_name, shape, dtype_name):
    return f"{pass_name} {shape.id} {dtype_name}"


def test_copy(record, shape, dtype_name, device):
    """dst.copy_(src): the bandwidth yardstick (reads N, writes N)."""
    src, dst, _, _ = _tensors(shape, dtype_name, device)
    record(lambda: dst.copy_(src), group=_group("interp", shape, dtype_name),
           **_info(shape, dtype_name, "copy", "copy"))


@pytest.mark.parametrize("provider", P.INTERP_PROVIDERS)
def test_interp(record, shape, dtype_name, device, provider):
    _skip_unavailable(provider, device)
    real, fake, alpha, _ = _tensors(shape, dtype_name, device)
    fn = P.interpolation(provider, real, fake, alpha)
    _warm_and_check(fn, reference.interpolate(real, fake, alpha), real.dtype, provider)
    record(fn, group=_group("interp", shape, dtype_name), page_faults_per_call=_page_faults_per_call(fn),
           **_info(shape, dtype_name, "interp", provider))


@pytest.mark.parametrize("provider", P.PENALTY_PROVIDERS)
@pytest.mark.parametrize("pass_name", [p for p in PASSES if p != "interp"])
def test_penalty(record, shape, dtype_name, device, pass_name, provider):
    _skip_unavailable(provider, device)
    _, _, _, g = _tensors(shape, dtype_name, device)
    fn = P.penalty_pass(pass_name, provider, g)
    expected = P.penalty_pass(pass_name, "eager", g)()
    _warm_and_check(fn, expected, g.dtype, provider)
    record(fn, group=_group(pass_name, shape, dtype_name), page_faults_per_call=_page_faults_per_call(fn),
           **_info(shape, dtype_name, pass_name, provider))
