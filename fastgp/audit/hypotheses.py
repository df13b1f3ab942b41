"""What a penalty function's value can be, in closed form, and which of those an
observed value matches.

Every hypothesis is fastgp.reference's penalty applied to some rows of the input
gradient G (B, *sample): one row per sample (a correct member of the family), one
row for the whole batch (whole-batch-norm), or one row per position of the dims
left out of the norm (partial-norm). The value is then K * sum_rows phi(||row||)
with phi(n) = |n - c|^p or max(0, n - c)^p, where K (lambda and the reduction's
1/count) is unknown: it is bracketed from every probe and a hypothesis holds when
the brackets intersect. Each predicted term is an interval from the float
rounding a correct computation can make (norm of k elements, reduction of m
terms), so no tolerance is tuned to examples.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

from .. import reference


@dataclass(frozen=True)
class Grouping:
    """Which elements of G share one norm: "sample" (all non-batch dims), "batch"
    (everything), or "dims" (the listed non-batch dims only, possibly none)."""

    kind: str
    dims: Tuple[int, ...] = ()

    def rows(self, g: torch.Tensor) -> torch.Tensor:
        if self.kind == "sample":
            return g.reshape(g.shape[0], -1)
        if self.kind == "batch":
            return g.reshape(1, -1)
        rest = [d for d in range(1, g.dim()) if d not in self.dims]
        width = math.prod(g.shape[d] for d in self.dims)
        return g.permute([0, *rest, *self.dims]).reshape(-1, width)

    def describe(self, shape: Sequence[int]) -> str:
        """For a batch of this shape: what the norm covers, and how many norms that makes."""
        if self.kind == "sample":
            return f"one norm per sample ({shape[0]} norms)"
        if self.kind == "batch":
            return f"one norm over the whole batch of {shape[0]} samples"
        count = shape[0] * math.prod(s for d, s in enumerate(shape) if d > 0 and d not in self.dims)
        if not self.dims:
            return f"no norm at all: |g| element by element ({count} values)"
        which = ", ".join(str(d) for d in self.dims)
        return f"a norm over dim{'s' * (len(self.dims) > 1)} {which} only ({count} norms instead of {shape[0]})"


def groupings(sample_dims: int) -> List[Grouping]:
    """The per-sample grouping first, then the bug groupings: the whole batch, then
    every proper subset of the non-batch dims, largest first."""
    dims = range(1, sample_dims + 1)
    subsets = [s for k in range(sample_dims - 1, -1, -1) for s in itertools.combinations(dims, k)]
    return [Grouping("sample"), Grouping("batch")] + [Grouping("dims", s) for s in subsets]


# (center, one_sided) of the family's shapes: two-sided, one-sided, zero-centered
SHAPES = ((1.0, False), (1.0, True), (0.0, False))


# The epsilon a hand-written norm may add, sqrt(sum g^2 + eps) or norm + eps (1e-12 and
# 1e-8 are usual): it moves a norm n by at most eps * (1 + 1 / (2 n)). Below float32
# rounding for the probes' norms; float64 probes would see it.
SMOOTHING = 1e-8


@dataclass(frozen=True)
class Rounding:
    """Error bounds of a correct float computation of the penalty."""

    eps_acc: float    # precision reductions accumulate in (float32 for half types)
    eps_store: float  # precision of the stored results

    @classmethod
    def of(cls, dtype: torch.dtype) -> "Rounding":
        return cls(torch.finfo(reference.accumulation_dtype(dtype)).eps, torch.finfo(dtype).eps)

    def norm(self, width: int) -> float:
        """An L2 norm of `width` elements: sum of squares (width - 1 roundings), sqrt, store."""
        return self.eps_acc * (width + 2) + self.eps_store

    def norm_bounds(self, norms: torch.Tensor, width: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """[lo, hi] of the norms a correct computation can return for exact norms `norms` of rows of `width`."""
        r = self.norm(width)
        slack = SMOOTHING * (1 + 0.5 / norms.clamp_min(SMOOTHING))
        return (norms * (1 - r) - slack).clamp_min(0), norms * (1 + r) + slack

    def reduce(self, count: int, power: float) -> float:
        """phi (subtraction, pow) on each of `count` terms, their sum or mean, the weight."""
        return self.eps_acc * (count + 4 * power + 8) + 8 * self.eps_store


@dataclass(eq=False)
class Observation:
    grads: torch.Tensor  # the probe critic's input gradient, float64, (B, *sample)
    value: float         # what the function returned
    uniform: bool        # every row norm is the same under every grouping (ProbeFactory.uniform)


@dataclass(frozen=True)
class Fit:
    grouping: Grouping
    center: float
    one_sided: bool
    power: float                  # reported power (an integer when the estimate allows it)
    power_range: Tuple[float, float]
    k_range: Tuple[float, float]  # the bracket of K: value = K * sum_rows phi

    @property
    def k(self) -> float:
        return 0.5 * (self.k_range[0] + self.k_range[1])


def shortest_inside(lo: float, hi: float) -> float:
    """The decimal with the fewest digits in [lo, hi] (10.0 rather than 9.99999993)."""
    mid = 0.5 * (lo + hi)
    for digits in range(1, 18):
        x = float(f"{mid:.{digits}g}")
        if lo <= x <= hi:
            return x
    return mid


def phi(norms: torch.Tensor, center: float, one_sided: bool, power: float) -> torch.Tensor:
    return reference.per_sample_penalty(norms, center, power, one_sided)


def row_norms(grouping: Grouping, g: torch.Tensor) -> Tuple[torch.Tensor, int]:
    rows = grouping.rows(g)
    return reference.grad_norms([rows]), rows.shape[1]


def term_bounds(norms, width, center, one_sided, power_range, rounding: Rounding):
    """Per-row [lo, hi] of phi(n') over the norms n' a correct computation can return."""
    lo_n, hi_n = rounding.norm_bounds(norms, width)
    corners = torch.stack([phi(n, center, one_sided, p) for n in (lo_n, hi_n) for p in power_range])
    lo, hi = corners.amin(0), corners.amax(0)
    lo = torch.where((lo_n <= center) & (hi_n >= center), torch.zeros_like(lo), lo)
    return lo, hi


def sum_bounds(grouping, g, center, one_sided, power_range, rounding: Rounding) -> Tuple[float, float]:
    """[lo, hi] of sum_rows phi(||row||) as a correct float computation can return it."""
    norms, width = row_norms(grouping, g)
    lo, hi = term_bounds(norms, width, center, one_sided, power_range, rounding)
    red = rounding.reduce(norms.numel(), power_range[1])
    return float(lo.sum()) * (1 - red), float(hi.sum()) * (1 + red)


def _estimate_power(obs: Sequence[Observation], grouping, center, one_sided, rounding: Rounding):
    """From two uniform probes a and b (every row norm v, m rows, distance d = |v - c|
    to the center): value_a / value_b = (m_a d_a^p) / (m_b d_b^p), solved for p, with
    the bound of its error. Returns (power, (lo, hi)) or None."""
    usable = []
    for o in obs:
        if not o.uniform or not o.value > 0:
            continue
        norms, width = row_norms(grouping, o.grads)
        v = float(norms[0])
        d = v - center if one_sided else abs(v - center)
        err_n = float(rounding.norm_bounds(norms[:1], width)[1][0]) - v  # how far the norm may be off
        if d > 4 * err_n:  # clearly off the center: phi's condition number is bounded
            usable.append((d, math.log(o.value / norms.numel()), err_n / d, norms.numel()))
    best = max(((a, b) for a, b in itertools.combinations(usable, 2)), default=None,
               key=lambda ab: abs(math.log(ab[0][0] / ab[1][0])))
    if best is None or abs(math.log(best[0][0] / best[1][0])) < 0.1:
        return None
    (da, la, ca, ma), (db, lb, cb, mb) = best
    span = math.log(da / db)
    p = (la - lb) / span
    if not math.isfinite(p) or p <= 0:
        return None
    # first-order error of each log value, doubled for the higher orders
    err = 2 * ((p * ca + rounding.reduce(ma, p)) + (p * cb + rounding.reduce(mb, p))) / abs(span)
    if abs(p - round(p)) <= err and round(p) >= 1:
        return float(round(p)), (float(round(p)),) * 2
    return shortest_inside(p - err, p + err), (p - err, p + err)


def fit(obs: Sequence[Observation], grouping: Grouping, center: float, one_sided: bool, rounding: Rounding,
        power: Optional[Tuple[float, Tuple[float, float]]] = None) -> Optional[Fit]:
    """The hypothesis (grouping, center, one_sided) with its power (estimated unless
    given) and K bracket, or None when no K > 0 explains every observation."""
    if power is None:
        power = _estimate_power(obs, grouping, center, one_sided, rounding)
        if power is None:
            return None
    p, p_range = power
    if p_range[1] < 1:  # the family's penalties are differentiable: power >= 1
        return None
    k_lo, k_hi, bounded = 0.0, math.inf, False
    for o in obs:
        if not math.isfinite(o.value) or o.value < 0:
            return None
        lo, hi = sum_bounds(grouping, o.grads, center, one_sided, p_range, rounding)
        if hi == 0:
            if o.value != 0:
                return None
            continue
        k_lo = max(k_lo, o.value / hi)
        if lo > 0:
            k_hi, bounded = min(k_hi, o.value / lo), True
    if not bounded or k_hi <= 0 or k_lo > k_hi:
        return None
    return Fit(grouping, center, one_sided, p, p_range, (k_lo, k_hi))


def value(fit: Fit, g: torch.Tensor, k: Optional[float] = None) -> torch.Tensor:
    """The hypothesis' value K * sum_rows phi(||row||) at gradient g (differentiable)."""
    norms, _ = row_norms(fit.grouping, g)
    return (fit.k if k is None else k) * phi(norms, fit.center, fit.one_sided, fit.power).sum()
