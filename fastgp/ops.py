"""torch.library glue for the compiled fastgp ops: fake kernels (for
torch.compile / meta tensors) and the derivative of ``penalty_backward``.
Schemas live in csrc/fastgp.cpp; the first-order autograd of ``interpolate``
and ``penalty_forward`` is C++ (csrc/autograd.cpp), so a call costs no Python.

Only first-order autograd is needed in a GAN step (PyTorch differentiates the
critic's own backward graph); ``penalty_backward`` still has a derivative,
built from the reference, so ``gradgradcheck`` holds.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from . import reference
from ._ext import state

REDUCTION_CODES = {"none": 0, "mean": 1, "sum": 2}
_REDUCTION_NAMES = {v: k for k, v in REDUCTION_CODES.items()}


# ------------------------------------------------------ fake kernels (shapes)
def _interpolate_fake(real, fake, alpha):
    return torch.empty_like(real)


def _penalty_forward_fake(grads, inv_scale, weight, center, power, one_sided, reduction):
    g0 = grads[0]
    acc = reference.accumulation_dtype(g0.dtype)
    batch = g0.shape[0]
    norms = g0.new_empty((batch,), dtype=acc)
    out = g0.new_empty((batch,) if reduction == 0 else (), dtype=acc)
    return out, norms


# ------------------------------------- Python autograd of the forward ops
# The C++ ops get theirs from csrc/autograd.cpp; the Triton ops register these
# (same formulas), since a Python wrapper costs little next to a Triton launch.
def _batch_view(alpha: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return alpha.reshape(-1, *([1] * (like.dim() - 1)))


def _interpolate_setup(ctx, inputs, output):
    real, fake, alpha = inputs
    ctx.save_for_backward(alpha, real if ctx.needs_input_grad[2] else None,
                          fake if ctx.needs_input_grad[2] else None)


def _interpolate_backward(ctx, grad):
    alpha, real, fake = ctx.saved_tensors
    a = _batch_view(alpha, grad)
    grad_real = (grad * a).to(grad.dtype) if ctx.needs_input_grad[0] else None
    grad_fake = (grad * (1 - a)).to(grad.dtype) if ctx.needs_input_grad[1] else None
    grad_alpha = None
    if ctx.needs_input_grad[2]:
        prod = grad * (real - fake)
        grad_alpha = (prod if prod.dim() == 1 else prod.flatten(1).sum(1)).to(alpha.dtype)
    return grad_real, grad_fake, grad_alpha


def _penalty_forward_setup(ctx, inputs, output):
    grads, inv_scale, weight, center, power, one_sided, reduction = inputs
    _, norms = output
    ctx.mark_non_differentiable(norms)
    ctx.params = (weight, center, power, one_sided, reduction)
    ctx.save_for_backward(norms, inv_scale, *grads)


# ----------------------------------------------------------- penalty backward
def _penalty_backward_fake(grad_out, grads, norms, inv_scale, weight, center, power, one_sided, reduction):
    return [torch.empty_like(g) for g in grads]


def _penalty_backward_setup(ctx, inputs, output):
    grad_out, grads, norms, inv_scale, *params = inputs
    ctx.params = params
    ctx.num_grads = len(grads)
    ctx.save_for_backward(grad_out, inv_scale, *grads)


def _penalty_backward_backward(ctx, d_outputs):
    """Derivative of the backward (rarely needed): differentiate the reference twice."""
    grad_out, inv_scale, *grads = ctx.saved_tensors
    weight, center, power, one_sided, reduction = ctx.params
    create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        go = grad_out.detach().requires_grad_(True)
        gs = [g.detach().requires_grad_(True) for g in grads]
        penalty, _ = reference.penalty_from_grads(gs, weight=weight, center=center, power=power, one_sided=one_sided,
                                                  reduction=_REDUCTION_NAMES[reduction], inv_scale=inv_scale)
        first = torch.autograd.grad(penalty, gs, go, create_graph=True)
        vs = [torch.zeros_like(g) if v is None else v for g, v in zip(gs, d_outputs)]
        second = torch.autograd.grad(first, [go, *gs], vs, allow_unused=True, create_graph=create_graph)
    d_go = second[0] if second[0] is not None else torch.zeros_like(grad_out)
    d_gs = [torch.zeros_like(g) if d is None else d for g, d in zip(grads, second[1:])]
    return d_go, d_gs, None, None, None, None, None, None, None


def _register() -> None:
    torch.library.register_fake("fastgp::interpolate")(_interpolate_fake)
    torch.library.register_fake("fastgp::penalty_forward")(_penalty_forward_fake)
    torch.library.register_fake("fastgp::penalty_backward")(_penalty_backward_fake)
    torch.library.register_autograd("fastgp::penalty_backward", _penalty_backward_backward,
                                    setup_context=_penalty_backward_setup)


if state.loaded:
    _register()


# -------------------------------------------------- entry points of "cpp"
def interpolate(real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    return torch.ops.fastgp.interpolate(real, fake, alpha)


def penalty(grads: Sequence[torch.Tensor], inv_scale: Optional[torch.Tensor], weight: float, center: float,
            power: float, one_sided: bool, reduction: str):
    """Returns (penalty, norms)."""
    grads_list: List[torch.Tensor] = list(grads)
    return torch.ops.fastgp.penalty_forward(grads_list, inv_scale, float(weight), float(center), float(power),
                                            bool(one_sided), REDUCTION_CODES[reduction])
