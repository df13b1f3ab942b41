"""The readable pure-PyTorch gradient penalty: the oracle of the tests, the
``"torch"`` backend, and the benchmarks' baselines (their eager penalty is
``handwritten_penalty``, the formula users write). One copy; keep it plain.

Per sample i (dim 0): n_i = ||(g_i^1, ..., g_i^K)||_2 over every non-batch dim
of every differentiated input, times ``inv_scale`` when gradients are scaled;
penalty_i = |n_i - center|^power, or max(0, n_i - center)^power if one_sided.
Norms and penalties are computed in float64 (rows of float64 inputs scaled by
their largest |x|) and returned in the accumulation dtype (float32, float64 for
float64 inputs): at least as accurate as any backend, and finite whenever the
true value is representable in that dtype.
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
    """The gradients of each sample as one float64 row, shape (B, N)."""
    batch = grads[0].shape[0]
    # explicit row size: reshape(batch, -1) is ambiguous for rows of no elements
    rows = [g.reshape(batch, math.prod(g.shape[1:])).to(torch.float64) for g in grads]
    return rows[0] if len(rows) == 1 else torch.cat(rows, dim=1)


def _scaled_rows(grads: Sequence[torch.Tensor], inv_scale: Optional[torch.Tensor]):
    """(rows, scale) with g_i * inv_scale == scale_i * rows_i, in float64.

    float64 squares hold float16/bfloat16/float32 squares exactly in range, so
    those rows are taken as they are. float64 inputs have no wider type: each of
    their rows is divided by its largest |x| (as BLAS nrm2 does), so its squares
    neither overflow (|x| > 1e154) nor underflow (|x| < 1e-154). A row of zeros,
    infs or NaNs keeps scale 1, so inf and NaN propagate as they are. Gradients
    are autograd's through this scaling: for float64 inputs they are exact
    wherever phi'(n) * scale (and, for center 0 power 2, scale**2) is a normal
    float64 number."""
    rows = _flat(grads)
    scale = torch.ones(rows.shape[0], dtype=torch.float64, device=rows.device)
    if grads[0].dtype == torch.float64 and rows.shape[1] > 0:
        largest = rows.detach().abs().amax(dim=1)
        scale = torch.where(torch.isfinite(largest) & (largest > 0), largest, scale)
        rows = rows / scale[:, None]
    if inv_scale is not None:
        scale = scale * inv_scale.to(torch.float64)
    return rows, scale


def _norms(rows: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return scale * torch.linalg.vector_norm(rows, dim=1)  # zero subgradient at 0: no NaN


def grad_norms(grads: Sequence[torch.Tensor], inv_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-sample L2 norm over all non-batch dims of all tensors, shape (B,), in
    the accumulation dtype. Computed in float64 (scaled for float64 inputs), so
    it is finite and accurate whenever the true norm is representable."""
    return _norms(*_scaled_rows(grads, inv_scale)).to(accumulation_dtype(grads[0].dtype))


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
    """Returns (penalty, per-sample norms), both in the accumulation dtype;
    computed in float64 throughout."""
    rows, scale = _scaled_rows(grads, inv_scale)
    norms = _norms(rows, scale)
    if center == 0 and power == 2:
        # ||g||^2 written as a sum of squares is smooth at g = 0 (R1/R2);
        # scale * (scale * sum) overflows or underflows only where the result does.
        per_sample = scale * (scale * rows.square().sum(dim=1))
    else:
        per_sample = per_sample_penalty(norms, center, power, one_sided)
    acc = accumulation_dtype(grads[0].dtype)
    return reduce(per_sample, weight, reduction).to(acc), norms.to(acc)


def handwritten_penalty(g: torch.Tensor, weight: float = 1.0, center: float = 1.0) -> torch.Tensor:
    """The widespread hand-written eager formula,
    ``weight * ((g.flatten(1).norm(2, dim=1) - center) ** 2).mean()``, accumulated
    in the input's accumulation dtype (so its norm overflows above about 1e19 in
    float32, where the oracle's does not). The benchmarks' "eager" baseline
    only, the code fastgp is timed against; never an oracle."""
    norms = g.flatten(1).norm(2, dim=1, dtype=accumulation_dtype(g.dtype))
    return weight * ((norms - center) ** 2).mean()


def handwritten_gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, *, weight: float = 1.0,
                                 center: float = 1.0, alpha: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The whole penalty as users write it by hand (the README's "Drop-in" code):
    the benchmarks' eager baseline for a penalty step, never an oracle. Unlike
    gradient_penalty below it takes the norm with handwritten_penalty, in the
    input's accumulation dtype."""
    if alpha is None:
        alpha = torch.rand(real.shape[0], device=real.device)
    a = alpha.to(real.dtype).reshape(-1, *([1] * (real.dim() - 1)))
    x_hat = (a * real.detach() + (1 - a) * fake.detach()).requires_grad_(True)
    out = critic(x_hat)
    (grad,) = torch.autograd.grad(out, x_hat, torch.ones_like(out), create_graph=True)
    return handwritten_penalty(grad, weight, center)


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
