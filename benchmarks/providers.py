"""What each provider runs, per pass. The baselines are imported from the one
reference (fastgp.reference), never rewritten here.

Providers:
  eager    the widespread hand-written version in eager mode: ``reference.interpolate``
           (``a * real + (1 - a) * fake``) and ``reference.handwritten_penalty``
           (the norm of the flattened gradient in its accumulation dtype)
  lerp     eager interpolation with ``torch.lerp`` (interpolation only)
  compile  ``torch.compile`` of the eager version (dynamic=False: specialized per shape)
  torch    fastgp's public API on its pure-PyTorch backend (reference + API overhead)
  cpp      fastgp's C++ extension on CPU tensors
  cuda     the same extension's CUDA kernels (backend "cpp" on a CUDA device)
  triton   fastgp's Triton kernels (CUDA only here: the CPU interpreter is a test path)
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import torch

import fastgp
from fastgp import backends, reference

INTERP_PROVIDERS = ("eager", "lerp", "compile", "torch", "cpp", "cuda", "triton")
PENALTY_PROVIDERS = ("eager", "compile", "torch", "cpp", "cuda", "triton")
FUSED = ("cpp", "cuda", "triton")               # fastgp's own kernels
BACKEND_OF = {"torch": "torch", "cpp": "cpp", "cuda": "cpp", "triton": "triton"}
WEIGHT = 10.0                                    # WGAN-GP's lambda; any value times the same


def unavailable(provider: str, device: torch.device) -> Optional[str]:
    """None when `provider` runs on `device`, else why it does not."""
    if provider in ("eager", "lerp", "compile"):
        return None
    if provider == "cpp" and device.type != "cpu":
        return "on CUDA the C++ extension is the 'cuda' provider"
    if provider in ("cuda", "triton") and device.type != "cuda":
        return f"the {provider!r} provider needs a CUDA device"
    backend = BACKEND_OF[provider]
    if backend in fastgp.available_backends(device):
        return None
    return backends.unavailable_reason(backend, device) or f"backend {backend!r} unavailable on {device}"


def available(providers, device: torch.device):
    return [p for p in providers if unavailable(p, device) is None]


def fused_providers(device: torch.device):
    return available(FUSED, device)


_compiled: Dict[Callable, Callable] = {}


def compiled(fn: Callable) -> Callable:
    """One torch.compile wrapper per function; dynamo recompiles per shape."""
    if fn not in _compiled:
        _compiled[fn] = torch.compile(fn, dynamic=False)
    return _compiled[fn]


def handwritten_penalty(g: torch.Tensor) -> torch.Tensor:
    return reference.handwritten_penalty(g, weight=WEIGHT)


def interpolation(provider: str, real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor) -> Callable:
    """A no-argument callable returning x_hat = alpha * real + (1 - alpha) * fake."""
    if provider == "eager":
        return lambda: reference.interpolate(real, fake, alpha)
    if provider == "lerp":
        # What a careful hand-written version does: weight already shaped (B, 1, ...).
        w = alpha.to(real.dtype).reshape(-1, *([1] * (real.dim() - 1)))
        return lambda: torch.lerp(fake, real, w)
    if provider == "compile":
        fn = compiled(reference.interpolate)
        return lambda: fn(real, fake, alpha)
    backend = BACKEND_OF[provider]
    return lambda: fastgp.interpolate(real, fake, alpha, backend=backend)


def penalty(provider: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A callable g -> weight * mean_i (||g_i|| - 1)^2 (0-d tensor)."""
    if provider == "eager":
        return handwritten_penalty
    if provider == "compile":
        return compiled(handwritten_penalty)
    backend = BACKEND_OF[provider]
    return lambda g: fastgp.penalty_from_grads(g, weight=WEIGHT, backend=backend)


def penalty_pass(pass_name: str, provider: str, g: torch.Tensor) -> Callable:
    """A no-argument callable for one pass of the penalty on gradient `g`.

    forward: penalty of a g that needs no grad (the kernel alone);
    backward: dL/dg of a penalty computed once beforehand (graph retained);
    fwdbwd: penalty and dL/dg, as in a GAN step.
    """
    fn = penalty(provider)
    if pass_name == "forward":
        g = g.detach()
        return lambda: fn(g)
    g = g.detach().requires_grad_(True)
    if pass_name == "backward":
        p = fn(g)
        return lambda: torch.autograd.grad(p, g, retain_graph=True)[0]
    if pass_name == "fwdbwd":
        def run():
            p = fn(g)
            return p, torch.autograd.grad(p, g)[0]
        return run
    raise ValueError(f"unknown pass {pass_name!r}")
