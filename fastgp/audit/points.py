"""Where the critic was evaluated: on the segments real_i -> fake_i, with which alphas.

A point x_i on the segment is x_i = a_i real_i + (1 - a_i) fake_i. The least-squares
a_i and the distance of x_i from the line follow in closed form; a correct float
interpolation misses the exact point by at most 4 eps (|a_i real_i| + |(1 - a_i) fake_i|)
+ eps |x_i| per element (a product, a difference and a sum, each rounded, then the
stored result), so a larger distance is not rounding, and that bound divided by
the segment's length bounds the error of a_i.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch

from .probes import Call
from .report import Finding

FIX_INTERPOLATE = ("evaluate the critic at x_hat = alpha * real + (1 - alpha) * fake with one alpha ~ U[0, 1) per "
                   "sample (fastgp.interpolate(real, fake) does it)")
FIX_SHARED = ("draw one alpha per sample: alpha = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), "
              "device=real.device), e.g. shape (B, 1, 1, 1) for images (fastgp.interpolate does it)")


@dataclass
class Segments:
    """The alphas and off-segment distances of one call of the critic."""

    alpha: torch.Tensor     # (B,) least-squares position on the segment
    slack: torch.Tensor     # (B,) bound of the rounding error of alpha
    distance: torch.Tensor  # (B,) distance of the point from the segment's line
    bound: torch.Tensor     # (B,) largest distance rounding can explain
    length: torch.Tensor    # (B,) length of the segment

    @property
    def on_segment(self) -> torch.Tensor:
        return self.distance <= self.bound

    @property
    def in_range(self) -> torch.Tensor:
        return (self.alpha >= -self.slack) & (self.alpha <= 1 + self.slack)

    @property
    def shared(self) -> bool:
        hi, lo = int(self.alpha.argmax()), int(self.alpha.argmin())
        return bool(self.alpha[hi] - self.alpha[lo] <= self.slack[hi] + self.slack[lo])


def segments(call: Call, real: torch.Tensor, fake: torch.Tensor) -> Segments:
    x = call.points
    r, f = (t.detach().to(device="cpu", dtype=torch.float64) for t in (real, fake))
    d = (r - f).flatten(1)
    length = d.norm(dim=1)
    alpha = ((x - f).flatten(1) * d).sum(1) / length.square()
    a = alpha.reshape(-1, *([1] * (x.dim() - 1)))
    distance = (x - f - a * (r - f)).flatten(1).norm(dim=1)
    eps = max(torch.finfo(call.dtype).eps, torch.finfo(real.dtype).eps)
    bound = (4 * eps * (a.abs() * r.abs() + (1 - a).abs() * f.abs()) + eps * x.abs()).flatten(1).norm(dim=1)
    return Segments(alpha, bound / length, distance, bound, length)


def penalized_calls(calls: Sequence[Call]) -> List[Call]:
    """The calls whose input requires grad (where an input gradient is taken); all calls if none does."""
    return [c for c in calls if c.requires_grad] or list(calls)


def alphas_of_single_call(calls: Sequence[Call], real, fake) -> Optional[torch.Tensor]:
    """The per-sample alphas when the function evaluated the critic once, on the segments."""
    calls = penalized_calls(calls)
    if len(calls) != 1:
        return None
    s = segments(calls[0], real, fake)
    return s.alpha if bool(s.on_segment.all() & s.in_range.all()) else None


def check_points(calls: Sequence[tuple]) -> List[Finding]:
    """calls: (Call, real, fake) for every call the function made on the probes."""
    any_grad = any(c.requires_grad for c, _, _ in calls)
    segs = [segments(c, r, f) for c, r, f in calls if c.requires_grad or not any_grad]
    if not segs:
        return [Finding("unrecognized", "the function never called the critic it was given, so its penalty "
                        "cannot be the critic's gradient penalty", "call critic(x_hat) and differentiate its "
                        "output with respect to x_hat")]
    findings = []
    points = sum(len(s.alpha) for s in segs)
    off = [(k, i, s) for k, s in enumerate(segs) for i in torch.nonzero(~s.on_segment).flatten().tolist()]
    if off:
        k, i, s = max(off, key=lambda t: float(t[2].distance[t[1]] / t[2].length[t[1]]))
        findings.append(Finding(
            "not-interpolated",
            f"{len(off)} of {points} points where the critic was evaluated lie off the segments real_i -> fake_i; "
            f"the farthest (call {k + 1}, sample {i}) is {float(s.distance[i]):.3g} from its segment's line "
            f"(segment length {float(s.length[i]):.3g}; rounding explains {float(s.bound[i]):.2g})",
            FIX_INTERPOLATE))
        return findings  # alphas mean nothing off the segments
    out = [(k, i, s) for k, s in enumerate(segs) for i in torch.nonzero(~s.in_range).flatten().tolist()]
    if out:
        k, i, s = max(out, key=lambda t: float(abs(t[2].alpha[t[1]] - 0.5)))
        findings.append(Finding(
            "not-interpolated",
            f"{len(out)} of {points} points lie on the lines through real_i and fake_i but outside the segments: "
            f"alpha = {float(s.alpha[i]):.4g} for sample {i} of call {k + 1} (alpha must lie in [0, 1])",
            FIX_INTERPOLATE))
    if all(s.shared for s in segs):
        values = sorted({round(float(s.alpha.mean()), 4) for s in segs})
        shown = ", ".join(f"{v:g}" for v in values[:4]) + (", ..." if len(values) > 4 else "")
        batch = len(segs[0].alpha)
        where = (f"alpha = {shown} for every sample of every call" if len(values) == 1
                 else f"one alpha per call ({shown})")
        findings.append(Finding(
            "shared-alpha",
            f"in each of {len(segs)} calls all {batch} samples were interpolated with the same alpha: {where}",
            FIX_SHARED))
    return findings
