"""The critic-facing functions: validate, pick a backend, call its kernels.

Path of a tensor: gradient_penalty -> backends.implementation(name) ->
ops (torch.library op) -> C++/CUDA/Triton kernel.
"""

from __future__ import annotations

import math
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


def _check_inputs(xs: Sequence[torch.Tensor], name: str) -> int:
    """Differentiated inputs: floating, one batch size, one device, one dtype
    (their gradients go through one fused kernel call). Returns the batch size."""
    batch = xs[0].shape[0] if xs[0].dim() else 0
    for k, x in enumerate(xs):
        n = name if len(xs) == 1 else f"{name}[{k}]"
        _check_tensor(x, n)
        if x.shape[0] != batch:
            raise ValueError(f"{n} has batch size {x.shape[0]} but {name}[0] has {batch}")
        if x.device != xs[0].device:
            raise ValueError(f"{n} is on {x.device} but {name}[0] is on {xs[0].device}; all inputs must share one "
                             "device")
        if x.dtype != xs[0].dtype:
            raise TypeError(f"{n} has dtype {x.dtype} but {name}[0] has {xs[0].dtype}; the differentiated inputs "
                            "must share one dtype")
    return batch


def _check_pair(reals, fakes) -> int:
    if len(reals) != len(fakes):
        raise ValueError(f"real has {len(reals)} tensors but fake has {len(fakes)}")
    batch = _check_inputs(reals, "real")
    _check_inputs(fakes, "fake")
    for k, (r, f) in enumerate(zip(reals, fakes)):
        rn, fn = ("real", "fake") if len(reals) == 1 else (f"real[{k}]", f"fake[{k}]")
        if r.shape != f.shape:
            raise ValueError(f"{rn} has shape {tuple(r.shape)} but {fn} has shape {tuple(f.shape)}")
        if r.dtype != f.dtype:
            raise TypeError(f"{rn} has dtype {r.dtype} but {fn} has dtype {f.dtype}")
        if r.device != f.device:
            raise ValueError(f"{rn} is on {r.device} and {fn} on {f.device}; all inputs must share one device")
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


def _number(v, name: str, *, minimum: Optional[float] = None, why: str = "") -> float:
    """A finite Python number (not a tensor, not a bool), optionally >= minimum."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise TypeError(f"{name} must be a finite Python number, got {v!r}")
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}{why}, got {v!r}")
    return float(v)


def _check_options(weight, center, power, reduction) -> None:
    if reduction not in reference.REDUCTIONS:
        raise ValueError(f"reduction must be one of {reference.REDUCTIONS}, got {reduction!r}")
    _number(weight, "weight")
    _number(center, "center")
    _number(power, "power", minimum=1, why=" (the penalty must be differentiable)")


def _check_inv_scale(inv_scale, like: torch.Tensor) -> Optional[torch.Tensor]:
    """None, or one floating-point number as a tensor on the gradients' device
    (a constant: the scale is not differentiated)."""
    if inv_scale is None:
        return None
    if not isinstance(inv_scale, torch.Tensor) or not inv_scale.is_floating_point() or inv_scale.numel() != 1:
        raise TypeError("inv_scale must be a floating-point tensor holding one number (1 / the loss scale), got "
                        f"{inv_scale!r}" if not isinstance(inv_scale, torch.Tensor) else
                        f"inv_scale must be a floating-point tensor holding one number, got {inv_scale.dtype} of "
                        f"shape {tuple(inv_scale.shape)}")
    if inv_scale.device != like.device:
        raise ValueError(f"inv_scale is on {inv_scale.device} but the gradients are on {like.device}")
    return inv_scale.detach().reshape(())


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


def _warn_batchnorm(critic, stacklevel: int) -> None:
    """A train-mode BatchNorm couples the samples, so a per-sample penalty is meaningless.
    stacklevel: the user's frame counted from here (1 = this function)."""
    if not isinstance(critic, torch.nn.Module) or not critic.training or critic in _warned_batchnorm:
        return
    _warned_batchnorm.add(critic)
    bn = [n or type(m).__name__ for n, m in critic.named_modules()
          if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training]
    if bn:
        warnings.warn(f"the critic has BatchNorm layers in train mode ({', '.join(bn[:3])}): batch statistics "
                      "couple the samples, which invalidates a per-sample gradient penalty and makes the double "
                      "backward slow; use LayerNorm, GroupNorm or InstanceNorm in the critic instead",
                      UserWarning, stacklevel=stacklevel)


