"""What every backend shares, defined once: the reduction codes of the op
schemas, the ops' argument checks and fake kernels, the Python autograd of
the ops, and the adapter from the op signature to ``fastgp.reference``.

The op signature (csrc/fastgp.cpp holds the schemas):
  interpolate(real, fake, alpha) -> x_hat
  penalty_forward(grads, inv_scale, weight, center, power, one_sided, reduction) -> (penalty, norms)
  penalty_backward(grad_out, grads, norms, inv_scale, weight, center, power, one_sided, reduction) -> d_grads
with ``reduction`` one of REDUCTION_CODES' values (csrc/penalty_math.h and
fastgp/triton/kernels.py spell the same codes; a test holds them together).
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from .. import reference

REDUCTION_CODES = {"none": 0, "mean": 1, "sum": 2}
REDUCTION_NAMES = {code: name for name, code in REDUCTION_CODES.items()}
FLOAT_DTYPES = frozenset((torch.float16, torch.bfloat16, torch.float32, torch.float64))
_FLOAT_NAMES = "float16, bfloat16, float32 or float64"


# ------------------------------------------------------------ argument checks
# The checks of csrc/checks.h, with its messages, written with torch._check so
# that they hold under torch.compile (fake tensors, symbolic shapes) as well.
def _shape(t: torch.Tensor) -> list:
    return list(t.shape)


def check_grads(grads: Sequence[torch.Tensor], op: str) -> None:
    torch._check(len(grads) > 0, lambda: f"{op}: grads must hold at least one tensor")
    g0 = grads[0]
    torch._check(g0.dim() >= 1, lambda: f"{op}: grads[0] must have a batch dimension, got a 0-d tensor")
    torch._check(g0.shape[0] > 0, lambda: f"{op}: the batch is empty (grads[0].size(0) == 0)")
    for k, g in enumerate(grads):
        torch._check(g.dtype in FLOAT_DTYPES, lambda: f"{op}: grads[{k}] must be {_FLOAT_NAMES}, got {g.dtype}")
        torch._check(g.dtype == g0.dtype, lambda: f"{op}: grads[{k}] has dtype {g.dtype} but grads[0] has {g0.dtype}")
        torch._check(g.device == g0.device, lambda: f"{op}: grads[{k}] is on {g.device} but grads[0] is on {g0.device}")
        torch._check(g.dim() >= 1 and g.shape[0] == g0.shape[0],
                     lambda: f"{op}: grads[{k}] must have batch size {g0.shape[0]} in dim 0, got shape {_shape(g)}")


def check_inv_scale(inv_scale: Optional[torch.Tensor], like: torch.Tensor, op: str) -> None:
    if inv_scale is None:
        return
    torch._check(inv_scale.numel() == 1, lambda: f"{op}: inv_scale must hold one number, got shape {_shape(inv_scale)}")
    torch._check(inv_scale.is_floating_point(),
                 lambda: f"{op}: inv_scale must be floating point, got {inv_scale.dtype}")
    torch._check(inv_scale.device == like.device,
                 lambda: f"{op}: inv_scale is on {inv_scale.device} but the gradients are on {like.device}")


def check_reduction(reduction: int, op: str) -> None:
    torch._check(reduction in REDUCTION_NAMES,
                 lambda: f"{op}: reduction code must be 0 (none), 1 (mean) or 2 (sum), got {reduction}")


def check_backward_args(grad_out: torch.Tensor, grads: Sequence[torch.Tensor], norms: torch.Tensor,
                        inv_scale: Optional[torch.Tensor], reduction: int, op: str) -> None:
    check_grads(grads, op)
    check_inv_scale(inv_scale, grads[0], op)
    check_reduction(reduction, op)
    batch, device = grads[0].shape[0], grads[0].device
    torch._check(norms.dim() == 1 and norms.shape[0] == batch,
                 lambda: f"{op}: norms must have shape ({batch},), got {_shape(norms)}")
    torch._check(grad_out.numel() == 1 or (grad_out.dim() == 1 and grad_out.shape[0] == batch),
                 lambda: f"{op}: grad_out must be a scalar or have shape ({batch},), got {_shape(grad_out)}")
    torch._check(norms.device == device and grad_out.device == device,
                 lambda: f"{op}: grad_out and norms must be on the gradients' device {device}, got {grad_out.device} "
                         f"and {norms.device}")


def check_interpolate(real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor, op: str) -> None:
    torch._check(real.shape == fake.shape,
                 lambda: f"{op}: real has shape {_shape(real)} but fake has shape {_shape(fake)}")
    torch._check(real.dtype == fake.dtype, lambda: f"{op}: real is {real.dtype} but fake is {fake.dtype}")
    torch._check(real.dtype in FLOAT_DTYPES, lambda: f"{op}: real/fake must be {_FLOAT_NAMES}, got {real.dtype}")
    torch._check(real.device == fake.device and real.device == alpha.device,
                 lambda: f"{op}: real, fake and alpha must share a device, got {real.device}, {fake.device}, "
                         f"{alpha.device}")
    torch._check(real.dim() >= 1 and real.shape[0] > 0,
                 lambda: f"{op}: real must have a non-empty batch dimension, got shape {_shape(real)}")
    torch._check(alpha.dim() == 1 and alpha.shape[0] == real.shape[0],
                 lambda: f"{op}: alpha must have shape ({real.shape[0]},), got {_shape(alpha)}")
    torch._check(alpha.is_floating_point(), lambda: f"{op}: alpha must be floating point, got {alpha.dtype}")


# --------------------------------------------------------------- fake kernels
def register_fake_kernels(interpolate: str, penalty_forward: str, penalty_backward: str) -> None:
    """Fake kernels (torch.compile, meta tensors) of a backend's three ops, named
    "namespace::op": they check what the real kernels check and promise their
    outputs' shapes, dtypes and strides."""

    @torch.library.register_fake(interpolate)
    def _interpolate(real, fake, alpha):
        check_interpolate(real, fake, alpha, interpolate)
        return torch.empty_like(real)

    @torch.library.register_fake(penalty_forward)
    def _penalty_forward(grads, inv_scale, weight, center, power, one_sided, reduction):
        check_grads(grads, penalty_forward)
        check_inv_scale(inv_scale, grads[0], penalty_forward)
        check_reduction(reduction, penalty_forward)
        g0 = grads[0]
        acc = reference.accumulation_dtype(g0.dtype)
        batch = g0.shape[0]
        out = g0.new_empty((batch,) if reduction == REDUCTION_CODES["none"] else (), dtype=acc)
        return out, g0.new_empty((batch,), dtype=acc)

    @torch.library.register_fake(penalty_backward)
    def _penalty_backward(grad_out, grads, norms, inv_scale, weight, center, power, one_sided, reduction):
        check_backward_args(grad_out, grads, norms, inv_scale, reduction, penalty_backward)
        return [torch.empty_like(g) for g in grads]


