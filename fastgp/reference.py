"""The readable pure-PyTorch gradient penalty: the oracle of the tests, the
baseline of the benchmarks and the ``"torch"`` backend. One copy; keep it plain.

Per sample i (dim 0): n_i = ||(g_i^1, ..., g_i^K)||_2 over every non-batch dim
of every differentiated input, times ``inv_scale`` when gradients are scaled;
penalty_i = |n_i - center|^power, or max(0, n_i - center)^power if one_sided.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

REDUCTIONS = ("mean", "sum", "none")


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; everything else accumulates in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def sample_alpha(batch: int, like: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """One interpolation weight per sample, U[0, 1), shape (B,)."""
    return torch.rand(batch, generator=generator, device=like.device, dtype=accumulation_dtype(like.dtype))


def interpolate(real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """alpha_i * real_i + (1 - alpha_i) * fake_i with alpha of shape (B,)."""
    acc = accumulation_dtype(real.dtype)
    a = alpha.to(acc).reshape(-1, *([1] * (real.dim() - 1)))
    return (a * real.to(acc) + (1 - a) * fake.to(acc)).to(real.dtype)


def _flat(grads: Sequence[torch.Tensor]) -> torch.Tensor:
    batch = grads[0].shape[0]
    acc = accumulation_dtype(grads[0].dtype)
    # explicit row size: reshape(batch, -1) is ambiguous for rows of no elements
    return torch.cat([g.reshape(batch, math.prod(g.shape[1:])).to(acc) for g in grads], dim=1)


def grad_norms(grads: Sequence[torch.Tensor], inv_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-sample L2 norm over all non-batch dims of all tensors, shape (B,)."""
    norms = torch.linalg.vector_norm(_flat(grads), dim=1)  # zero subgradient at 0: no NaN
    return norms if inv_scale is None else norms * inv_scale.to(norms.dtype)


def per_sample_penalty(norms: torch.Tensor, center: float = 1.0, power: float = 2.0, one_sided: bool = False):
    gap = norms - center
    if one_sided:
        gap = gap.clamp(min=0)
    return gap.abs().pow(power)


def reduce(per_sample: torch.Tensor, weight: float, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return weight * per_sample.mean()
    if reduction == "sum":
        return weight * per_sample.sum()
    return weight * per_sample


def penalty_from_grads(
    grads: Sequence[torch.Tensor],
    *,
    weight: float = 1.0,
    center: float = 1.0,
    one_sided: bool = False,
    power: float = 2.0,
    reduction: str = "mean",
    inv_scale: Optional[torch.Tensor] = None,
):
    """Returns (penalty, per-sample norms)."""
    norms = grad_norms(grads, inv_scale)
    if center == 0 and power == 2:
        # ||g||^2 written as a sum of squares is smooth at g = 0 (R1/R2).
        flat = _flat(grads)
        if inv_scale is not None:
            flat = flat * inv_scale.to(flat.dtype)
        per_sample = flat.square().sum(dim=1)
    else:
        per_sample = per_sample_penalty(norms, center, power, one_sided)
    return reduce(per_sample, weight, reduction), norms


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, *, weight: float = 1.0, center: float = 1.0,
                     one_sided: bool = False, power: float = 2.0, alpha: Optional[torch.Tensor] = None,
                     reduction: str = "mean"):
    """The hand-written WGAN-GP penalty, done right: per-sample alpha, per-sample
    norm over every non-batch dim. Single-input critics; returns the penalty."""
    if alpha is None:
        alpha = sample_alpha(real.shape[0], real)
    x_hat = interpolate(real.detach(), fake.detach(), alpha).requires_grad_(True)
    out = critic(x_hat)
    (grad,) = torch.autograd.grad(out, x_hat, torch.ones_like(out), create_graph=True)
    penalty, _ = penalty_from_grads([grad], weight=weight, center=center, one_sided=one_sided, power=power,
                                    reduction=reduction)
    return penalty
