"""What an audit returns: findings, the variant a correct function computes, a readable report."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

# Every finding code, in the order reports list them.
CODES = (
    "whole-batch-norm",   # one norm over the whole batch
    "partial-norm",       # a norm over some non-batch dims only (per pixel, per element, ...)
    "shared-alpha",       # one interpolation weight for the whole batch
    "not-interpolated",   # points off the real_i-fake_i segments, or alpha outside [0, 1]
    "nan-at-zero",        # NaN/inf value or parameter gradient at a zero input gradient
    "no-graph",           # the penalty gives the critic's parameters no gradient
    "gradient-leak",      # the penalty's backward reaches `fake` (the generator)
    "unrecognized",       # the value matches neither the family nor a known bug
)


@dataclass(frozen=True)
class Finding:
    code: str     # one of CODES
    message: str  # what was observed, with numbers
    fix: str      # how to correct it

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}\n    fix: {self.fix}"


@dataclass(frozen=True)
class Variant:
    """A member of the penalty family: weight * reduce_i phi(||g_i||), with
    phi(n) = |n - center|^power, or max(0, n - center)^power when one_sided."""

    kind: str         # "two-sided", "one-sided" or "zero-centered"
    power: float
    reduction: Optional[str]  # "mean" or "sum" over the batch; None when the audit could not vary the batch size
    center: float
    one_sided: bool

    def gradient_penalty_kwargs(self, weight: Optional[float] = None) -> dict:
        """The keyword arguments of fastgp.gradient_penalty that compute the same penalty."""
        kwargs = {}
        if weight is not None and weight != 1.0:
            kwargs["weight"] = weight
        if self.center != 1.0:
            kwargs["center"] = self.center
        if self.one_sided:
            kwargs["one_sided"] = True
        if self.power != 2.0:
            kwargs["power"] = self.power
        if self.reduction not in (None, "mean"):
            kwargs["reduction"] = self.reduction
        return kwargs

    def formula(self) -> str:
        p = f"{self.power:g}"
        if self.kind == "zero-centered":
            return f"||g_i||^{p}"
        return f"max(0, ||g_i|| - 1)^{p}" if self.one_sided else f"(||g_i|| - 1)^{p}"

    def __str__(self) -> str:
        red = {"mean": "mean over the batch", "sum": "sum over the batch",
               None: "batch reduction unknown"}[self.reduction]
        return f"{self.kind}, power {self.power:g}, {red}: {self.formula()}"


def _format_number(x: float) -> str:
    return f"{x:.6g}"


@dataclass
class AuditReport:
    """The result of fastgp.audit(fn). ok: no finding and nothing that kept the
    audit from running (error is None)."""

    target: str
    findings: List[Finding] = field(default_factory=list)
    weight: Optional[float] = None       # the estimated lambda
    variant: Optional[Variant] = None    # set when the value is that of a correct member of the family
    error: Optional[str] = None          # why fn could not be audited (it cannot be called as fn(critic, real, fake))
    notes: List[str] = field(default_factory=list)
    shapes: List[Tuple[int, ...]] = field(default_factory=list)  # the batch shapes probed
    calls: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and not self.findings

    @property
    def codes(self) -> List[str]:
        return [f.code for f in self.findings]

    def equivalent_call(self) -> Optional[str]:
        """The fastgp call computing the same penalty, when fn is a correct member of the family."""
        if self.variant is None or self.weight is None:
            return None
        kwargs = self.variant.gradient_penalty_kwargs(float(_format_number(self.weight)))
        args = "".join(f", {k}={v!r}" for k, v in kwargs.items())
        return f"fastgp.gradient_penalty(critic, real, fake{args})"

    def __str__(self) -> str:
        if self.error is not None:
            return f"fastgp.audit: {self.target}: cannot audit\n" + textwrap.indent(self.error, "  ")
        status = "OK" if self.ok else f"{len(self.findings)} finding{'s' * (len(self.findings) != 1)}"
        probed = ", ".join(str(tuple(s)) for s in self.shapes)
        lines = [f"fastgp.audit: {self.target}: {status}",
                 f"  probed: batches {probed}; {self.calls} calls in {self.seconds:.2f} s"]
        if self.variant is not None:
            lines.append(f"  computes: {self.variant}" +
                         (f", weight {_format_number(self.weight)}" if self.weight is not None else ""))
            call = self.equivalent_call()
            if call is not None:
                lines.append(f"  same as: {call}")
        elif self.weight is not None:
            lines.append(f"  weight: {_format_number(self.weight)}")
        for f in self.findings:
            lines.append(textwrap.indent(str(f), "  "))
        for n in self.notes:
            lines.append(f"  note: {n}")
        return "\n".join(lines)
