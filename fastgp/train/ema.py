"""An exponential moving average (EMA) of the generator's weights, the
schedule of StyleGAN2-ADA (Karras et al. 2020).

The average has a half-life of ``ema_kimg`` thousand generated images: after
a generator step on a batch of B images it moves toward the current weights
with ``beta = 0.5 ** (B / half_life)``. With a ramp-up r > 0 the half-life is
at most r times the images seen so far, so the average forgets the random
initialization early on (beta = 0 at the first step: a plain copy). Buffers
(BatchNorm running statistics) are copied, not averaged. The EMA generator
is what samples and evaluations use; it is never trained.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class GeneratorEMA:
    def __init__(self, generator: nn.Module, batch_size: int, kimg: float, rampup: float):
        self.batch_size, self.kimg, self.rampup = batch_size, kimg, rampup
        self.module = copy.deepcopy(generator).eval().requires_grad_(False)

    def beta(self, images_seen: int) -> float:
        """The weight kept from the average after a step that started with `images_seen` images behind it."""
        half_life = self.kimg * 1000
        if self.rampup > 0:
            half_life = min(half_life, images_seen * self.rampup)
        return 0.5 ** (self.batch_size / max(half_life, 1e-8))

    @torch.no_grad()
    def update(self, generator: nn.Module, images_seen: int) -> None:
        beta = self.beta(images_seen)
        averaged = list(self.module.parameters())
        torch._foreach_lerp_(averaged, [p.detach() for p in generator.parameters()], 1.0 - beta)
        self.copy_buffers(generator)

    @torch.no_grad()
    def copy_buffers(self, generator: nn.Module) -> None:
        for mine, theirs in zip(self.module.buffers(), generator.buffers()):
            mine.copy_(theirs)

    @torch.no_grad()
    def reset(self, generator: nn.Module) -> None:
        """The average := the generator's current weights (a checkpoint without an EMA)."""
        for mine, theirs in zip(self.module.parameters(), generator.parameters()):
            mine.copy_(theirs)
        self.copy_buffers(generator)
