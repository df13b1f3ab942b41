"""The penalty's gradients: into the critic's parameters (against fastgp.reference,
at a zero input gradient) and into `fake`.

Tolerances follow the rounding of a correct float computation of
dP/ds_i = K phi'(n_i) <g_i, W_i> / n_i for the probe critic's scale s_i: the norm
(relative error r, amplified by phi's condition n_i / |n_i - c|), the dot product
<g_i, W_i> (its condition ||g_i|| ||W_i|| / |<g_i, W_i>|), the reduction, and the
bracket of the estimated weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

from .hypotheses import Fit, Rounding
from .report import Finding

FIX_NO_GRAPH = ("take the input gradient with torch.autograd.grad(out, x_hat, torch.ones_like(out), "
                "create_graph=True) and do not detach it, so that the penalty trains the critic")
FIX_NAN = ("take the norm with torch.linalg.vector_norm or g.flatten(1).norm(2, dim=1), whose gradient at 0 is 0, "
           "instead of torch.sqrt((g ** 2).sum(1)) (or add a small epsilon inside the sqrt)")
FIX_UNRECOGNIZED = ("compare it with fastgp.reference.gradient_penalty (the readable oracle), or replace it with "
                    "fastgp.gradient_penalty")
FIX_LEAK = ("detach the samples inside the function (fake = fake.detach()): the penalty trains the critic only, "
            "and a gradient sent into the generator is wasted work, and wrong when the generator's gradients are "
            "not cleared before its step")


def gradients(value: torch.Tensor, wrt: Sequence[torch.Tensor]) -> Tuple[Optional[torch.Tensor], ...]:
    """d value / d each of `wrt` (None where it does not reach), or all None without a graph."""
    if not value.requires_grad:
        return (None,) * len(wrt)
    return torch.autograd.grad(value, list(wrt), allow_unused=True)


def none_or_zero(g: Optional[torch.Tensor]) -> bool:
    return g is None or not bool((g != 0).any())


@dataclass
class Expected:
    """A predicted value and per-sample scale gradient, with their allowed relative errors."""

    value: float
    grad: torch.Tensor      # (B,) float64
    value_rel: float
    grad_rel: torch.Tensor  # (B,)

    def value_ok(self, observed: float) -> bool:
        return abs(observed - self.value) <= self.value_rel * abs(self.value)

    def grad_bad(self, observed: torch.Tensor) -> torch.Tensor:
        """Mask of the samples whose gradient is outside the allowed error (NaN included)."""
        obs = observed.detach().to(torch.float64).cpu()
        return ~((obs - self.grad).abs() <= self.grad_rel * self.grad.abs())


def tolerance(fit: Fit, norms: torch.Tensor, dot_condition: torch.Tensor, width: int, rounding: Rounding,
              weight_rel: float, extra_norm_rel: float = 0.0) -> Tuple[float, torch.Tensor]:
    """(value_rel, grad_rel per sample) for a per-sample penalty at these norms."""
    r = (rounding.norm_bounds(norms, width)[1] - norms) / norms + extra_norm_rel  # per sample
    p = fit.power_range[1]
    gap = (norms - fit.center).abs()
    cond = torch.where(gap > 0, norms / gap, torch.full_like(norms, float("inf")))
    red = rounding.reduce(len(norms), p)
    value_rel = float((p * r * cond + r).max()) + red + weight_rel
    grad_rel = 2 * (p * r * cond + r) + red + weight_rel + width * rounding.eps_acc * dot_condition
    return value_rel, grad_rel


def no_graph(observed_value: float, grad: Optional[torch.Tensor], expected: torch.Tensor, how: str) \
        -> Optional[Finding]:
    """`expected`: the parameter gradient a penalty of this value's form gives."""
    if not none_or_zero(grad) or float(expected.abs().max()) == 0:
        return None
    why = "its value carries no autograd graph" if grad is None else "their gradient is exactly zero"
    return Finding("no-graph", f"the penalty (value {observed_value:.4g}) gives the critic's parameters no gradient: "
                   f"{why}, where {how} gives them a gradient of norm {float(expected.norm()):.3g}", FIX_NO_GRAPH)


def mismatch(what: str, observed_value: float, observed_grad: Optional[torch.Tensor], expected: Expected) \
        -> Optional[Finding]:
    """An `unrecognized` finding when value or parameter gradient differ from the reference's beyond rounding."""
    if not expected.value_ok(observed_value):
        return Finding("unrecognized", f"on {what} the value is {observed_value:.7g} but fastgp.reference gives "
                       f"{expected.value:.7g} for the same variant and weight (rounding allows a relative "
                       f"{expected.value_rel:.1g})", FIX_UNRECOGNIZED)
    if none_or_zero(observed_grad):
        return None  # reported as no-graph
    bad = expected.grad_bad(observed_grad)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0])
        got = float(observed_grad.detach()[i])
        return Finding("unrecognized", f"on {what} the value matches fastgp.reference but the critic's parameter "
                       f"gradient does not: {int(bad.sum())} of {len(bad)} entries differ, e.g. sample {i}: "
                       f"{got:.7g} vs {float(expected.grad[i]):.7g}", FIX_UNRECOGNIZED)
    return None



def nan_at_zero(probes: List[Tuple[str, torch.Tensor, Optional[torch.Tensor]]]) -> Optional[Finding]:
    """probes: (what, value, parameter gradient) at input gradients that are zero on some samples."""
    for what, value, grad in probes:
        bad_value = not bool(torch.isfinite(value).all())
        bad_grad = grad is not None and not bool(torch.isfinite(grad).all())
        if bad_value or bad_grad:
            seen = []
            if bad_value:
                seen.append(f"the value is {float(value):g}")
            if bad_grad:
                n = int((~torch.isfinite(grad)).sum())
                seen.append(f"{n} of {grad.numel()} entries of the critic's parameter gradient are NaN or inf")
            return Finding("nan-at-zero", f"with {what}, {' and '.join(seen)}", FIX_NAN)
    return None


def leak(fake_grad: Optional[torch.Tensor]) -> Optional[Finding]:
    if none_or_zero(fake_grad):
        return None
    return Finding("gradient-leak", "with `fake` requiring grad (as a generator's output does), the penalty's "
                   f"backward sends a gradient of norm {float(fake_grad.norm()):.3g} into fake, i.e. into the "
                   "generator (harmless only if every caller passes fake.detach())", FIX_LEAK)
