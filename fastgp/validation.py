"""Checks of the public functions' arguments, defined once and shared by
functional.py, family.py and lazy.py. Each raises a TypeError (wrong kind of
value) or a ValueError (right kind, wrong value) that names the argument and
what it expects; each returns the value in the form the callers use.

Cheap by design: the common case (Python numbers, one tensor) is settled by a
few attribute reads before the slower general checks run. The op-level checks
that direct calls of the ops meet are in backends/shared.py and csrc/checks.h.
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import List, Optional, Sequence, Tuple, Union

import torch

from . import reference
from .backends.shared import FLOAT_DTYPES, REDUCTION_CODES

TensorOrTuple = Union[torch.Tensor, Sequence[torch.Tensor]]


# ------------------------------------------------------------------- numbers
def _kind(v) -> str:
    return f"{v!r} ({type(v).__name__})"


def real_number(v, name: str, *, minimum: Optional[float] = None, why: str = "") -> float:
    """A finite real number: int, float, or any numbers.Real (NumPy scalars,
    fractions), not a bool and not a tensor; optionally >= minimum."""
    if type(v) is not float:  # Python floats, the common case, need no conversion
        if type(v) is not int and (isinstance(v, bool) or not isinstance(v, numbers.Real)):
            raise TypeError(f"{name} must be a finite real number (int, float or a NumPy scalar), got {_kind(v)}")
        try:
            v = float(v)
        except OverflowError:  # an int beyond the float range
            raise TypeError(f"{name} must be a finite real number, got {v!r}") from None
    if not -math.inf < v < math.inf:  # not math.isfinite: this also traces (a SymFloat under torch.compile)
        raise TypeError(f"{name} must be a finite real number, got {v!r}")
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}{why}, got {v!r}")
    return v


def integer(v, name: str, *, minimum: int) -> int:
    """An integer >= minimum: int or anything with __index__ (NumPy integers), not a bool."""
    if type(v) is not int:
        if isinstance(v, bool):
            raise TypeError(f"{name} must be an int >= {minimum}, got {_kind(v)}")
        try:
            v = operator.index(v)
        except TypeError:
            raise TypeError(f"{name} must be an int >= {minimum}, got {_kind(v)}") from None
    if v < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {v}")
    return v


def boolean(v, name: str) -> bool:
    """True or False (a NumPy bool too); never a string or a number taken by truthiness."""
    if v is True or v is False:
        return v
    if type(v).__module__ == "numpy" and type(v).__name__ in ("bool_", "bool"):
        return bool(v)
    raise TypeError(f"{name} must be a bool (True or False), got {_kind(v)}")


def reduction_code(reduction) -> int:
    """The op code of a reduction name ("mean", "sum" or "none")."""
    code = REDUCTION_CODES.get(reduction) if isinstance(reduction, str) else None
    if code is None:
        raise ValueError(f"reduction must be one of {reference.REDUCTIONS}, got {reduction!r}")
    return code


def penalty_options(weight, center, power, one_sided, reduction) -> Tuple[float, float, float, bool, int]:
    """(weight, center, power, one_sided, reduction code): the ops' trailing arguments."""
    return (real_number(weight, "weight"), real_number(center, "center"),
            real_number(power, "power", minimum=1, why=" (the penalty must be differentiable)"),
            boolean(one_sided, "one_sided"), reduction_code(reduction))


# ------------------------------------------------------------------- tensors
def tensors(x: TensorOrTuple, name: str) -> Tuple[Tuple[torch.Tensor, ...], bool]:
    """(the tensors, whether x was a tuple/list): one tensor or a non-empty tuple of them."""
    if isinstance(x, torch.Tensor):
        return (x,), False
    if isinstance(x, (tuple, list)) and x and all(isinstance(t, torch.Tensor) for t in x):
        return tuple(x), True
    raise TypeError(f"{name} must be a tensor or a non-empty tuple of tensors, got {type(x).__name__}")


def batch_tensor(t: torch.Tensor, name: str) -> None:
    """Floating point, with a non-empty batch dimension (dim 0)."""
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {t.dtype}")
    if t.dim() < 1:
        raise ValueError(f"{name} must have a batch dimension (dim 0), got a 0-d tensor")
    if t.shape[0] == 0:
        raise ValueError(f"{name} has an empty batch (shape {tuple(t.shape)})")


def inputs(xs: Sequence[torch.Tensor], name: str) -> int:
    """Differentiated inputs: floating, one batch size, one device, one dtype
    (their gradients go through one fused kernel call). Returns the batch size."""
    x0 = xs[0]
    if len(xs) == 1:
        batch_tensor(x0, name)
        return x0.shape[0]
    batch = x0.shape[0] if x0.dim() else 0
    for k, x in enumerate(xs):
        n = f"{name}[{k}]"
        batch_tensor(x, n)
        if x.shape[0] != batch:
            raise ValueError(f"{n} has batch size {x.shape[0]} but {name}[0] has {batch}")
        if x.device != x0.device:
            raise ValueError(f"{n} is on {x.device} but {name}[0] is on {x0.device}; all inputs must share one device")
        if x.dtype != x0.dtype:
            raise TypeError(f"{n} has dtype {x.dtype} but {name}[0] has {x0.dtype}; they must share one dtype "
                            "(one fused kernel call takes them all)")
    return batch


