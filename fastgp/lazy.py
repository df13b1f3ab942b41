"""Lazy regularization (StyleGAN2, Karras et al. 2020): apply a regularizer
once every k steps with its loss multiplied by k, so its expected gradient is
unchanged, and correct Adam for the extra optimizer steps.

    lazy = fastgp.LazyRegularizer(every=16)
    opt_d = torch.optim.Adam(D.parameters(), *fastgp.lazy_adam_hparams(lr, betas, lazy.every))
    for step in ...:
        ...                                  # the ordinary critic step
        if lazy.due(step):                   # the regularization step of its own
            opt_d.zero_grad()
            (lazy.gain * fastgp.r1_penalty(D, real)).backward()
            opt_d.step()
"""

from __future__ import annotations

import math
import operator
from typing import Sequence, Tuple


def _int_at_least(value, name: str, minimum: int) -> int:
    """A Python int (or index-like, not a bool) >= minimum."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int >= {minimum}, got {value!r}")
    try:
        k = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__}") from None
    if k < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {k}")
    return k


def _every(every) -> int:
    return _int_at_least(every, "every", 1)


def lazy_adam_hparams(lr: float, betas: Sequence[float], every: int) -> Tuple[float, Tuple[float, float]]:
    """(lr * k/(k+1), (beta1 ** (k/(k+1)), beta2 ** (k/(k+1)))) for k = every: Adam's
    settings when a regularization step of its own runs every k minibatches, so
    k minibatches take k + 1 optimizer steps (StyleGAN2's correction)."""
    k = _every(every)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if len(betas) != 2 or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1
                                  for b in betas):
        raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
    ratio = k / (k + 1)
    return lr * ratio, (betas[0] ** ratio, betas[1] ** ratio)


class LazyRegularizer:
    """Schedule of a lazy regularizer: ``due(step)`` is true on steps 0, k, 2k, ...
    and ``gain`` (= k) is the factor for its loss on those steps, so that the
    regularization gradient accumulated over many steps matches, in
    expectation, applying the regularizer at every step."""

    def __init__(self, every: int):
        self.every = _every(every)

    @property
    def gain(self) -> int:
        return self.every

    def due(self, step: int) -> bool:
        return _int_at_least(step, "step", 0) % self.every == 0

    def adam_hparams(self, lr: float, betas: Sequence[float]) -> Tuple[float, Tuple[float, float]]:
        """lazy_adam_hparams(lr, betas, self.every)."""
        return lazy_adam_hparams(lr, betas, self.every)

    def __repr__(self) -> str:
        return f"LazyRegularizer(every={self.every})"
