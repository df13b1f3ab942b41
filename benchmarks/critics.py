"""Critics of the step benchmark: the WGAN-GP toy MLP, a tabular MLP and a
DCGAN critic (no normalization: BatchNorm invalidates a per-sample penalty)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Tuple

from torch import nn


def mlp(features: int, width: int = 512, depth: int = 3) -> nn.Module:
    layers, d = [], features
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.ReLU()]
        d = width
    layers.append(nn.Linear(d, 1))
    return nn.Sequential(*layers)


def dcgan(channels: int = 3, ndf: int = 64) -> nn.Module:
    """The DCGAN discriminator for 64x64 images, output (B, 1)."""
    def block(i, o):
        return [nn.Conv2d(i, o, 4, 2, 1), nn.LeakyReLU(0.2)]
    return nn.Sequential(
        *block(channels, ndf), *block(ndf, ndf * 2), *block(ndf * 2, ndf * 4), *block(ndf * 4, ndf * 8),
        nn.Conv2d(ndf * 8, 1, 4, 1, 0), nn.Flatten(),
    )


@dataclass(frozen=True)
class StepCase:
    name: str
    make: Callable[[], nn.Module]
    sample: Tuple[int, ...]          # shape of one sample
    batch: Dict[str, int]            # per device type and matrix: "cpu-quick" ...

    def batch_for(self, device_type: str, matrix: str) -> int:
        return self.batch.get(f"{device_type}-{matrix}") or self.batch[device_type]


CASES = (
    # WGAN-GP toy (gan_toy.py): 2-D data, 3 hidden layers of 512, batch 256.
    StepCase("mlp-toy", lambda: mlp(2), (2,), {"cpu": 256, "cuda": 256, "cpu-smoke": 8, "cuda-smoke": 8}),
    StepCase("mlp-tabular", lambda: mlp(64, 256), (64,), {"cpu": 256, "cuda": 1024, "cpu-smoke": 8, "cuda-smoke": 8}),
    # DCGAN at 64x64: CPU quick keeps the batch small so the suite fits its time budget.
    StepCase("dcgan", dcgan, (3, 64, 64), {"cpu": 64, "cpu-quick": 16, "cuda": 64, "cpu-smoke": 2, "cuda-smoke": 2}),
)