def pair(reals: Sequence[torch.Tensor], fakes: Sequence[torch.Tensor]) -> int:
    """real and fake: the same number of tensors, each pair of one shape, dtype
    and device. Returns the batch size."""
    if len(reals) != len(fakes):
        raise ValueError(f"real has {len(reals)} tensors but fake has {len(fakes)}")
    batch = inputs(reals, "real")
    if len(fakes) > 1:
        inputs(fakes, "fake")
    for k, (r, f) in enumerate(zip(reals, fakes)):
        if r.shape != f.shape or r.dtype != f.dtype or r.device != f.device:
            rn, fn = ("real", "fake") if len(reals) == 1 else (f"real[{k}]", f"fake[{k}]")
            if r.shape != f.shape:
                raise ValueError(f"{rn} has shape {tuple(r.shape)} but {fn} has shape {tuple(f.shape)}")
            if r.dtype != f.dtype:
                raise TypeError(f"{rn} has dtype {r.dtype} but {fn} has dtype {f.dtype}")
            raise ValueError(f"{rn} is on {r.device} and {fn} on {f.device}; all inputs must share one device")
    return batch


def grads_list(grads: TensorOrTuple) -> List[torch.Tensor]:
    """Input gradients sharing batch size, dtype and device, as a list (the ops take Tensor[])."""
    if isinstance(grads, torch.Tensor):
        batch_tensor(grads, "grads")
        return [grads]
    gs, _ = tensors(grads, "grads")
    inputs(gs, "grads")  # the same rules as the inputs they are the gradients of
    return list(gs)


def inv_scale(value, like: torch.Tensor) -> Optional[torch.Tensor]:
    """None, or one floating-point number as a 0-d tensor on the gradients'
    device (a constant: the scale is not differentiated)."""
    if value is None:
        return None
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"inv_scale must be a floating-point tensor holding one number (1 / the loss scale), got "
                        f"{value!r}")
    if not value.is_floating_point() or value.numel() != 1:
        raise TypeError(f"inv_scale must be a floating-point tensor holding one number, got {value.dtype} of shape "
                        f"{tuple(value.shape)}")
    if value.device != like.device:
        raise ValueError(f"inv_scale is on {value.device} but the gradients are on {like.device}")
    return value.detach().reshape(())


def alpha(value: Optional[torch.Tensor], batch: int, like: torch.Tensor, generator) -> torch.Tensor:
    """One interpolation weight per sample, shape (batch,): the user's, checked
    (shape (B,) or (B, 1, ..., 1), floating, on like's device), or drawn from U[0, 1)."""
    if value is None:
        return reference.sample_alpha(batch, like, generator)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"alpha must be a tensor of shape ({batch},) or ({batch}, 1, ..., 1), got "
                        f"{type(value).__name__}")
    shape = value.shape
    flat = len(shape) == 1 and shape[0] == batch
    if not flat and not (len(shape) > 1 and shape[0] == batch and all(s == 1 for s in shape[1:])):
        raise ValueError(f"alpha must have shape ({batch},) or ({batch}, 1, ..., 1): one weight per sample, "
                         f"got {tuple(shape)}")
    if not value.is_floating_point():
        raise TypeError(f"alpha must be floating point, got {value.dtype}")
    if value.device != like.device:
        raise ValueError(f"alpha is on {value.device} but real is on {like.device}")
    return value if flat else value.reshape(batch)


# ------------------------------------------------------------ critic plumbing
def critic_output(out, batch: int) -> None:
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the critic must return a tensor of shape ({batch},) or ({batch}, 1), got "
                        f"{type(out).__name__}")
    shape = tuple(out.shape)
    if shape != (batch,) and shape != (batch, 1):
        raise ValueError(f"the critic's output must have shape ({batch},) or ({batch}, 1): one score per sample, "
                         f"got {shape}")


def passthrough(critic_args, critic_kwargs) -> None:
    """critic_args a tuple (or list), critic_kwargs a dict or None."""
    if not isinstance(critic_args, (tuple, list)):
        raise TypeError("critic_args must be a tuple of extra positional arguments, got "
                        f"{type(critic_args).__name__}; for one label tensor write critic_args=(labels,)")
    if critic_kwargs is not None and not isinstance(critic_kwargs, dict):
        raise TypeError(f"critic_kwargs must be a dict or None, got {type(critic_kwargs).__name__}")


def grad_scaler(scaler):
    """None or a torch.amp.GradScaler (checked before it is used)."""
    if scaler is not None and not isinstance(scaler, torch.amp.GradScaler):
        raise TypeError(f"scaler must be a torch.amp.GradScaler or None, got {_kind(scaler)}")
    return scaler


def subset_size(batch: int, batch_fraction, max_samples) -> int:
    """How many leading samples a penalty regularizes (the GP-batch option):
    m = min(ceil(batch_fraction * batch), max_samples), at least 1."""
    m = batch
    if batch_fraction is not None:
        fraction = real_number(batch_fraction, "batch_fraction")
        if not 0 < fraction <= 1:
            raise ValueError(f"batch_fraction must be a number in (0, 1], got {batch_fraction!r}")
        # round() first so that e.g. 0.3 * 10 = 3.0000000000000004 gives 3, not 4
        m = max(1, math.ceil(round(fraction * batch, 9)))
    if max_samples is not None:
        m = min(m, integer(max_samples, "max_samples", minimum=1))
    return m
