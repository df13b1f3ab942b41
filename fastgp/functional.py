"""The critic-facing functions: validate, pick a backend, call its kernels.

Path of a tensor: gradient_penalty -> backends.implementation(name) ->
ops (torch.library op) -> C++/CUDA/Triton kernel.
"""

from __future__ import annotations

import warnings
import weakref
from typing import Optional, Sequence, Tuple, Union

import torch

from . import reference
from .backends import implementation, resolve

TensorOrTuple = Union[torch.Tensor, Sequence[torch.Tensor]]
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# ------------------------------------------------------------------ checks
def _as_tuple(x: TensorOrTuple, name: str) -> Tuple[Tuple[torch.Tensor, ...], bool]:
    if isinstance(x, torch.Tensor):
        return (x,), False
    if isinstance(x, (tuple, list)) and x and all(isinstance(t, torch.Tensor) for t in x):
        return tuple(x), True
    raise TypeError(f"{name} must be a tensor or a non-empty tuple of tensors, got {type(x).__name__}")


def _check_tensor(t: torch.Tensor, name: str) -> None:
    if t.dtype not in _FLOATS:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {t.dtype}")
    if t.dim() < 1:
        raise ValueError(f"{name} must have a batch dimension (dim 0), got a 0-d tensor")
    if t.shape[0] == 0:
        raise ValueError(f"{name} has an empty batch (shape {tuple(t.shape)})")


def _check_pair(reals, fakes) -> int:
    if len(reals) != len(fakes):
        raise ValueError(f"real has {len(reals)} tensors but fake has {len(fakes)}")
    batch = reals[0].shape[0] if reals[0].dim() else 0
    for k, (r, f) in enumerate(zip(reals, fakes)):
        rn, fn = ("real", "fake") if len(reals) == 1 else (f"real[{k}]", f"fake[{k}]")
        _check_tensor(r, rn)
        _check_tensor(f, fn)
        if r.shape != f.shape:
            raise ValueError(f"{rn} has shape {tuple(r.shape)} but {fn} has shape {tuple(f.shape)}")
        if r.dtype != f.dtype:
            raise TypeError(f"{rn} has dtype {r.dtype} but {fn} has dtype {f.dtype}")
        if r.device != f.device or r.device != reals[0].device:
            raise ValueError(f"{rn} is on {r.device} and {fn} on {f.device}; all inputs must share one device")
        if r.shape[0] != batch:
            raise ValueError(f"{rn} has batch size {r.shape[0]} but real[0] has {batch}")
    return batch


def _check_grads(grads: Sequence[torch.Tensor]) -> None:
    for k, g in enumerate(grads):
        name = "grads" if len(grads) == 1 else f"grads[{k}]"
        _check_tensor(g, name)
        if g.shape[0] != grads[0].shape[0]:
            raise ValueError(f"{name} has batch size {g.shape[0]} but grads[0] has {grads[0].shape[0]}")
        if g.dtype != grads[0].dtype or g.device != grads[0].device:
            raise ValueError(f"{name} is {g.dtype} on {g.device} but grads[0] is {grads[0].dtype} on "
                             f"{grads[0].device}; all gradients must share dtype and device")


def _check_options(weight, center, power, reduction) -> None:
    if reduction not in reference.REDUCTIONS:
        raise ValueError(f"reduction must be one of {reference.REDUCTIONS}, got {reduction!r}")
    if not (isinstance(power, (int, float)) and power >= 1):
        raise ValueError(f"power must be a number >= 1 (the penalty must be differentiable), got {power!r}")
    for name, v in (("weight", weight), ("center", center)):
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise TypeError(f"{name} must be a Python number, got {type(v).__name__}")


def _alpha(alpha: Optional[torch.Tensor], batch: int, like: torch.Tensor, generator) -> torch.Tensor:
    if alpha is None:
        return reference.sample_alpha(batch, like, generator)
    if not isinstance(alpha, torch.Tensor):
        raise TypeError(f"alpha must be a tensor of shape ({batch},) or ({batch}, 1, ..., 1), got {type(alpha).__name__}")
    if alpha.numel() != batch or (alpha.dim() > 0 and alpha.shape[0] != batch) or alpha.dim() == 0 or \
            any(s != 1 for s in alpha.shape[1:]):
        raise ValueError(f"alpha must have shape ({batch},) or ({batch}, 1, ..., 1): one weight per sample, "
                         f"got {tuple(alpha.shape)}")
    if not alpha.is_floating_point():
        raise TypeError(f"alpha must be floating point, got {alpha.dtype}")
    if alpha.device != like.device:
        raise ValueError(f"alpha is on {alpha.device} but real is on {like.device}")
    return alpha.reshape(batch)


def _check_critic_output(out, batch: int) -> None:
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the critic must return a tensor of shape ({batch},) or ({batch}, 1), got {type(out).__name__}")
    if tuple(out.shape) not in ((batch,), (batch, 1)):
        raise ValueError(f"the critic's output must have shape ({batch},) or ({batch}, 1): one score per sample, "
                         f"got {tuple(out.shape)}")


_warned_batchnorm: "weakref.WeakSet[torch.nn.Module]" = weakref.WeakSet()


def _warn_batchnorm(critic) -> None:
    """A train-mode BatchNorm couples the samples, so a per-sample penalty is meaningless."""
    if not isinstance(critic, torch.nn.Module) or not critic.training or critic in _warned_batchnorm:
        return
    _warned_batchnorm.add(critic)
    bn = [n for n, m in critic.named_modules()
          if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training]
    if bn:
        warnings.warn(f"the critic has BatchNorm layers in train mode ({', '.join(bn[:3])}): batch statistics "
                      "couple the samples, which invalidates a per-sample gradient penalty and makes the double "
                      "backward slow; use LayerNorm, GroupNorm or InstanceNorm in the critic instead",
                      UserWarning, stacklevel=3)


