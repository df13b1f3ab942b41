"""Multi-process training under torchrun: gloo on CPU, nccl on CUDA; rank 0 writes.

Gradient penalties and DDP: DDP averages gradients in hooks that fire when a
parameter's ``.grad`` is accumulated, and those hooks do not see gradients of
gradients taken with ``torch.autograd.grad``. The trainer therefore takes the
input gradient out of place (``autograd.grad(..., create_graph=True)`` w.r.t.
the interpolates only, which accumulates nothing), builds the penalty, and
calls ONE ``backward`` of (loss + penalty): every critic parameter receives
its complete gradient, loss and penalty paths summed, before its hook fires,
so DDP's all-reduce averages the right thing. A loss made of R1 alone does not
reach the critic's last bias, so it carries ``0 * critic(x)`` to make every
hook fire. ``tests/test_train_ddp.py`` checks 2 processes == 1 process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def from_env() -> Dist:
    """torchrun's RANK / WORLD_SIZE / LOCAL_RANK (1 process when absent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    return Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def init(info: Dist, device: torch.device) -> None:
    if info.enabled and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=info.rank,
                                world_size=info.world)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def min_over_ranks(x: torch.Tensor, info: Dist) -> torch.Tensor:
    if info.enabled:
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.MIN)
    return x


def barrier(info: Dist) -> None:
    if info.enabled:
        dist.barrier()
