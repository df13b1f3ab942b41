"""R1, R2 and DRAGAN: the rest of the gradient-penalty family, on the same
fused interpolate/penalty ops and the same critic plumbing as gradient_penalty.

R1/R2 (Mescheder et al. 2018; StyleGAN): gamma/2 * mean_i ||grad_x D(x_i)||^2
at real (R1) or fake (R2) samples: center 0, power 2, weight gamma/2.
DRAGAN (Kodali et al. 2017): the two-sided penalty at points between each real
sample and a noise-perturbed copy of it.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import reference
from . import validation as check
from .functional import leading, penalty_at, prepare_penalty, subset_alpha
from .validation import TensorOrTuple


def _zero_centered(critic, x, name, gamma, critic_args, critic_kwargs, scaler, reduction, return_norms, backend,
                   batch_fraction, max_samples):
    options = check.penalty_options(check.real_number(gamma, "gamma") / 2, 0.0, 2.0, False, reduction)
    xs, _ = check.tensors(x, name)
    batch = check.inputs(xs, name)
    impl, m, args, kwargs = prepare_penalty(batch, xs[0], critic_args, critic_kwargs, scaler, return_norms, backend,
                                            batch_fraction, max_samples)
    leaves = tuple(leading(t, m).requires_grad_(True) for t in xs)
    return penalty_at(critic, leaves, impl, options, critic_args=args, critic_kwargs=kwargs, scaler=scaler,
                      return_norms=return_norms, _stacklevel=4)


def r1_penalty(critic, real: TensorOrTuple, *, gamma: float = 10.0, critic_args=(), critic_kwargs=None, scaler=None,
               reduction: str = "mean", return_norms: bool = False, backend: str = "auto",
               batch_fraction: Optional[float] = None, max_samples: Optional[int] = None):
    """R1: gamma/2 * mean_i ||grad_x critic(real_i)||_2^2 (StyleGAN used gamma = 10 on
    FFHQ; the best value depends on the data).

    `real` is detached (a tuple for a multi-input critic); the other arguments are
    gradient_penalty's. With batch_fraction/max_samples the mean is over the
    regularized subset. For StyleGAN2's lazy schedule see fastgp.LazyRegularizer.
    """
    return _zero_centered(critic, real, "real", gamma, critic_args, critic_kwargs, scaler, reduction, return_norms,
                          backend, batch_fraction, max_samples)


def r2_penalty(critic, fake: TensorOrTuple, *, gamma: float = 10.0, critic_args=(), critic_kwargs=None, scaler=None,
               reduction: str = "mean", return_norms: bool = False, backend: str = "auto",
               batch_fraction: Optional[float] = None, max_samples: Optional[int] = None):
    """R2: r1_penalty on generated samples (detached, so it trains the critic only)."""
    return _zero_centered(critic, fake, "fake", gamma, critic_args, critic_kwargs, scaler, reduction, return_norms,
                          backend, batch_fraction, max_samples)


def _perturb(x: torch.Tensor, noise_scale: float, generator) -> torch.Tensor:
    """x + noise_scale * std(x) * U[0, 1) per element, with std over the whole
    tensor (population std, as the DRAGAN authors' code); computed in the
    accumulation dtype."""
    acc = reference.accumulation_dtype(x.dtype)
    xa = x.to(acc)
    noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=acc)
    return (xa + (noise_scale * xa.std(correction=0)) * noise).to(x.dtype)


def dragan_penalty(critic, real: TensorOrTuple, *, weight: float = 1.0, center: float = 1.0, noise_scale: float = 0.5,
                   alpha: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None, critic_args=(),
                   critic_kwargs=None, scaler=None, reduction: str = "mean", return_norms: bool = False,
                   backend: str = "auto", batch_fraction: Optional[float] = None, max_samples: Optional[int] = None):
    """DRAGAN: weight * mean_i (||grad_x critic(x_hat_i)||_2 - center)^2 with
    x_hat_i = x_i + alpha_i * (x_p_i - x_i), x_p = x + noise_scale * std(x) * U[0, 1)
    per element (std over the whole batch tensor), alpha_i ~ U[0, 1) per sample.

    The DRAGAN paper uses weight (lambda) 10 and noise_scale (C) 0.5; weight
    defaults to 1.0 as in every fastgp penalty, so pass weight=10.0 for the
    paper's setting. With a generator, alpha is drawn first, then the noise of
    each input in order. With batch_fraction/max_samples, std and the mean are
    over the regularized subset.
    """
    xs, _ = check.tensors(real, "real")
    batch = check.inputs(xs, "real")
    options = check.penalty_options(weight, center, 2.0, False, reduction)
    noise_scale = check.real_number(noise_scale, "noise_scale", minimum=0.0)
    impl, m, args, kwargs = prepare_penalty(batch, xs[0], critic_args, critic_kwargs, scaler, return_norms, backend,
                                            batch_fraction, max_samples)
    a = subset_alpha(alpha, batch, m, xs[0], generator)
    x = tuple(leading(t, m) for t in xs)
    perturbed = tuple(_perturb(t, noise_scale, generator) for t in x)
    # alpha * x_p + (1 - alpha) * x = x + alpha * (x_p - x)
    x_hat = tuple(impl.interpolate(p, t, a).requires_grad_(True) for p, t in zip(perturbed, x))
    return penalty_at(critic, x_hat, impl, options, critic_args=args, critic_kwargs=kwargs, scaler=scaler,
                      return_norms=return_norms)
