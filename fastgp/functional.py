"""The critic-facing functions: check the arguments (validation.py), pick the
backend (backends/), call its ops.

Path of a tensor: gradient_penalty (here) -> the backend module
(backends/cpp.py: the op itself) -> the registered op -> the C++/CUDA or
Triton kernel.
"""

from __future__ import annotations

import warnings
import weakref
from typing import Optional, Sequence

import torch

from . import validation as check
from .backends import Backend, backend_for
from .validation import TensorOrTuple

# The largest power of two a float16 holds (its max is 65504): an fp16 critic
# output's cotangent must not exceed it, or the whole input gradient is inf.
_FLOAT16_SAFE_SCALE = 2.0 ** 15

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
    """AMP (PyTorch's gradient-penalty recipe): differentiate scale * out, and
    hand 1/scale to the kernel as a device tensor, so the unscale costs no sync.
    The product is float32, and for a float16 output the scale is capped at
    2^15: the output's cotangent is the scale, and the GradScaler's default
    2^16 is inf in float16."""
    if scaler is None or not scaler.is_enabled():
        return out, None
    scaled = scaler.scale(out)  # creates the scale tensor on first use
    scale = scaler._get_scale_async().to(device=out.device, dtype=torch.float32)  # a no-op on the scaler's device
    if out.dtype == torch.float16:
        scale = scale.clamp(max=_FLOAT16_SAFE_SCALE)
        scaled = out.float() * scale
    return scaled, torch.reciprocal(scale)


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


def input_gradients(critic, inputs, critic_args=(), critic_kwargs=None, scaler=None, *, _stacklevel: int = 2):
    """grad_x critic(x, *critic_args, **critic_kwargs) for each x in `inputs` (leaves
    requiring grad), with create_graph=True. Returns (grads, inv_scale): with an
    enabled GradScaler the grads are scaled and inv_scale = 1/scale (a device
    tensor), else inv_scale is None."""
    check.passthrough(critic_args, critic_kwargs)
    check.grad_scaler(scaler)
    inputs, _ = check.tensors(inputs, "inputs")
    batch = check.inputs(inputs, "inputs")
    for k, x in enumerate(inputs):
        if not x.requires_grad:
            raise ValueError(f"inputs[{k}] does not require grad: pass tensors made with .requires_grad_(True), "
                             "the points where the critic's input gradient is taken")
    return _input_gradients(critic, inputs, batch, critic_args, critic_kwargs, scaler, _stacklevel + 1)


def _input_gradients(critic, inputs, batch: int, critic_args, critic_kwargs, scaler, _stacklevel: int):
    """input_gradients for arguments already checked (the penalties built the inputs themselves)."""
    _warn_batchnorm(critic, _stacklevel + 1)
    out = critic(*inputs, *critic_args, **(critic_kwargs or {}))
    check.critic_output(out, batch)
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


# ------------------------------------- what every critic-facing penalty shares
def _head(x, batch: int, m: int):
    """x[:m] for a tensor whose dim 0 is the batch; anything else unchanged."""
    if isinstance(x, torch.Tensor) and x.dim() > 0 and x.shape[0] == batch:
        return x[:m]
    return x


def prepare_penalty(batch: int, like: torch.Tensor, critic_args, critic_kwargs, scaler, return_norms, backend: str,
                    batch_fraction, max_samples):
    """What every critic-facing penalty settles before it runs the critic: the
    checked pass-through arguments, scaler and return_norms, the backend, and
    the size m of the regularized subset (with the pass-through arguments cut
    to it). Returns (backend module, m, critic_args, critic_kwargs)."""
    check.passthrough(critic_args, critic_kwargs)
    check.grad_scaler(scaler)
    check.boolean(return_norms, "return_norms")
    impl = backend_for(backend, like.device)
    m = check.subset_size(batch, batch_fraction, max_samples)
    if m < batch:
        critic_args = tuple(_head(a, batch, m) for a in critic_args)
        if critic_kwargs is not None:
            critic_kwargs = {k: _head(v, batch, m) for k, v in critic_kwargs.items()}
    return impl, m, critic_args, critic_kwargs


