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


def _penalty_scalars(weight: float, center: float, power: float):
    return (*host.split_double(weight, "weight"), *host.split_double(center, "center"),
            *host.split_double(power, "power"))


# ---------------------------------------------------------------- the ops
@triton_op("fastgp::triton_interpolate", mutates_args=(),
           schema="(Tensor real, Tensor fake, Tensor alpha) -> Tensor")
def triton_interpolate(real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    shared.check_interpolate(real, fake, alpha, "fastgp::triton_interpolate")
    a = alpha.to(reference.accumulation_dtype(real.dtype)).contiguous()
    (real, fake), out, target, (out_layout, real_layout, fake_layout) = host.elementwise_rows([real, fake])
    batch, length = real.shape[0], host.row_len(real)
    if length > 0:
        rows, block = host.tile_shape(length)
        grid = (host.cdiv(batch, rows) * host.cdiv(length, block),)
        wrap_triton(kernels.interpolate_kernel)[grid](
            target, real, fake, a, batch, length, *out_layout, *real_layout, *fake_layout,
            ROWS=rows, BLOCK=block, num_warps=kernels.NUM_WARPS)
    return host.write_back(out, target)


@triton_op("fastgp::triton_penalty_forward", mutates_args=(),
           schema="(Tensor[] grads, Tensor? inv_scale, float weight, float center, float power, bool one_sided, "
                  "int reduction) -> (Tensor, Tensor)")
def triton_penalty_forward(grads: List[torch.Tensor], inv_scale: Optional[torch.Tensor], weight: float,
                           center: float, power: float, one_sided: bool, reduction: int):
    op = "fastgp::triton_penalty_forward"
    shared.check_grads(grads, op)
    shared.check_inv_scale(inv_scale, grads[0], op)
    shared.check_reduction(reduction, op)
    batch, device = grads[0].shape[0], grads[0].device
    acc = reference.accumulation_dtype(grads[0].dtype)
    plans = []
    for g in grads:
        g, (row_stride, inner_stride) = host.reduction_rows(g)
        length = host.row_len(g)
        plans.append((g, row_stride, inner_stride, length, *host.tile_shape(length), *host.forward_chunks(batch, length)))
    # Folded: whole rows everywhere; each tensor but the last leaves its rows' sums
    # in one column, the last adds them and finishes the rows. Split: one column
    # per (tensor, chunk), added by the finalize.
    folded = all(chunks == 1 for *_, chunks in plans)
    ncols = len(plans) - 1 if folded else sum(chunks for *_, chunks in plans)
    partial = torch.empty((batch, max(ncols, 1), 2), dtype=torch.float64, device=device)
    norms = torch.empty((batch,), dtype=acc, device=device)
    out = torch.empty((batch,) if reduction == 0 else (), dtype=acc, device=device)
    scalars = _penalty_scalars(weight, center, power)
    flags = dict(HAS_SCALE=inv_scale is not None, ONE_SIDED=bool(one_sided), REDUCTION=int(reduction))
    tile_values = None
    col = 0
    for i, (g, row_stride, inner_stride, length, rows, block, chunk, chunks) in enumerate(plans):
        fold = folded and i == len(plans) - 1
        programs = host.cdiv(batch, rows) * chunks
        if fold and reduction != 0:
            tile_values = torch.empty((programs,), dtype=torch.float64, device=device)
        wrap_triton(kernels.sumsq_kernel)[(programs,)](
            partial, g, out, norms, tile_values if tile_values is not None else partial, inv_scale,
            batch, length, row_stride, inner_stride, chunk, chunks, ncols, i if folded else col, *scalars,
            FOLD=fold, ROWS=rows, BLOCK=block, num_warps=kernels.NUM_WARPS, **flags)
        col += chunks
    if not folded or reduction != 0:
        wrap_triton(kernels.penalty_finalize_kernel)[(1,)](
            out, norms, partial, tile_values if tile_values is not None else partial, inv_scale, batch, ncols,
            0 if tile_values is None else tile_values.numel(), *scalars,
            FROM_TILES=folded, BLOCK_B=kernels.FINALIZE_ROWS, num_warps=kernels.NUM_WARPS, **flags)
    return out, norms


@triton_op("fastgp::triton_penalty_backward", mutates_args=(),
           schema="(Tensor grad_out, Tensor[] grads, Tensor norms, Tensor? inv_scale, float weight, float center, "
                  "float power, bool one_sided, int reduction) -> Tensor[]")
def triton_penalty_backward(grad_out: torch.Tensor, grads: List[torch.Tensor], norms: torch.Tensor,
                            inv_scale: Optional[torch.Tensor], weight: float, center: float, power: float,
                            one_sided: bool, reduction: int) -> List[torch.Tensor]:
    shared.check_backward_args(grad_out, grads, norms, inv_scale, reduction, "fastgp::triton_penalty_backward")
    batch = grads[0].shape[0]
    acc = reference.accumulation_dtype(grads[0].dtype)
    go = grad_out.to(acc).reshape(-1)
    nm = norms.to(acc).contiguous()
    scalars = _penalty_scalars(weight, center, power)
    outs = []
    for g in grads:
        (g,), out, target, (out_layout, g_layout) = host.elementwise_rows([g])
        length = host.row_len(g)
        if length > 0:
            rows, block = host.tile_shape(length)
            grid = (host.cdiv(batch, rows) * host.cdiv(length, block),)
            wrap_triton(kernels.penalty_backward_kernel)[grid](
                target, g, go, 0 if go.numel() == 1 else go.stride(0), nm, inv_scale,
                batch, length, *out_layout, *g_layout, *scalars,
                HAS_SCALE=inv_scale is not None, ONE_SIDED=bool(one_sided), REDUCTION=int(reduction),
                ROWS=rows, BLOCK=block, num_warps=kernels.NUM_WARPS)
        outs.append(host.write_back(out, target))
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
