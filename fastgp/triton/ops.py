"""The Triton kernels as fastgp ops (``torch.library.triton_op``, so
torch.compile traces into the kernels), with their autograd, and a CPU
kernel from the reference for when the Triton interpreter is off.

Schemas and conventions are those of the C++ ops (csrc/fastgp.cpp):
  fastgp::triton_interpolate(real, fake, alpha) -> Tensor
  fastgp::triton_penalty_forward(grads, inv_scale, weight, center, power, one_sided, reduction) -> (penalty, norms)
  fastgp::triton_penalty_backward(grad_out, grads, norms, inv_scale, weight, center, power, one_sided,
                                  reduction) -> Tensor[]
"""

from __future__ import annotations

from typing import List, Optional

import torch
from torch.library import triton_op, wrap_triton

from .. import reference
from ..backends import shared  # autograd and the reference adapter, shared with the other backends
from . import host, kernels


def _cdiv(a, b):
    return -(-a // b)


# ---------------------------------------------------------------- the ops
@triton_op("fastgp::triton_interpolate", mutates_args=(),
           schema="(Tensor real, Tensor fake, Tensor alpha) -> Tensor")
def triton_interpolate(real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    host.check_interpolate(real, fake, alpha, "fastgp::triton_interpolate")
    a = alpha.to(reference.accumulation_dtype(real.dtype)).contiguous()
    (real, fake), out, target, (lo, lr, lf) = host.elementwise_rows([real, fake])
    batch, length = real.shape[0], host.row_len(real)
    if length > 0:
        wrap_triton(kernels.interpolate_kernel)[lambda meta: (batch * _cdiv(length, meta["BLOCK"]),)](
            target, real, fake, a, length, lo[0], lo[1], lr[0], lr[1], lf[0], lf[1])
    return host.finish(out, target)


@triton_op("fastgp::triton_penalty_forward", mutates_args=(),
           schema="(Tensor[] grads, Tensor? inv_scale, float weight, float center, float power, bool one_sided, "
                  "int reduction) -> (Tensor, Tensor)")
def triton_penalty_forward(grads: List[torch.Tensor], inv_scale: Optional[torch.Tensor], weight: float,
                           center: float, power: float, one_sided: bool, reduction: int):
    op = "fastgp::triton_penalty_forward"
    host.check_grads(grads, op)
    host.check_inv_scale(inv_scale, grads[0], op)
    host.check_reduction(reduction, op)
    batch, device = grads[0].shape[0], grads[0].device
    acc = reference.accumulation_dtype(grads[0].dtype)
    # One column of partial sums per (tensor, chunk); every launch writes its own.
    plans, ncols = [], 0
    for g in grads:
        g, (sb, si) = host.reduction_rows(g)
        length = host.row_len(g)
        chunk, chunks = host.chunking(batch, length, device)
        plans.append((g, sb, si, length, chunk, chunks, ncols))
        ncols += chunks
    partial = torch.empty((batch, ncols), dtype=acc, device=device)
    for g, sb, si, length, chunk, chunks, col0 in plans:
        wrap_triton(kernels.sumsq_partial_kernel)[(batch * chunks,)](
            partial, g, length, chunk, chunks, ncols, col0, sb, si)
    norms = torch.empty((batch,), dtype=acc, device=device)
    out = torch.empty((batch,) if reduction == 0 else (), dtype=acc, device=device)
    wrap_triton(kernels.penalty_finalize_kernel)[(1,)](
        out, norms, partial, inv_scale, batch, ncols,
        *host.split_double(weight, "weight"), *host.split_double(center, "center"),
        *host.split_double(power, "power"),
        HAS_SCALE=inv_scale is not None, ONE_SIDED=bool(one_sided), REDUCTION=int(reduction),
        BLOCK_B=kernels.FINALIZE_BLOCK_B, BLOCK_C=kernels.FINALIZE_BLOCK_C)
    return out, norms


@triton_op("fastgp::triton_penalty_backward", mutates_args=(),
           schema="(Tensor grad_out, Tensor[] grads, Tensor norms, Tensor? inv_scale, float weight, float center, "
                  "float power, bool one_sided, int reduction) -> Tensor[]")
def triton_penalty_backward(grad_out: torch.Tensor, grads: List[torch.Tensor], norms: torch.Tensor,
                            inv_scale: Optional[torch.Tensor], weight: float, center: float, power: float,
                            one_sided: bool, reduction: int) -> List[torch.Tensor]:
    host.check_penalty_backward(grad_out, grads, norms, inv_scale, reduction, "fastgp::triton_penalty_backward")
    batch = grads[0].shape[0]
    acc = reference.accumulation_dtype(grads[0].dtype)
    go = grad_out.to(acc).reshape(-1)
    nm = norms.to(acc).contiguous()
    scalars = (*host.split_double(weight, "weight"), *host.split_double(center, "center"),
               *host.split_double(power, "power"))
    outs = []
    for g in grads:
        (g,), out, target, (lo, lg) = host.elementwise_rows([g])
        length = host.row_len(g)
        if length > 0:
            wrap_triton(kernels.penalty_backward_kernel)[lambda meta: (batch * _cdiv(length, meta["BLOCK"]),)](
                target, g, go, 0 if go.numel() == 1 else go.stride(0), nm, inv_scale,
                batch, length, lo[0], lo[1], lg[0], lg[1], *scalars,
                HAS_SCALE=inv_scale is not None, ONE_SIDED=bool(one_sided), REDUCTION=int(reduction))
        outs.append(host.finish(out, target))
    return outs


# --------------------------------------------------------------- autograd
triton_interpolate.register_autograd(shared.interpolate_backward, setup_context=shared.interpolate_setup_context)
triton_penalty_forward.register_autograd(shared.penalty_forward_backward(torch.ops.fastgp.triton_penalty_backward),
                                         setup_context=shared.penalty_forward_setup_context)
triton_penalty_backward.register_autograd(shared.penalty_backward_backward,
                                          setup_context=shared.penalty_backward_setup_context)


# ------------------------------------------- CPU without the interpreter
if not kernels.INTERPRETED:
    triton_interpolate.register_kernel("cpu")(reference.interpolate)
    triton_penalty_forward.register_kernel("cpu")(shared.reference_penalty_forward)
    triton_penalty_backward.register_kernel("cpu")(shared.reference_penalty_backward)