# ------------------------------------------------- adapter to the reference
def reference_penalty_forward(grads: Sequence[torch.Tensor], inv_scale: Optional[torch.Tensor], weight: float,
                              center: float, power: float, one_sided: bool, reduction: int):
    """penalty_forward computed by fastgp.reference (the "torch" backend)."""
    return reference.penalty_from_grads(list(grads), weight=weight, center=center, power=power, one_sided=one_sided,
                                        reduction=REDUCTION_NAMES[reduction], inv_scale=inv_scale)


def reference_penalty_backward(grad_out: torch.Tensor, grads: Sequence[torch.Tensor], norms: torch.Tensor,
                               inv_scale: Optional[torch.Tensor], weight: float, center: float, power: float,
                               one_sided: bool, reduction: int) -> List[torch.Tensor]:
    """penalty_backward computed by fastgp.reference: the vector-Jacobian product
    of reference_penalty_forward (torch.func, so it also works below an op's
    autograd layer, where plain autograd is off). `norms` is not needed."""
    _, vjp = torch.func.vjp(lambda *gs: reference_penalty_forward(gs, inv_scale, weight, center, power, one_sided,
                                                                  reduction)[0], *grads)
    # clone: the vjp of the reference's torch.cat gives views of one buffer
    return [d.clone() for d in vjp(grad_out.to(reference.accumulation_dtype(grads[0].dtype)))]


