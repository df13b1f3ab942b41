"""The trainer's regularizers, in one place.

``r1`` and ``lazy_adam`` are the two call sites that move to the fastgp family
helpers (``fastgp.r1_penalty`` and its lazy-regularization helper) once those
land; until then they are built from the public pieces.
"""

from __future__ import annotations

from typing import Iterable, Optional, Tuple

import torch

import fastgp
from fastgp.functional import input_gradients


def r1(critic, real: torch.Tensor, gamma: float, gain: float = 1.0, scaler=None, backend: str = "auto"):
    """(gain * gamma/2 * mean_i ||grad_x critic(x_i)||^2 at the real samples, per-sample norms)."""
    x = real.detach().requires_grad_(True)
    grads, inv_scale = input_gradients(critic, (x,), scaler=scaler)
    return fastgp.penalty_from_grads(grads, center=0.0, weight=gain * gamma / 2, inv_scale=inv_scale,
                                     return_norms=True, backend=backend)


def lazy_adam(lr: float, betas: Tuple[float, float], every: int) -> Tuple[float, Tuple[float, float]]:
    """StyleGAN2's correction for a regularizer applied every k steps as an extra optimizer step:
    the k minibatches take k+1 Adam steps, so lr * k/(k+1) and betas ** (k/(k+1))."""
    if every <= 1:
        return lr, betas
    ratio = every / (every + 1)
    return lr * ratio, (betas[0] ** ratio, betas[1] ** ratio)


def l2_weights(params: Iterable[torch.Tensor], weight: float) -> Optional[torch.Tensor]:
    """weight * sum_W ||W||_2^2 over all tensors, with one multi-tensor norm (no per-parameter Python loop);
    its gradient is 2 * weight * W. None when the weight is 0."""
    params = [p for p in params if p.requires_grad]
    if weight == 0 or not params:
        return None
    norms = torch._foreach_norm(params)
    return weight * torch.stack(norms).square().sum()
