"""Host-side planning for the Triton kernels: argument checks, row layouts,
tile shapes and how long rows are split (functions of the shapes alone, so
the summation order, and every bit of a result, is the same in every process
and needs no timing or host sync), and how doubles travel as float32 pairs.

A layout is (row_stride, inner_stride): element j of row b is at
``b * row_stride + j * inner_stride``. Two cases need no copy:
  * logical order: the non-batch dims collapse to one stride (contiguous,
    batch slices, a strided last dim, ...);
  * memory order: channels_last(_3d) tensors, whose rows are contiguous
    blocks visited in memory order; fine for a reduction, and for an
    elementwise op when every operand has that layout.
Anything else is copied first. An elementwise op's output is always
``empty_like(inputs[0])``, as the fake kernels (fastgp/ops.py) promise; when
that layout has no rows (a dense permutation) the kernel writes a contiguous
scratch that write_back() copies into it.
"""

from __future__ import annotations

import math
import struct
from typing import List, Optional, Sequence, Tuple

import torch

from . import kernels

Layout = Tuple[int, int]

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_FLOAT32_MAX = 3.4028234663852886e38


# ------------------------------------------------------------------ checks
def check_grads(grads: Sequence[torch.Tensor], op: str) -> None:
    if len(grads) == 0:
        raise RuntimeError(f"{op}: grads must hold at least one tensor")
    g0 = grads[0]
    if g0.dim() < 1 or g0.shape[0] == 0:
        raise RuntimeError(f"{op}: grads[0] must have a non-empty batch dimension, got shape {tuple(g0.shape)}")
    for k, g in enumerate(grads):
        if g.dtype not in _FLOATS:
            raise RuntimeError(f"{op}: grads[{k}] must be float16, bfloat16, float32 or float64, got {g.dtype}")
        if g.dtype != g0.dtype or g.device != g0.device:
            raise RuntimeError(f"{op}: grads[{k}] is {g.dtype} on {g.device} but grads[0] is {g0.dtype} on {g0.device}")
        if g.dim() < 1 or g.shape[0] != g0.shape[0]:
            raise RuntimeError(f"{op}: grads[{k}] must have batch size {g0.shape[0]} in dim 0, got shape "
                               f"{tuple(g.shape)}")


def check_inv_scale(inv_scale: Optional[torch.Tensor], like: torch.Tensor, op: str) -> None:
    if inv_scale is None:
        return
    if inv_scale.numel() != 1 or not inv_scale.is_floating_point():
        raise RuntimeError(f"{op}: inv_scale must be a floating-point tensor holding one number, got "
                           f"{inv_scale.dtype} of shape {tuple(inv_scale.shape)}")
    if inv_scale.device != like.device:
        raise RuntimeError(f"{op}: inv_scale is on {inv_scale.device} but the gradients are on {like.device}")


def check_reduction(reduction: int, op: str) -> None:
    if reduction not in (0, 1, 2):
        raise RuntimeError(f"{op}: reduction code must be 0 (none), 1 (mean) or 2 (sum), got {reduction}")


def check_penalty_backward(grad_out: torch.Tensor, grads: Sequence[torch.Tensor], norms: torch.Tensor,
                           inv_scale: Optional[torch.Tensor], reduction: int, op: str) -> None:
    """The checks of penalty_backward in csrc (cpu/fastgp_cpu.cpp, cuda/penalty.cu)."""
    check_grads(grads, op)
    check_inv_scale(inv_scale, grads[0], op)
    check_reduction(reduction, op)
    batch, device = grads[0].shape[0], grads[0].device
    if norms.dim() != 1 or norms.shape[0] != batch:
        raise RuntimeError(f"{op}: norms must have shape ({batch},), got {tuple(norms.shape)}")
    if grad_out.numel() != 1 and tuple(grad_out.shape) != (batch,):
        raise RuntimeError(f"{op}: grad_out must be a scalar or have shape ({batch},), got {tuple(grad_out.shape)}")
    if norms.device != device or grad_out.device != device:
        raise RuntimeError(f"{op}: grad_out and norms must be on the gradients' device {device}, got "
                           f"{grad_out.device} and {norms.device}")


def check_interpolate(real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor, op: str) -> None:
    if real.shape != fake.shape or real.dtype != fake.dtype:
        raise RuntimeError(f"{op}: real is {real.dtype} {tuple(real.shape)} but fake is {fake.dtype} "
                           f"{tuple(fake.shape)}; they must match")
    if real.dtype not in _FLOATS:
        raise RuntimeError(f"{op}: real/fake must be float16, bfloat16, float32 or float64, got {real.dtype}")
    if not (real.device == fake.device == alpha.device):
        raise RuntimeError(f"{op}: real, fake and alpha must share a device, got {real.device}, {fake.device}, "
                           f"{alpha.device}")
    if real.dim() < 1 or real.shape[0] == 0:
        raise RuntimeError(f"{op}: real must have a non-empty batch dimension, got shape {tuple(real.shape)}")
    if alpha.dim() != 1 or alpha.shape[0] != real.shape[0] or not alpha.is_floating_point():
        raise RuntimeError(f"{op}: alpha must be a floating-point tensor of shape ({real.shape[0]},), got "
                           f"{alpha.dtype} of shape {tuple(alpha.shape)}")


