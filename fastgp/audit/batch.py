"""The audit of a penalty function on one batch shape: run the probes, fit the
value's form, check the points and the gradients, and say what was found."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

import torch

from .. import reference
from . import gradients as grads_check
from .hypotheses import SHAPES, Fit, Observation, Rounding, fit, groupings, row_norms, shortest_inside, value
from .points import alphas_of_single_call, check_points
from .probes import ProbeCallError, ProbeCritic, ProbeFactory, run
from .report import Finding, Variant

# Per-sample gradient norms of the probes. Uniform probes give every sample (and every
# partial norm) one norm each; these are spread on both sides of 1 so that the
# two-sided, one-sided and zero-centered shapes and the power can be read off.
UNIFORM_NORMS = (0.25, 0.45, 0.7, 1.5, 2.2, 3.5, 6.0)
UNIFORM_AT_SECOND_BATCH = (0.45, 2.2, 3.5)
VARIED_NORMS = (0.35, 2.4, 0.6, 1.7, 3.1, 0.45, 1.35, 2.0)  # per sample, at least 0.35 from 1
CURVED_NORMS = (0.4, 1.8, 0.55, 2.6)  # with the curvature term below, the norms stay >= 0.25 from 1
CURVATURE = 0.125  # q: a power of two, so q * x is exact; q * ||x|| <= ~0.2 for the probe data
FLAT_NORM = 1.8  # the non-flat samples of the zero-gradient probe
EXAMPLE_NORM = 1.5  # the uniform probe quoted in messages
FIX_PARTIAL = ("flatten every non-batch dim before the norm: g.reshape(g.shape[0], -1).norm(2, dim=1) "
               "(norm(2, dim=1) of a 4-D gradient is a norm per pixel)")


def second_batch(batch: int) -> int:
    """A second batch size to tell a mean over the batch from a sum."""
    return batch // 2 if batch >= 4 else batch * 2


@dataclass
class ShapeResult:
    shape: Tuple[int, ...]
    error: Optional[str] = None
    findings: List[Finding] = field(default_factory=list)
    fit: Optional[Fit] = None       # the value's form (per-sample for a correct member of the family)
    variant: Optional[Variant] = None
    weight_range: Optional[Tuple[float, float]] = None
    notes: List[str] = field(default_factory=list)
    calls: int = 0

    @property
    def weight(self) -> Optional[float]:
        """The shortest decimal inside the estimated weight's bracket (10.0, not 9.99999993)."""
        return None if self.weight_range is None else shortest_inside(*self.weight_range)


def _f64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(device="cpu", dtype=torch.float64)


def _choose(fits: List[Fit]) -> Optional[Fit]:
    """A correct member when one explains the values (it may coincide with a bug
    form, e.g. a squared norm over the whole batch is a per-sample sum), else the
    whole-batch form, else the partial norm over the most dims."""
    for kind in ("sample", "batch", "dims"):
        for f in fits:
            if f.grouping.kind == kind:
                return f
    return None


def _variant(f: Fit, reduction: Optional[str]) -> Variant:
    kind = "zero-centered" if f.center == 0 else ("one-sided" if f.one_sided else "two-sided")
    return Variant(kind, f.power, reduction, f.center, f.one_sided)


def _form(f: Fit, k: float, count: int) -> str:
    """The fitted form, e.g. 10 * mean((n - 1)^2), or 10 * (n - 1)^2 for a single norm."""
    inner = f"n{' - 1' if f.center else ''}"
    term = f"max(0, {inner})^{f.power:g}" if f.one_sided else (f"({inner})^{f.power:g}" if f.center else
                                                               f"n^{f.power:g}")
    return f"{k * count:.4g} * {term}" if count == 1 else f"{k * count:.4g} * mean({term})"


