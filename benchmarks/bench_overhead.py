"""Call overhead: what fastgp's Python layer (argument checks, backend
resolution, autograd wrapper) costs on top of the op it calls, at the tabular
256x2 shape, where the call and not the data is the cost. Side by side in one
run, per op:

  interp   lerp (``torch.lerp``, weight already shaped), raw (the backend's op
           called directly), public (``fastgp.interpolate``)
  forward  eager (the reference), raw (the penalty_forward op), public
           (``fastgp.penalty_from_grads``)
  fwdbwd   the same, with dL/dg through autograd
  gp       eager (``reference.handwritten_gradient_penalty``: the hand-written penalty),
           public (``fastgp.gradient_penalty``), each with its backward, on a
           one-layer critic: the whole critic-facing path

A provider is ``raw-<backend>`` or ``public-<backend>`` for every fastgp
backend available on the device, or a baseline (lerp, eager). The report's
"Call overhead" section puts public / raw next to the target (at most 2x).
"""

from __future__ import annotations

import pytest
import torch

import fastgp
from fastgp import backends, reference
from fastgp.backends.shared import REDUCTION_CODES

from .providers import WEIGHT

DIMS = (256, 2)
SHAPE_ID = "tabular_256x2"
OPS = ("interp", "forward", "fwdbwd", "gp")
BASELINE = {"interp": "lerp", "forward": "eager", "fwdbwd": "eager", "gp": "eager"}
MEAN = REDUCTION_CODES["mean"]


# (op, provider): the op's baseline, then raw and public calls on every backend (gp has no raw op)
CASES = [(op, provider) for op in OPS
         for provider in [BASELINE[op]] + [f"{kind}-{b}" for b in backends.NAMES for kind in ("raw", "public")
                                           if not (op == "gp" and kind == "raw")]]


def _tensors(dtype_name, device):
    gen = torch.Generator(device=device).manual_seed(0)
    dtype = getattr(torch, dtype_name)
    real = torch.randn(DIMS, generator=gen, device=device, dtype=dtype)
    fake = torch.randn(DIMS, generator=gen, device=device, dtype=dtype)
    g = torch.randn(DIMS, generator=gen, device=device, dtype=dtype) * DIMS[1] ** -0.5
    return real, fake, reference.sample_alpha(DIMS[0], real, gen), g


def _call(op, provider, device, real, fake, alpha, g):
    """A no-argument callable: one call of `op` as `provider` makes it."""
    kind, _, backend = provider.partition("-")
    impl = backends.get(backend) if backend else None
    gr = g.detach().requires_grad_(True)
    if op == "interp":
        if kind == "lerp":
            w = alpha.to(real.dtype).reshape(-1, 1)
            return lambda: torch.lerp(fake, real, w)
        if kind == "raw":
            return lambda: impl.interpolate(real, fake, alpha)
        return lambda: fastgp.interpolate(real, fake, alpha, backend=backend)
    if op in ("forward", "fwdbwd"):
        if kind == "eager":
            penalty = lambda x: reference.handwritten_penalty(x, weight=WEIGHT)  # noqa: E731
        elif kind == "raw":
            penalty = lambda x: impl.penalty_forward([x], None, WEIGHT, 1.0, 2.0, False, MEAN)[0]  # noqa: E731
        else:
            penalty = lambda x: fastgp.penalty_from_grads(x, weight=WEIGHT, backend=backend)  # noqa: E731
        if op == "forward":
            return lambda: penalty(g)
        return lambda: torch.autograd.grad(penalty(gr), gr)[0]
    # gp: the whole path through a one-layer critic, with the backward a training step runs
    critic = torch.nn.Linear(DIMS[1], 1).to(device=device, dtype=real.dtype)

    def step():
        if kind == "eager":
            p = reference.handwritten_gradient_penalty(critic, real, fake, weight=WEIGHT, alpha=alpha)
        else:
            p = fastgp.gradient_penalty(critic, real, fake, weight=WEIGHT, alpha=alpha, backend=backend)
        p.backward()
        return p.detach()

    return step


@pytest.mark.parametrize("op,provider", CASES, ids=[f"{op}-{provider}" for op, provider in CASES])
def test_overhead(record, dtype_name, device, op, provider):
    kind, _, backend = provider.partition("-")
    if backend:
        why = backends.unavailable_reason(backend, device)
        if why is not None:
            pytest.skip(why)
    real, fake, alpha, g = _tensors(dtype_name, device)
    fn = _call(op, provider, device, real, fake, alpha, g)
    fn()
    fn()  # warm: first calls resolve, compile, fault pages in
    record(fn, group=f"overhead {op} {SHAPE_ID} {dtype_name}", kind="overhead", op=op, provider=kind,
           backend=backend or None, shape=list(DIMS), shape_id=SHAPE_ID, dtype=dtype_name)
