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

from typing import Sequence, Tuple

from . import validation as check


def lazy_adam_hparams(lr: float, betas: Sequence[float], every: int) -> Tuple[float, Tuple[float, float]]:
    """(lr * k/(k+1), (beta1 ** (k/(k+1)), beta2 ** (k/(k+1)))) for k = every: Adam's
    settings when a regularization step of its own runs every k minibatches, so
    k minibatches take k + 1 optimizer steps (StyleGAN2's correction)."""
    k = check.integer(every, "every", minimum=1)
    lr = check.real_number(lr, "lr")
    if lr <= 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    try:
        b1, b2 = betas
    except (TypeError, ValueError):  # not two of anything
        raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}") from None
    b1, b2 = check.real_number(b1, "betas[0]"), check.real_number(b2, "betas[1]")
    if not (0 <= b1 < 1 and 0 <= b2 < 1):
        raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
    ratio = k / (k + 1)
    return lr * ratio, (b1 ** ratio, b2 ** ratio)


class LazyRegularizer:
    """Schedule of a lazy regularizer: ``due(step)`` is true on steps 0, k, 2k, ...
    and ``gain`` (= k) is the factor for its loss on those steps, so that the
    regularization gradient accumulated over many steps matches, in
    expectation, applying the regularizer at every step."""

    def __init__(self, every: int):
        self.every = check.integer(every, "every", minimum=1)

    @property
    def gain(self) -> int:
        return self.every

    def due(self, step: int) -> bool:
        return check.integer(step, "step", minimum=0) % self.every == 0

    def adam_hparams(self, lr: float, betas: Sequence[float]) -> Tuple[float, Tuple[float, float]]:
        """lazy_adam_hparams(lr, betas, self.every)."""
        return lazy_adam_hparams(lr, betas, self.every)

    def __repr__(self) -> str:
        return f"LazyRegularizer(every={self.every})"