def _form_finding(f: Fit, example: Observation, shape) -> Finding:
    """whole-batch-norm or partial-norm, with the probe that shows it."""
    if example is None:
        return Finding("whole-batch-norm" if f.grouping.kind == "batch" else "partial-norm",
                       f"the penalty takes {f.grouping.describe(shape)}", FIX_PARTIAL)
    norms, _ = row_norms(f.grouping, example.grads)
    count, v = norms.numel(), float(norms[0])
    correct = f.k * count * float(reference.per_sample_penalty(torch.tensor([EXAMPLE_NORM]), f.center, f.power,
                                                               f.one_sided))
    which = "that norm is" if count == 1 else f"each of the {count} is"
    seen = (f"with an input gradient of norm {EXAMPLE_NORM:g} at each of the {shape[0]} samples, {which} {v:.4g} and "
            f"the value was {example.value:.5g} = {_form(f, f.k, count)}; one norm per sample would give "
            f"{correct:.5g} with that weight")
    if f.grouping.kind == "batch":
        return Finding("whole-batch-norm", f"the penalty takes {f.grouping.describe(shape)}: {seen}",
                       "take one norm per sample: g.flatten(1).norm(2, dim=1), then the mean over the batch")
    return Finding("partial-norm", f"the penalty takes {f.grouping.describe(shape)}: {seen}", FIX_PARTIAL)


def _no_fit_finding(obs: List[Observation]) -> Finding:
    uniform = [o for o in obs if o.uniform]
    if all(o.value == 0 for o in obs):
        seen = "the value was 0 on every probe, whatever the critic's input gradient"
    else:
        pairs = ", ".join(f"{float(o.grads.flatten(1).norm(dim=1)[0]):g} -> {o.value:.5g}" for o in uniform)
        seen = (f"for input gradients of one norm n at every sample it returned (n -> value): {pairs}; this is no "
                "|n - 1|^p, max(0, n - 1)^p or n^p times a weight (other centers than 1 and 0 are not "
                "recognized), neither per sample, nor over the whole batch, nor over part of the dims")
    return Finding("unrecognized", f"the value matches no gradient penalty of the family and no known bug: {seen}",
                   grads_check.FIX_UNRECOGNIZED)


def _reduction(f: Fit, k_at_second: Tuple[float, float], batch: int, batch2: int) -> Optional[str]:
    """mean: K * B does not change with the batch size; sum: K does not."""
    (a, b), (c, d) = f.k_range, k_at_second
    if a * batch <= d * batch2 and c * batch2 <= b * batch:
        return "mean"
    if a <= d and c <= b:
        return "sum"
    return None


