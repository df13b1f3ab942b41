"""Peak memory of the penalty path, fastgp vs the reference, and the core
issue's property: the fused path allocates nothing of full size beyond its
outputs (interpolation: x_hat; forward: nothing; forward+backward: dL/dg).

The path of a whole gradient penalty through a DCGAN critic (with backward to
the critic's parameters) is recorded too: there the critic's double-backward
graph, not the penalty arithmetic, sets the peak.
"""

from __future__ import annotations

import pytest
import torch

import fastgp
from fastgp import reference

from . import providers as P
from .critics import dcgan
from .matrix import ITEMSIZE, Shape
from .memory import measure

# Per-element buffers are what matters; dcgan B=64 makes them 2^20+ bytes
# while per-sample buffers (norms, penalties) are a few hundred bytes.
SHAPE = Shape("dcgan", (64, 3, 64, 64))
FULL_SIZE_OUTPUTS = {"interp": 1, "forward": 0, "fwdbwd": 1}
MEM_PROVIDERS = ("eager", "compile", "torch", "cpp", "cuda", "triton")


def _skip_unavailable(provider, device):
    why = P.unavailable(provider, device)
    if why is not None:
        pytest.skip(why)


def _path(pass_name, provider, device, dtype):
    gen = torch.Generator(device=device).manual_seed(0)
    x = [torch.randn(SHAPE.dims, generator=gen, device=device, dtype=dtype) for _ in range(2)]
    if pass_name == "interp":
        alpha = reference.sample_alpha(SHAPE.dims[0], x[0], gen)
        return P.interpolation(provider, x[0], x[1], alpha)
    return P.penalty_pass(pass_name, provider, x[0] * SHAPE.numel ** -0.5 * SHAPE.dims[0] ** 0.5)


@pytest.mark.parametrize("provider", MEM_PROVIDERS)
@pytest.mark.parametrize("pass_name", sorted(FULL_SIZE_OUTPUTS))
def test_op_memory(record, device, dtype_name, pass_name, provider):
    _skip_unavailable(provider, device)
    dtype = getattr(torch, dtype_name)
    fn = _path(pass_name, provider, device, dtype)
    fn()  # compile, autotune, warm caches
    allocs, _ = measure(fn, device)
    full = SHAPE.numel  # bytes: one byte per element already makes a buffer full-size
    if provider in P.FUSED:
        outputs = FULL_SIZE_OUTPUTS[pass_name]
        assert allocs.at_least(full) == outputs, (
            f"{provider} {pass_name} made {allocs.at_least(full)} full-size allocations, expected {outputs} "
            f"(its outputs): sizes {[s for s in allocs.sizes if s > 0]}")
        # Per-sample and per-block partial buffers are fine; anything near full size is not.
        slack = SHAPE.numel * ITEMSIZE[dtype_name] // 16
        limit = outputs * SHAPE.numel * ITEMSIZE[dtype_name] + slack
        assert allocs.peak_bytes <= limit, f"{provider} {pass_name}: peak {allocs.peak_bytes} B > {limit} B"
    record(fn, group=f"memory {pass_name} {SHAPE.id} {dtype_name}", pedantic_rounds=1, kind="memory",
           shape=list(SHAPE.dims), shape_id=SHAPE.id, dtype=dtype_name, pass_name=pass_name, provider=provider,
           input_bytes=SHAPE.numel * ITEMSIZE[dtype_name], peak_bytes=allocs.peak_bytes,
           cuda_peak_bytes=allocs.cuda_peak_bytes, allocations=allocs.count, allocated_bytes=allocs.total_bytes,
           full_size_allocations=allocs.at_least(full))


@pytest.mark.parametrize("provider", ("eager", "torch", "cpp", "cuda", "triton"))
def test_gp_path_memory(record, device, environment, provider):
    """gradient_penalty through a DCGAN critic + backward to its parameters."""
    _skip_unavailable(provider, device)
    batch = {"smoke": 2}.get(environment["matrix"], 16 if device.type == "cpu" else 64)
    torch.manual_seed(0)
    critic = dcgan().to(device)
    real = torch.randn(batch, 3, 64, 64, device=device)
    fake = torch.randn(batch, 3, 64, 64, device=device)
    if provider == "eager":
        def gp():
            return reference.handwritten_gradient_penalty(critic, real, fake, weight=P.WEIGHT)
    else:
        def gp():
            return fastgp.gradient_penalty(critic, real, fake, weight=P.WEIGHT, backend=P.BACKEND_OF[provider])

    def fn():
        critic.zero_grad(set_to_none=True)
        gp().backward()

    fn()
    critic.zero_grad(set_to_none=True)
    allocs, _ = measure(fn, device)
    record(fn, group=f"memory gp-path dcgan B={batch}", pedantic_rounds=1, kind="memory",
           shape=[batch, 3, 64, 64], shape_id=f"dcgan_{batch}x3x64x64", dtype="float32", pass_name="gp-path",
           provider=provider, input_bytes=real.nbytes, peak_bytes=allocs.peak_bytes,
           cuda_peak_bytes=allocs.cuda_peak_bytes, allocations=allocs.count, allocated_bytes=allocs.total_bytes,
           full_size_allocations=allocs.at_least(real.numel()))
