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


def _every(every) -> int:
    if isinstance(every, bool):
        raise TypeError(f"every must be an int >= 1, got {every!r}")
    try:
        k = operator.index(every)
    except TypeError:
        raise TypeError(f"every must be an int >= 1, got {type(every).__name__}") from None
    if k < 1:
        raise ValueError(f"every must be an int >= 1, got {k}")
    return k


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
        if isinstance(step, bool):
            raise TypeError(f"step must be an int >= 0, got {step!r}")
        try:
            s = operator.index(step)
        except TypeError:
            raise TypeError(f"step must be an int >= 0, got {type(step).__name__}") from None
        if s < 0:
            raise ValueError(f"step must be an int >= 0, got {s}")
        return s % self.every == 0

    def adam_hparams(self, lr: float, betas: Sequence[float]) -> Tuple[float, Tuple[float, float]]:
        """lazy_adam_hparams(lr, betas, self.every)."""
        return lazy_adam_hparams(lr, betas, self.every)

    def __repr__(self) -> str:
        return f"LazyRegularizer(every={self.every})"