class ShapeAudit:
    """Runs fn on probe critics for one batch shape; each step adds to `result`."""

    def __init__(self, fn: Callable, name: str, shape: Tuple[int, ...], dtype: torch.dtype, device: torch.device):
        self.fn, self.name, self.shape, self.dtype, self.device = fn, name, tuple(shape), dtype, device
        self.factory = ProbeFactory(shape, dtype, device)
        self.rounding = Rounding.of(dtype)
        self.batch = shape[0]
        self.real, self.fake = self.factory.data(self.batch)
        self.calls: List[tuple] = []  # (Call, real, fake): every point the critic saw
        self.result = ShapeResult(self.shape)

    def probe(self, directions, real=None, fake=None, curvature=0.0, fake_in=None):
        real = self.real if real is None else real
        fake = self.fake if fake is None else fake
        critic = ProbeCritic(directions, curvature)
        self.result.calls += 1
        y = run(self.fn, self.name, critic, real, fake if fake_in is None else fake_in, self.device)
        self.calls.extend((c, real, fake) for c in critic.calls)
        return critic, y

    def observe(self, directions, uniform, real=None, fake=None):
        critic, y = self.probe(directions, real, fake)
        return critic, y, Observation(_f64(directions), float(y.detach()), uniform)

    # 1. the value's form, from critics with known constant input gradients
    def read_form(self):
        pf, res = self.factory, self.result
        obs = [self.observe(pf.uniform(self.batch, t), True)[2] for t in UNIFORM_NORMS]
        example = obs[UNIFORM_NORMS.index(EXAMPLE_NORM)]
        self.varied = [self.observe(pf.varied(pf.shuffled(VARIED_NORMS, self.batch)), False) for _ in range(3)]
        obs += [o for _, _, o in self.varied]
        finite = [o for o in obs if math.isfinite(o.value)]
        if finite and len(finite) < len(obs):  # e.g. a large power overflowing float16: fit what is finite
            res.notes.append("the value was not finite for input gradients of norm " + ", ".join(
                f"{float(o.grads.flatten(1).norm(dim=1).max()):.3g} ({o.value:g})" for o in obs if o not in finite)
                + f" on {self.shape} in {self.dtype}; the form was read from the other probes")
            obs, example = finite, (example if example in finite else None)
        fits = [f for g in groupings(len(self.shape) - 1) for c, one in SHAPES
                for f in [fit(obs, g, c, one, self.rounding)] if f is not None]
        res.fit = _choose(fits)
        if res.fit is None:
            res.findings.append(_no_fit_finding(obs))
        elif res.fit.grouping.kind != "sample":
            res.findings.append(_form_finding(res.fit, example, self.shape))
            if res.fit.grouping.kind == "batch":
                res.weight_range = res.fit.k_range  # lambda * phi(one norm): K is lambda

    # 2. the reduction over the batch, from a second batch size
    def read_reduction(self):
        res, pf, chosen = self.result, self.factory, self.result.fit
        batch2 = second_batch(self.batch)
        real2, fake2 = pf.data(batch2)
        try:
            obs = [self.observe(pf.uniform(batch2, t), True, real2, fake2)[2] for t in UNIFORM_AT_SECOND_BATCH]
            obs.append(self.observe(pf.varied(pf.shuffled(VARIED_NORMS, batch2)), False, real2, fake2)[2])
        except ProbeCallError as e:
            res.notes.append(f"the batch reduction (mean or sum) is unknown: at batch size {batch2} {e}")
            res.variant = _variant(chosen, None)
            return
        f2 = fit(obs, chosen.grouping, chosen.center, chosen.one_sided, self.rounding,
                 power=(chosen.power, chosen.power_range))
        reduction = None if f2 is None else _reduction(chosen, f2.k_range, self.batch, batch2)
        if reduction is None:
            at2 = "no weight fits" if f2 is None else _form(chosen, f2.k, batch2)
            res.findings.append(Finding(
                "unrecognized", f"the value's form changes with the batch size: {_form(chosen, chosen.k, self.batch)}"
                f" at batch size {self.batch}, {at2} at batch size {batch2}; a penalty averages or sums over the batch",
                grads_check.FIX_UNRECOGNIZED))
            return
        scale = self.batch if reduction == "mean" else 1
        res.weight_range = (chosen.k_range[0] * scale, chosen.k_range[1] * scale)
        res.variant = _variant(chosen, reduction)

    @property
    def weight_rel(self) -> float:
        """Half the relative width of the estimated weight's bracket."""
        if self.result.weight_range is None:
            return 0.0
        lo, hi = self.result.weight_range
        return (hi - lo) / (hi + lo)

    @property
    def reference_variant(self) -> Optional[Variant]:
        """The variant to compare with fastgp.reference, when it and its weight are known."""
        v = self.result.variant
        return v if v is not None and v.reduction is not None else None

    # 3. the parameter gradients, against the reference (or the fitted form)
    def check_parameter_gradients(self):
        res, chosen = self.result, self.result.fit
        critic, y, o = self.varied[0]
        observed = grads_check.gradients(y, [critic.scale])[0]
        s64 = torch.ones(self.batch, dtype=torch.float64, requires_grad=True)
        g64 = s64.reshape(-1, *([1] * (o.grads.dim() - 1))) * o.grads
        v = self.reference_variant
        if v is not None:
            expected, _ = reference.penalty_from_grads([g64], weight=res.weight, center=v.center,
                                                       one_sided=v.one_sided, power=v.power, reduction=v.reduction)
            how = "fastgp.reference"
        else:
            expected, how = value(chosen, g64), "a penalty of this form"
        (expected_grad,) = torch.autograd.grad(expected, s64)
        finding = grads_check.no_graph(o.value, observed, expected_grad, how)
        if finding is None and v is not None:
            norms = o.grads.flatten(1).norm(dim=1)
            value_rel, grad_rel = grads_check.tolerance(chosen, norms, torch.ones(self.batch), self.factory.numel,
                                                        self.rounding, self.weight_rel)
            finding = grads_check.mismatch(
                "a critic with per-sample input gradients", o.value, observed,
                grads_check.Expected(float(expected.detach()), expected_grad, value_rel, grad_rel))
        if finding is not None:
            res.findings.append(finding)

    # 4. NaN or inf at a zero input gradient
    def check_zero_gradient(self):
        half = [0.0 if i % 2 == 0 else FLAT_NORM for i in range(self.batch)]
        probes = []
        for what, norms in ((f"a zero input gradient on {half.count(0.0)} of {self.batch} samples", half),
                            ("a zero input gradient on every sample", [0.0] * self.batch)):
            critic, y = self.probe(self.factory.varied(norms))
            probes.append((what, y.detach(), grads_check.gradients(y, [critic.scale])[0]))
        finding = grads_check.nan_at_zero(probes)
        if finding is not None:
            self.result.findings.append(finding)

    # 5. a critic whose input gradient depends on the point: gradient into fake, reference at the same alphas
    def check_curved_critic(self):
        w = self.factory.varied(self.factory.shuffled(CURVED_NORMS, self.batch))
        fake_leaf = self.fake.detach().clone().requires_grad_(True)
        critic, y = self.probe(w, curvature=CURVATURE, fake_in=fake_leaf.clone())  # like a generator's output
        observed, into_fake = grads_check.gradients(y, [critic.scale, fake_leaf])
        finding = grads_check.leak(into_fake)
        if finding is not None:
            self.result.findings.append(finding)
        alpha = alphas_of_single_call(critic.calls, self.real, self.fake)
        v = self.reference_variant
        if v is None or alpha is None or grads_check.none_or_zero(observed):
            return
        w64, r64, f64 = _f64(w), _f64(self.real), _f64(self.fake)
        critic64 = ProbeCritic(w64, CURVATURE)
        expected = reference.gradient_penalty(critic64, r64, f64, weight=self.result.weight, center=v.center,
                                              one_sided=v.one_sided, power=v.power, alpha=alpha,
                                              reduction=v.reduction)
        (expected_grad,) = torch.autograd.grad(expected, critic64.scale)
        a = alpha.reshape(-1, *([1] * (r64.dim() - 1)))
        g = w64 + CURVATURE * (a * r64 + (1 - a) * f64)
        norms = g.flatten(1).norm(dim=1)
        dot_condition = norms * w64.flatten(1).norm(dim=1) / (g * w64).flatten(1).sum(1).abs()
        # the function's own rounded interpolation moves the gradient by q * 4 eps (|real| + |fake|)
        eps = torch.finfo(self.dtype).eps
        shift = float((CURVATURE * 4 * eps * (r64.flatten(1).norm(dim=1) + f64.flatten(1).norm(dim=1))
                       / norms).max())
        value_rel, grad_rel = grads_check.tolerance(self.result.fit, norms, dot_condition, self.factory.numel,
                                                    self.rounding, self.weight_rel, extra_norm_rel=shift)
        finding = grads_check.mismatch(
            "a critic whose input gradient depends on the point", float(y.detach()), observed,
            grads_check.Expected(float(expected.detach()), expected_grad, value_rel, grad_rel))
        if finding is not None:
            self.result.findings.append(finding)

    def run(self) -> ShapeResult:
        """Raises ProbeCallError when fn cannot be run on a probe of the batch size asked for."""
        self.read_form()
        chosen = self.result.fit
        if chosen is not None and chosen.grouping.kind == "sample":
            self.read_reduction()
        if chosen is not None:
            self.check_parameter_gradients()
        self.check_zero_gradient()
        self.check_curved_critic()
        self.result.findings.extend(check_points(self.calls))  # 6. where the critic was evaluated
        if any(f.code in ("whole-batch-norm", "partial-norm") for f in self.result.findings):
            self.result.variant = None
        return self.result


def audit_shape(fn: Callable, name: str, shape: Tuple[int, ...], dtype: torch.dtype, device: torch.device) \
        -> ShapeResult:
    """The result on this shape; its `error` says why fn could not be run on it."""
    audit = ShapeAudit(fn, name, shape, dtype, device)
    try:
        return audit.run()
    except ProbeCallError as e:
        return ShapeResult(audit.shape, error=str(e), calls=audit.result.calls)