def subset_alpha(alpha, batch: int, m: int, like: torch.Tensor, generator) -> torch.Tensor:
    """One interpolation weight per regularized sample: the user's (checked against
    the whole batch, then cut to m) or drawn for m samples."""
    if alpha is None:
        return check.alpha(None, m, like, generator)
    a = check.alpha(alpha, batch, like, generator)
    return a if m == batch else a[:m]


def leading(x: torch.Tensor, m: int) -> torch.Tensor:
    """x detached (the penalty trains the critic only), cut to its first m samples."""
    x = x.detach()
    return x if x.shape[0] == m else x[:m]


def _with_norms(penalty: torch.Tensor, norms: torch.Tensor, return_norms: bool):
    """penalty, or (penalty, the norms detached) with return_norms."""
    if not return_norms:
        return penalty
    return penalty, norms.detach()


def penalty_at(critic, inputs, impl: Backend, options, *, critic_args, critic_kwargs, scaler, return_norms,
               _stacklevel: int = 3):
    """The penalty of critic's input gradient at `inputs` (a tuple of leaves
    requiring grad), with `options` = (weight, center, power, one_sided,
    reduction code): the shared tail of every critic-facing penalty."""
    # prepare_penalty checked the pass-through arguments and the scaler, and the
    # inputs are the penalty's own leaves: no second round of checks
    grads, inv_scale = _input_gradients(critic, inputs, inputs[0].shape[0], critic_args, critic_kwargs, scaler,
                                        _stacklevel + 1)
    penalty, norms = impl.penalty_forward(list(grads), inv_scale, *options)
    return _with_norms(penalty, norms, return_norms)


# -------------------------------------------------------------- public API
def interpolate(real: TensorOrTuple, fake: TensorOrTuple, alpha: Optional[torch.Tensor] = None, *,
                generator: Optional[torch.Generator] = None, backend: str = "auto"):
    """alpha_i * real_i + (1 - alpha_i) * fake_i with one alpha per sample
    (drawn from U[0, 1) when not given). Tuples are interpolated with the same alpha."""
    reals, multi = check.tensors(real, "real")
    fakes, _ = check.tensors(fake, "fake")
    batch = check.pair(reals, fakes)
    r0 = reals[0]
    impl = backend_for(backend, r0.device)
    a = check.alpha(alpha, batch, r0, generator)
    if not multi:
        return impl.interpolate(r0, fakes[0], a)
    return tuple(impl.interpolate(r, f, a) for r, f in zip(reals, fakes))


def penalty_from_grads(grads: TensorOrTuple, *, weight: float = 1.0, center: float = 1.0, one_sided: bool = False,
                       power: float = 2.0, reduction: str = "mean", inv_scale: Optional[torch.Tensor] = None,
                       return_norms: bool = False, backend: str = "auto"):
    """weight * reduce_i phi(||g_i||) from input gradients (one tensor or a tuple
    sharing the batch dim). With return_norms, also the detached per-sample norms."""
    gs = check.grads_list(grads)
    options = check.penalty_options(weight, center, power, one_sided, reduction)
    return_norms = check.boolean(return_norms, "return_norms")
    g0 = gs[0]
    scale = check.inv_scale(inv_scale, g0)
    penalty, norms = backend_for(backend, g0.device).penalty_forward(gs, scale, *options)
    return _with_norms(penalty, norms, return_norms)


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
    reals, _ = check.tensors(real, "real")
    fakes, _ = check.tensors(fake, "fake")
    batch = check.pair(reals, fakes)
    options = check.penalty_options(weight, center, power, one_sided, reduction)
    r0 = reals[0]
    impl, m, args, kwargs = prepare_penalty(batch, r0, critic_args, critic_kwargs, scaler, return_norms, backend,
                                            batch_fraction, max_samples)
    a = subset_alpha(alpha, batch, m, r0, generator)
    x_hat = tuple(impl.interpolate(leading(r, m), leading(f, m), a).requires_grad_(True)
                  for r, f in zip(reals, fakes))
    return penalty_at(critic, x_hat, impl, options, critic_args=args, critic_kwargs=kwargs, scaler=scaler,
                      return_norms=return_norms)
