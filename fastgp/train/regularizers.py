"""The trainer's regularizers, in one place: thin calls into fastgp's family
helpers (R1, R2, the lazy Adam correction) and the L2 weight penalty."""

from __future__ import annotations

from typing import Iterable, Optional, Tuple

import torch

import fastgp


def r1(critic, real: torch.Tensor, gamma: float, gain: float = 1.0, scaler=None, backend: str = "auto",
       batch_fraction: Optional[float] = None, critic_args=()):
    """(gain * gamma/2 * mean_i ||grad_x critic(x_i)||^2 at the real samples, per-sample norms)."""
    return fastgp.r1_penalty(critic, real, gamma=gain * gamma, scaler=scaler, return_norms=True, backend=backend,
                             batch_fraction=batch_fraction, critic_args=critic_args)


def r2(critic, fake: torch.Tensor, gamma: float, gain: float = 1.0, scaler=None, backend: str = "auto",
       batch_fraction: Optional[float] = None, critic_args=()):
    """R1's formula at the generated samples (R3GAN regularizes both)."""
    return fastgp.r2_penalty(critic, fake, gamma=gain * gamma, scaler=scaler, return_norms=True, backend=backend,
                             batch_fraction=batch_fraction, critic_args=critic_args)


def lazy_adam(lr: float, betas: Tuple[float, float], every: int) -> Tuple[float, Tuple[float, float]]:
    """StyleGAN2's correction for a regularizer applied every k steps as an extra optimizer step."""
    if every <= 1:
        return lr, betas
    return fastgp.lazy_adam_hparams(lr, betas, every)


def l2_weights(params: Iterable[torch.Tensor], weight: float) -> Optional[torch.Tensor]:
    """weight * sum_W ||W||_2^2 over all tensors, with one multi-tensor norm (no per-parameter Python loop);
    its gradient is 2 * weight * W. None when the weight is 0."""
    params = [p for p in params if p.requires_grad]
    if weight == 0 or not params:
        return None
    norms = torch._foreach_norm(params)
    return weight * torch.stack(norms).square().sum()
