"""Allocation accounting of one call: every tensor allocation it makes (the
profiler's memory events, CPU and CUDA alike), its peak of live bytes, and on
CUDA the allocator's own peak (max_memory_allocated)."""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from typing import Callable, List, Tuple

import torch
from torch._C._profiler import _EventType


@dataclass
class Allocations:
    sizes: List[int] = field(default_factory=list)   # bytes, + alloc / - free, in time order
    peak_bytes: int = 0                               # max live bytes allocated during the call
    cuda_peak_bytes: int = -1                         # allocator peak above the start (CUDA only)

    @property
    def count(self) -> int:
        return sum(1 for s in self.sizes if s > 0)

    @property
    def total_bytes(self) -> int:
        return sum(s for s in self.sizes if s > 0)

    def at_least(self, nbytes: int) -> int:
        """How many allocations of at least `nbytes` (full-size buffers)."""
        return sum(1 for s in self.sizes if s >= nbytes)


def _allocation_events(prof, device_type: str) -> List[Tuple[int, int]]:
    found = []

    def walk(node):
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == device_type:
            found.append((node.start_time_ns, node.extra_fields.alloc_size))
        for child in node.children:
            walk(child)

    for root in prof.profiler.kineto_results.experimental_event_tree():
        walk(root)
    return sorted(found)


def measure(fn: Callable, device: torch.device) -> Tuple[Allocations, object]:
    """Runs fn once under the memory profiler; returns (allocations, fn's result).
    The result stays alive until the profile ends, so outputs count as live."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    result = Allocations()
    if device.type == "cuda":
        result.cuda_peak_bytes = torch.cuda.max_memory_allocated(device) - start
    live = 0
    for _, size in _allocation_events(prof, device.type):
        result.sizes.append(size)
        live += size
        result.peak_bytes = max(result.peak_bytes, live)
    return result, out
