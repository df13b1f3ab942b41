"""Host-side planning for the Triton kernels (the argument checks are the
backends' shared ones, fastgp/backends/shared.py): row layouts,
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
``empty_like(inputs[0])``, as the fake kernels (fastgp/backends/shared.py) promise; when
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

_FLOAT32_MAX = 3.4028234663852886e38


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