def _scaled(out: torch.Tensor, scaler):
    """AMP (PyTorch's gradient-penalty recipe): differentiate scaler.scale(out), and
    hand 1/scale to the kernel as a device tensor, so the unscale costs no sync."""
    if scaler is None or not scaler.is_enabled():
        return out, None
    if not hasattr(scaler, "scale") or not hasattr(scaler, "_get_scale_async"):
        raise TypeError(f"scaler must be a torch.amp.GradScaler, got {type(scaler).__name__}")
    scaled = scaler.scale(out)  # creates the scale tensor on first use
    scale = scaler._get_scale_async()
    # a no-op on the scaler's own device; a blocking copy (never a racy one) across devices
    return scaled, torch.reciprocal(scale.to(device=out.device, dtype=torch.float32))


def _trainable_leaf_behind(out: torch.Tensor, inputs: Sequence[torch.Tensor]) -> bool:
    """Whether out's autograd graph reaches a leaf requiring grad other than the inputs
    (a parameter). Walks the graph: only called on the error path."""
    ids = {id(x) for x in inputs}
    seen, stack = set(), [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        var = getattr(node, "variable", None)
        if var is not None and id(var) not in ids:
            return True
        stack.extend(n for n, _ in node.next_functions)
    return False


def _check_passthrough(critic_args, critic_kwargs) -> None:
    if not isinstance(critic_args, (tuple, list)):
        raise TypeError("critic_args must be a tuple of extra positional arguments, got "
                        f"{type(critic_args).__name__}; for one label tensor write critic_args=(labels,)")
    if critic_kwargs is not None and not isinstance(critic_kwargs, dict):
        raise TypeError(f"critic_kwargs must be a dict or None, got {type(critic_kwargs).__name__}")


def input_gradients(critic, inputs, critic_args=(), critic_kwargs=None, scaler=None, *, _stacklevel: int = 2):
    """grad_x critic(x, *critic_args, **critic_kwargs) for each x in `inputs` (leaves
    requiring grad), with create_graph=True. Returns (grads, inv_scale): with an
    enabled GradScaler the grads are scaled and inv_scale = 1/scale (a device
    tensor), else inv_scale is None."""
    _check_passthrough(critic_args, critic_kwargs)
    inputs, _ = _as_tuple(inputs, "inputs")
    batch = _check_inputs(inputs, "inputs")
    for k, x in enumerate(inputs):
        if not x.requires_grad:
            raise ValueError(f"inputs[{k}] does not require grad: pass tensors made with .requires_grad_(True), "
                             "the points where the critic's input gradient is taken")
    _warn_batchnorm(critic, _stacklevel + 1)
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
            which = "its input" if len(grads) == 1 else f"input {k}"
            raise RuntimeError(f"the critic's output does not depend on {which}: the gradient penalty is undefined; "
                               "pass only differentiated inputs as real/fake and the rest as critic_args")
    if torch.is_grad_enabled() and not any(g.requires_grad for g in grads):
        trainable = (isinstance(critic, torch.nn.Module) and any(p.requires_grad for p in critic.parameters())) \
            or _trainable_leaf_behind(out, inputs)
        if trainable:
            raise RuntimeError("the input gradient has no autograd graph attached, so the penalty would not train "
                               "the critic (a torch.compile'd critic can do this: PyTorch issue 181581); pass the "
                               "uncompiled critic (e.g. compiled._orig_mod, which shares the parameters) to the "
                               "penalty: PyTorch cannot compile the double backward a gradient penalty needs")
    return grads, inv_scale


def _subset_size(batch: int, batch_fraction: Optional[float], max_samples: Optional[int]) -> int:
    """How many leading samples a penalty regularizes (lazy GP-batch option)."""
    m = batch
    if batch_fraction is not None:
        if isinstance(batch_fraction, bool) or not isinstance(batch_fraction, (int, float)) \
                or not 0 < batch_fraction <= 1:
            raise ValueError(f"batch_fraction must be a number in (0, 1], got {batch_fraction!r}")
        # round() first so that e.g. 0.3 * 10 = 3.0000000000000004 gives 3, not 4
        m = max(1, math.ceil(round(batch_fraction * batch, 9)))
    if max_samples is not None:
        if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1:
            raise ValueError(f"max_samples must be an int >= 1, got {max_samples!r}")
        m = min(m, max_samples)
    return m


def _head(x, batch: int, m: int):
    """x[:m] for a tensor whose dim 0 is the batch; anything else unchanged."""
    if m < batch and isinstance(x, torch.Tensor) and x.dim() > 0 and x.shape[0] == batch:
        return x[:m]
    return x


def _subset_passthrough(critic_args, critic_kwargs, batch: int, m: int):
    if m == batch:
        return critic_args, critic_kwargs
    args = tuple(_head(a, batch, m) for a in critic_args)
    kwargs = None if critic_kwargs is None else {k: _head(v, batch, m) for k, v in critic_kwargs.items()}
    return args, kwargs


def _regularization_setup(batch: int, like: torch.Tensor, critic_args, critic_kwargs, backend: str,
                          batch_fraction, max_samples):
    """What every critic-facing penalty resolves first: the backend, the size m
    of the regularized subset, and the pass-through arguments cut to it."""
    _check_passthrough(critic_args, critic_kwargs)
    impl = implementation(resolve(backend, like.device))
    m = _subset_size(batch, batch_fraction, max_samples)
    args, kwargs = _subset_passthrough(critic_args, critic_kwargs, batch, m)
    return impl, m, args, kwargs


def _subset_alpha(alpha, batch: int, m: int, like: torch.Tensor, generator) -> torch.Tensor:
    """One interpolation weight per regularized sample: the user's (checked against
    the whole batch, then cut to m) or drawn for m samples."""
    if alpha is not None:
        alpha = _alpha(alpha, batch, like, generator)[:m]
    return _alpha(alpha, m, like, generator)


def _penalty_at(critic, inputs, impl, *, weight, center, one_sided, power, critic_args, critic_kwargs, scaler,
                reduction, return_norms, _stacklevel: int = 3):
    """The penalty of critic's input gradient at `inputs` (a tuple of leaves
    requiring grad): the shared tail of every critic-facing penalty."""
    grads, inv_scale = input_gradients(critic, inputs, critic_args, critic_kwargs, scaler,
                                       _stacklevel=_stacklevel + 1)
    penalty, norms = impl.penalty(grads, inv_scale, weight, center, power, one_sided, reduction)
    return (penalty, norms.detach()) if return_norms else penalty


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
    inv_scale = _check_inv_scale(inv_scale, gs[0])
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
                     reduction: str = "mean", return_norms: bool = False, backend: str = "auto",
                     batch_fraction: Optional[float] = None, max_samples: Optional[int] = None):
    """WGAN-GP style penalty: weight * mean_i (||grad_x critic(x_hat_i)||_2 - center)^power
    at x_hat = alpha * real + (1 - alpha) * fake, one alpha per sample.

    Drop-in for the hand-written ``compute_gradient_penalty(D, real, fake)``.
    real/fake are detached: the penalty trains the critic only. Tuples feed a
    multi-input critic (one alpha, one norm over all of them); critic_args and
    critic_kwargs are passed through undifferentiated. With a GradScaler the
    gradient is taken of the scaled output and unscaled inside the fused kernel.

    batch_fraction / max_samples regularize only the first
    m = min(ceil(batch_fraction * B), max_samples) samples, to bound time and
    memory: "mean" is then the mean over those m samples, "none" and the norms
    have length m, and every tensor in critic_args/critic_kwargs whose dim 0 is
    B is cut to its first m rows as well.
    """
    reals, _ = _as_tuple(real, "real")
    fakes, _ = _as_tuple(fake, "fake")
    batch = _check_pair(reals, fakes)
    _check_options(weight, center, power, reduction)
    impl, m, args, kwargs = _regularization_setup(batch, reals[0], critic_args, critic_kwargs, backend,
                                                  batch_fraction, max_samples)
    a = _subset_alpha(alpha, batch, m, reals[0], generator)
    x_hat = tuple(impl.interpolate(r.detach()[:m], f.detach()[:m], a).requires_grad_(True)
                  for r, f in zip(reals, fakes))
    return _penalty_at(critic, x_hat, impl, weight=weight, center=center, one_sided=one_sided, power=power,
                      critic_args=args, critic_kwargs=kwargs, scaler=scaler, reduction=reduction,
                      return_norms=return_norms)