# ----------------------------------------------------------- Python autograd
# The C++ ops get the first-order autograd of interpolate and penalty_forward
# from csrc/autograd.cpp; ops defined in Python (Triton) register these, which
# are the same formulas.
def _batch_view(alpha: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return alpha.reshape(-1, *([1] * (like.dim() - 1)))


def interpolate_setup_context(ctx, inputs, output):
    real, fake, alpha = inputs
    need_alpha = ctx.needs_input_grad[2]
    ctx.save_for_backward(alpha, real if need_alpha else None, fake if need_alpha else None)


def interpolate_backward(ctx, grad):
    alpha, real, fake = ctx.saved_tensors
    a = _batch_view(alpha, grad)
    grad_real = (grad * a).to(grad.dtype) if ctx.needs_input_grad[0] else None
    grad_fake = (grad * (1 - a)).to(grad.dtype) if ctx.needs_input_grad[1] else None
    grad_alpha = None
    if ctx.needs_input_grad[2]:
        prod = grad * (real - fake)
        grad_alpha = (prod if prod.dim() == 1 else prod.flatten(1).sum(1)).to(alpha.dtype)
    return grad_real, grad_fake, grad_alpha


def penalty_forward_setup_context(ctx, inputs, output):
    grads, inv_scale, weight, center, power, one_sided, reduction = inputs
    _, norms = output
    ctx.mark_non_differentiable(norms)
    ctx.params = (weight, center, power, one_sided, reduction)
    ctx.save_for_backward(norms, inv_scale, *grads)


def penalty_forward_backward(penalty_backward):
    """The backward of penalty_forward, computed by the `penalty_backward` op."""

    def backward(ctx, grad_out, _grad_norms):
        norms, inv_scale, *grads = ctx.saved_tensors
        d_grads = penalty_backward(grad_out, grads, norms, inv_scale, *ctx.params)
        return d_grads, None, None, None, None, None, None

    return backward


def penalty_backward_setup_context(ctx, inputs, output):
    grad_out, grads, norms, inv_scale, *params = inputs
    ctx.params = params
    ctx.save_for_backward(grad_out, inv_scale, *grads)


def penalty_backward_backward(ctx, d_outputs):
    """Derivative of penalty_backward (only needed to differentiate the penalty
    twice, as gradgradcheck does): the reference differentiated twice."""
    grad_out, inv_scale, *grads = ctx.saved_tensors
    weight, center, power, one_sided, reduction = ctx.params
    create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        grad_out_leaf = grad_out.detach().requires_grad_(True)
        grad_leaves = [g.detach().requires_grad_(True) for g in grads]
        penalty, _ = reference_penalty_forward(grad_leaves, inv_scale, weight, center, power, one_sided, reduction)
        first = torch.autograd.grad(penalty, grad_leaves, grad_out_leaf, create_graph=True)
        cotangents = [torch.zeros_like(g) if v is None else v for g, v in zip(grad_leaves, d_outputs)]
        second = torch.autograd.grad(first, [grad_out_leaf, *grad_leaves], cotangents, allow_unused=True,
                                     create_graph=create_graph)
    d_grad_out = second[0] if second[0] is not None else torch.zeros_like(grad_out)
    d_grads = [torch.zeros_like(g) if d is None else d for g, d in zip(grads, second[1:])]
    return d_grad_out, d_grads, None, None, None, None, None, None, None


def register_penalty_backward_derivative(penalty_backward: str) -> None:
    """Autograd of a penalty_backward op ("namespace::op") defined without one."""
    torch.library.register_autograd(penalty_backward, penalty_backward_backward,
                                    setup_context=penalty_backward_setup_context)