# ----------------------------------------------------------------- layouts
def row_len(t: torch.Tensor) -> int:
    return math.prod(t.shape[1:])


def _logical_rows(t: torch.Tensor) -> Optional[Layout]:
    dims = [(t.shape[d], t.stride(d)) for d in range(1, t.dim()) if t.shape[d] != 1]
    for (_, outer), (size, inner) in zip(dims, dims[1:]):
        if outer != inner * size:
            return None
    return t.stride(0), (dims[-1][1] if dims else 1)


def _memory_rows(t: torch.Tensor) -> Optional[Layout]:
    fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(t.dim())
    if fmt is not None and t.is_contiguous(memory_format=fmt):
        return t.stride(0), 1
    return None


def reduction_rows(t: torch.Tensor) -> Tuple[torch.Tensor, Layout]:
    """A row layout for a reduction over each row (element order is free)."""
    layout = _logical_rows(t) or _memory_rows(t)
    if layout is None:
        t = t.contiguous()
        layout = _logical_rows(t)
    return t, layout


def elementwise_rows(inputs: Sequence[torch.Tensor]
                     ) -> Tuple[List[torch.Tensor], torch.Tensor, torch.Tensor, List[Layout]]:
    """(inputs, out, target, layouts) for an elementwise op: out is
    ``empty_like(inputs[0])``, the strides the fake kernels promise; the kernel
    writes target, with one layout per tensor (target first) such that element j
    of row b means the same element in all of them. target is out, or, when out
    has no row layout (a dense permutation), a contiguous scratch that the caller
    copies into out with finish()."""
    out = torch.empty_like(inputs[0])
    tensors = [out, *inputs]
    for rows in (_logical_rows, _memory_rows):
        layouts = [rows(t) for t in tensors]
        if all(layout is not None for layout in layouts):
            return list(inputs), out, out, layouts
    # Copy the inputs to one layout: channels_last when out has it (no scratch), else contiguous.
    rows, fmt = _logical_rows, torch.contiguous_format
    if _logical_rows(out) is None and _memory_rows(out) is not None:
        rows, fmt = _memory_rows, (torch.channels_last if out.dim() == 4 else torch.channels_last_3d)
    inputs = [t.contiguous(memory_format=fmt) for t in inputs]
    target = out if rows(out) is not None else torch.empty_like(inputs[0])
    return inputs, out, target, [rows(t) for t in (target, *inputs)]


def write_back(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """out, holding what the kernel wrote to target (a scratch when out's layout has no rows)."""
    if target is not out:
        out.copy_(target)
    return out


# ------------------------------------------------------------------ tiles
def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _pow2_ceil(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


def tile_shape(row_len: int) -> Tuple[int, int]:
    """(ROWS, BLOCK) of a program's tile: rows up to kernels.TILE elements are
    taken whole, several to a tile (BLOCK = their length rounded up to a power
    of two); longer rows go one at a time, in blocks of TILE elements."""
    block = _pow2_ceil(max(row_len, 1))
    if block <= kernels.TILE:
        return kernels.TILE // block, block
    return 1, kernels.TILE


def forward_chunks(batch: int, row_len: int) -> Tuple[int, int]:
    """(chunk, chunks_per_row) of the forward's sums of squares: whole rows,
    unless a small batch of long rows would leave the GPU idle; then rows are
    cut into chunks of whole tiles (at least 4) so that there are about
    kernels.TARGET_PROGRAMS programs. A function of the shape alone."""
    rows, block = tile_shape(row_len)
    blocks = cdiv(row_len, block)
    if rows > 1 or batch >= kernels.TARGET_PROGRAMS or blocks < 8:
        return max(row_len, 1), 1
    chunks = min(cdiv(kernels.TARGET_PROGRAMS, batch), blocks // 4)
    chunk = cdiv(blocks, chunks) * block
    return chunk, cdiv(row_len, chunk)


# ----------------------------------------------------------------- scalars
def split_double(x: float, name: str) -> Tuple[float, float]:
    """x as float32 hi + lo (Triton passes Python floats as float32)."""
    x = float(x)
    if math.isfinite(x) and abs(x) > _FLOAT32_MAX:
        raise RuntimeError(f"{name}={x} is out of the float32 range the Triton kernels take")
    hi = struct.unpack("f", struct.pack("f", x))[0]
    return hi, (x - hi if math.isfinite(x) else 0.0)
