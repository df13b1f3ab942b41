"""Generators and critics: MLPs for toy and tabular data, DCGAN-style convnets for images.

Critics return one score per sample, shape (B,). Their activations are never
in-place (an in-place LeakyReLU has no double backward) and their
normalization is per sample (LayerNorm) or absent: a BatchNorm critic couples
the samples, which the config refuses together with a gradient penalty.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import nn
from torch.nn.utils import parametrizations

from .config import ConfigError, TrainConfig, penalty_weight


def _norm1d(kind: str, n: int) -> nn.Module:
    return {"batch": lambda: nn.BatchNorm1d(n), "layer": lambda: nn.LayerNorm(n), "none": nn.Identity}[kind]()


def _norm2d(kind: str, c: int) -> nn.Module:
    # "layer": normalization over (C, H, W) of each sample, i.e. GroupNorm with one group.
    return {"batch": lambda: nn.BatchNorm2d(c), "layer": lambda: nn.GroupNorm(1, c), "none": nn.Identity}[kind]()


class MLP(nn.Module):
    def __init__(self, n_in: int, n_out: int, hidden: int, depth: int, norm: str, act: str):
        super().__init__()
        layers, width = [], n_in
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), _norm1d(norm, hidden),
                       nn.ReLU() if act == "relu" else nn.LeakyReLU(0.2)]
            width = hidden
        layers.append(nn.Linear(width, n_out))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class ConditionalGenerator(nn.Module):
    """G(z, y) = net([z, E(y)]): a class-conditional generator through a learned label embedding."""

    def __init__(self, net: nn.Module, n_classes: int, dim: int):
        super().__init__()
        self.net, self.embed = net, nn.Embedding(n_classes, dim)

    def forward(self, z, y):
        return self.net(torch.cat([z, self.embed(y)], dim=1))


class Projection(nn.Module):
    """The class term of a projection critic (Miyato & Koyama 2018): <E(y), phi(x)> added to the score psi(phi(x))."""

    def __init__(self, n_classes: int, dim: int):
        super().__init__()
        self.embed = nn.Embedding(n_classes, dim)
        nn.init.xavier_uniform_(self.embed.weight)  # N(0, 1) rows would swamp the score at initialization

    def forward(self, features, y):
        return (self.embed(y) * features).sum(dim=1)


class MLPCritic(MLP):
    """An MLP score; with n_classes, a projection critic over its last hidden layer."""

    def __init__(self, n_in: int, hidden: int, depth: int, norm: str, n_classes: int = 0):
        super().__init__(n_in, 1, hidden, depth, norm, "relu")
        self.projection = Projection(n_classes, hidden) if n_classes else None

    def forward(self, x, y=None):
        if self.projection is None:
            return self.net(x).squeeze(-1)
        h = self.net[:-1](x)
        return self.net[-1](h).squeeze(-1) + self.projection(h, y)


class DCGANGenerator(nn.Module):
    """z -> 4x4 feature map -> transposed convolutions doubling the side -> tanh image (BatchNorm by default)."""

    def __init__(self, z_dim: int, size: int, channels: int, width: int, norm: str):
        super().__init__()
        levels = int(math.log2(size // 4))
        c = width * 2 ** (levels - 1) if levels > 0 else width
        self.top = (c, 4, 4)
        self.fc = nn.Linear(z_dim, c * 16)
        blocks = [_norm2d(norm, c), nn.ReLU()]
        for _ in range(levels):
            blocks += [nn.ConvTranspose2d(c, max(c // 2, 8), 4, 2, 1), _norm2d(norm, max(c // 2, 8)), nn.ReLU()]
            c = max(c // 2, 8)
        blocks += [nn.Conv2d(c, channels, 3, 1, 1), nn.Tanh()]
        self.net = nn.Sequential(*blocks)

    def forward(self, z):
        return self.net(self.fc(z).view(z.shape[0], *self.top))


class DCGANCritic(nn.Module):
    """Strided convolutions halving the side down to 4x4, LeakyReLU(0.2), then a linear score; with n_classes,
    a projection critic over the flattened features."""

    def __init__(self, size: int, channels: int, width: int, norm: str, n_classes: int = 0):
        super().__init__()
        levels = int(math.log2(size // 4))
        layers, c_in, c = [], channels, width
        for i in range(levels):
            layers += [nn.Conv2d(c_in, c, 4, 2, 1), nn.Identity() if i == 0 else _norm2d(norm, c), nn.LeakyReLU(0.2)]
            c_in, c = c, c * 2
        self.features = nn.Sequential(*layers)
        self.score = nn.Linear(c_in * 16, 1)
        self.projection = Projection(n_classes, c_in * 16) if n_classes else None

    def forward(self, x, y=None):
        h = self.features(x).flatten(1)
        out = self.score(h).squeeze(-1)
        return out if self.projection is None else out + self.projection(h, y)


def build_models(cfg: TrainConfig, sample_shape: Tuple[int, ...], n_classes: int = 0) -> Tuple[nn.Module, nn.Module]:
    """(generator, critic) for a resolved config and the shape of one data sample; with n_classes (a conditional
    run) G(z, y) and D(x, y)."""
    if cfg.d_norm == "batch" and penalty_weight(cfg) > 0:
        raise ConfigError("a BatchNorm critic is refused with a gradient penalty (see --d-norm)")
    z_in = cfg.z_dim * 2 if n_classes else cfg.z_dim  # noise and a label embedding of the same size
    if cfg.model == "mlp":
        dim = sample_shape[0]
        g, d = (MLP(z_in, dim, cfg.hidden, cfg.depth, cfg.g_norm, "relu"),
                MLPCritic(dim, cfg.hidden, cfg.depth, cfg.d_norm, n_classes))
    else:
        channels, size = sample_shape[0], sample_shape[-1]
        g, d = (DCGANGenerator(z_in, size, channels, cfg.width, cfg.g_norm),
                DCGANCritic(size, channels, cfg.width, cfg.d_norm, n_classes))
    if n_classes:
        g = ConditionalGenerator(g, n_classes, cfg.z_dim)
    if cfg.d_sn:
        spectral_norm(d)
    return g, d


def spectral_norm(critic: nn.Module) -> None:
    """Spectral normalization of every linear and convolutional layer, in place (torch's parametrization: one
    power iteration per forward in training mode; u and v are buffers, so checkpoints and resume carry them).
    Its sigma is computed from clones of u and v, so the penalty's double backward sees no in-place change."""
    for module in list(critic.modules()):
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.Embedding)):  # the projection's embedding too, as in the paper
            parametrizations.spectral_norm(module)