def _scaled(out: torch.Tensor, scaler):
    """AMP: differentiate the scaled output; hand 1/scale to the kernel as a device tensor (no sync)."""
    if scaler is None or not scaler.is_enabled():
        return out, None
    scaled = scaler.scale(out)
    return scaled, torch.reciprocal(scaler._get_scale_async().float())


def input_gradients(critic, inputs, critic_args=(), critic_kwargs=None, scaler=None):
    """grad_x critic(x) for each x in `inputs` with create_graph=True; returns (grads, inv_scale)."""
    batch = inputs[0].shape[0]
    _warn_batchnorm(critic)
    out = critic(*inputs, *critic_args, **(critic_kwargs or {}))
    _check_critic_output(out, batch)
    target, inv_scale = _scaled(out, scaler)
    if not target.requires_grad:
        raise RuntimeError("the critic's output does not depend on its input (no autograd graph): the gradient "
                           "penalty is undefined; check that the critic uses its input and is not run under "
                           "torch.no_grad()")
    grads = torch.autograd.grad(target, inputs, grad_outputs=torch.ones_like(target), create_graph=True,
                                allow_unused=True)
    for k, g in enumerate(grads):
        if g is None:
            raise RuntimeError(f"the critic's output does not depend on input {k}: the gradient penalty is undefined")
    if torch.is_grad_enabled() and not any(g.requires_grad for g in grads) and isinstance(critic, torch.nn.Module) \
            and any(p.requires_grad for p in critic.parameters()):
        raise RuntimeError("the input gradient has no autograd graph attached, so the penalty would not train the "
                           "critic (a torch.compile'd critic can do this: PyTorch issue 181581); run the critic "
                           "eagerly for the penalty, or compile only its submodules")
    return grads, inv_scale


# -------------------------------------------------------------- public API
def interpolate(real: TensorOrTuple, fake: TensorOrTuple, alpha: Optional[torch.Tensor] = None, *,
                generator: Optional[torch.Generator] = None, backend: str = "auto"):
    """alpha_i * real_i + (1 - alpha_i) * fake_i with one alpha per sample
    (drawn from U[0, 1) when not given). Tuples are interpolated with the same alpha."""
    reals, multi = _as_tuple(real, "real")
    fakes, _ = _as_tuple(fake, "fake")
    batch = _check_pair(reals, fakes)
    impl = implementation(resolve(backend, reals[0].device))
    a = _alpha(alpha, batch, reals[0], generator)
    out = tuple(impl.interpolate(r, f, a) for r, f in zip(reals, fakes))
    return out if multi else out[0]


def penalty_from_grads(grads: TensorOrTuple, *, weight: float = 1.0, center: float = 1.0, one_sided: bool = False,
                       power: float = 2.0, reduction: str = "mean", inv_scale: Optional[torch.Tensor] = None,
                       return_norms: bool = False, backend: str = "auto"):
    """weight * reduce_i phi(||g_i||) from input gradients (one tensor or a tuple
    sharing the batch dim). With return_norms, also the detached per-sample norms."""
    gs, _ = _as_tuple(grads, "grads")
    _check_grads(gs)
    _check_options(weight, center, power, reduction)
    impl = implementation(resolve(backend, gs[0].device))
    penalty, norms = impl.penalty(gs, inv_scale, weight, center, power, one_sided, reduction)
    return (penalty, norms.detach()) if return_norms else penalty


def grad_norms(grads: TensorOrTuple, *, inv_scale: Optional[torch.Tensor] = None, backend: str = "auto"):
    """Detached per-sample L2 norms over every non-batch dim, shape (B,),
    float32 (float64 for float64 gradients)."""
    _, norms = penalty_from_grads(grads, reduction="none", inv_scale=inv_scale, return_norms=True, backend=backend)
    return norms


def gradient_penalty(critic, real: TensorOrTuple, fake: TensorOrTuple, *, weight: float = 1.0, center: float = 1.0,
                     one_sided: bool = False, power: float = 2.0, alpha: Optional[torch.Tensor] = None,
                     generator: Optional[torch.Generator] = None, critic_args=(), critic_kwargs=None, scaler=None,
                     reduction: str = "mean", return_norms: bool = False, backend: str = "auto"):
    """WGAN-GP style penalty: weight * mean_i (||grad_x critic(x_hat_i)||_2 - center)^power
    at x_hat = alpha * real + (1 - alpha) * fake, one alpha per sample.

    Drop-in for the hand-written ``compute_gradient_penalty(D, real, fake)``.
    real/fake are detached: the penalty trains the critic only. Tuples feed a
    multi-input critic (one alpha, one norm over all of them); critic_args and
    critic_kwargs are passed through undifferentiated. With a GradScaler the
    gradient is taken of the scaled output and unscaled inside the fused kernel.
    """
    reals, _ = _as_tuple(real, "real")
    fakes, _ = _as_tuple(fake, "fake")
    batch = _check_pair(reals, fakes)
    _check_options(weight, center, power, reduction)
    name = resolve(backend, reals[0].device)
    impl = implementation(name)
    a = _alpha(alpha, batch, reals[0], generator)
    x_hat = tuple(impl.interpolate(r.detach(), f.detach(), a).requires_grad_(True) for r, f in zip(reals, fakes))
    grads, inv_scale = input_gradients(critic, x_hat, critic_args, critic_kwargs, scaler)
    penalty, norms = impl.penalty(grads, inv_scale, weight, center, power, one_sided, reduction)
    return (penalty, norms.detach()) if return_norms else penalty
