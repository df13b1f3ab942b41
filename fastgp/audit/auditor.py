"""fastgp.audit(fn): check a hand-written gradient penalty fn(critic, real, fake)."""

from __future__ import annotations

import contextlib
import itertools
import math
import random
import sys
import time
from typing import Callable, List, Optional, Sequence, Tuple

import torch

from .batch import FIX_PARTIAL, ShapeResult, audit_shape
from .probes import check_signature
from .report import CODES, AuditReport, Finding
from .gradients import FIX_UNRECOGNIZED

IMAGE_SHAPE = (8, 3, 4, 5)  # sample dims of distinct sizes whose subsets all have distinct sizes
TABLE_SHAPE = (8, 6)


def _check_shape(shape) -> Tuple[int, ...]:
    if not isinstance(shape, (tuple, list, torch.Size)) or \
            not all(isinstance(s, int) and not isinstance(s, bool) for s in shape):
        raise TypeError(f"shape must be a tuple of ints (batch, *sample_dims), e.g. (8, 3, 32, 32), got {shape!r}")
    if len(shape) < 2 or any(s < 1 for s in shape):
        raise ValueError(f"shape must be (batch, *sample_dims) with at least one sample dim and every size >= 1, "
                         f"got {tuple(shape)}")
    if shape[0] < 2:
        raise ValueError(f"shape[0] (the batch size) must be >= 2: shared alphas and the batch reduction are read "
                         f"from several samples, got {shape[0]}")
    return tuple(shape)


def _check_device(device) -> torch.device:
    if device is None:
        return torch.device("cpu")
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be None, a string or a torch.device, got {type(device).__name__}")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"device must name a torch device such as 'cpu' or 'cuda', got {device!r} ({e})") from None
    if dev.type == "meta":
        raise ValueError("device='meta' holds no values to audit; use 'cpu' or 'cuda'")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but no CUDA device is available")
    return dev


def _check_dtype(dtype) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point or dtype.is_complex:
        raise TypeError(f"dtype must be a floating-point torch.dtype (e.g. torch.float32), got {dtype!r}")
    return dtype


def _name(fn: Callable) -> str:
    module, qual = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if qual is None:
        return repr(fn)
    return qual if module in (None, "__main__") else f"{module}.{qual}"


@contextlib.contextmanager
def _untouched_global_state(device: torch.device):
    """The audit draws from its own generator; what fn draws from the global RNGs
    (torch, CUDA, Python, NumPy) is rolled back, and grad mode is on inside."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    py_state = random.getstate()
    np_random = getattr(sys.modules.get("numpy"), "random", None)
    np_state = np_random.get_state() if np_random is not None else None
    try:
        with torch.random.fork_rng(devices=devices), torch.enable_grad():
            yield
    finally:
        random.setstate(py_state)
        if np_state is not None:
            np_random.set_state(np_state)


def _brackets_overlap(a: Tuple[float, float], b: Tuple[float, float], ratio: float = 1.0) -> bool:
    """Whether the brackets a and b * ratio (of a weight, or of a power) overlap."""
    return a[0] <= b[1] * ratio and b[0] * ratio <= a[1]


def _across_shapes(image: ShapeResult, table: ShapeResult) -> Optional[Finding]:
    """A correct member on each shape, but not the same one: a per-sample form whose
    weight depends on the sample's shape is a norm over part of the dims (for a
    zero-centered squared norm that changes only the weight)."""
    vi, vt = image.variant, table.variant
    if (vi.kind, vi.reduction) != (vt.kind, vt.reduction) or \
            not _brackets_overlap(image.fit.power_range, table.fit.power_range):
        return Finding("unrecognized", f"the penalty is {vi} on {image.shape} but {vt} on {table.shape}",
                       FIX_UNRECOGNIZED)
    if _brackets_overlap(image.weight_range, table.weight_range):
        return None
    seen = (f"the weight depends on the sample's shape: {image.weight:.5g} on {image.shape} but {table.weight:.5g} on "
            f"{table.shape}")
    dims = range(1, len(image.shape))
    for k in range(len(image.shape) - 1):
        for subset in itertools.combinations(dims, k):
            per_image = math.prod(image.shape[d] for d in dims if d not in subset)
            per_row = 1 if 1 in subset else table.shape[1]
            if _brackets_overlap(image.weight_range, table.weight_range, per_row / per_image):
                how = (f"takes a norm over dim{'s' * (len(subset) > 1)} {', '.join(map(str, subset))} only"
                       if subset else "takes no norm (|g| element by element)")
                return Finding("partial-norm", f"{seen}: the function {how} and averages over the {per_image} "
                               f"values this leaves per sample, which for {vi.formula()} changes only the weight, by "
                               "that factor", FIX_PARTIAL)
    return Finding("unrecognized", seen, FIX_UNRECOGNIZED)


def _merge(name: str, results: List[ShapeResult], seconds: float) -> AuditReport:
    done = [r for r in results if r.error is None]
    report = AuditReport(name, shapes=[r.shape for r in results], calls=sum(r.calls for r in results),
                         seconds=seconds)
    if not done:
        report.error = results[0].error
        return report
    for r in results:
        if r.error is not None:
            report.notes.append(f"the batch {r.shape} was skipped: {r.error}")
    several = len(done) > 1
    seen = {}
    for r in done:
        for f in r.findings:
            if f.code not in seen:
                seen[f.code] = Finding(f.code, f"on {r.shape}: {f.message}" if several else f.message, f.fix)
        report.notes.extend(r.notes)
    first = done[0]
    report.variant, report.weight = first.variant, first.weight
    if several and all(r.variant is not None and r.variant.reduction is not None for r in done):
        finding = _across_shapes(done[0], done[1])
        if finding is not None:
            seen.setdefault(finding.code, finding)
            report.variant, report.weight = None, None
    if any(r.variant is None for r in done):
        report.variant = None
    if report.variant is None and first.fit is not None and first.fit.grouping.kind == "batch":
        report.weight = first.weight
    elif report.variant is None:
        report.weight = None
    report.findings = sorted(seen.values(), key=lambda f: CODES.index(f.code))
    return report


def audit(fn: Callable, *, shape: Optional[Sequence[int]] = None, device=None,
          dtype: torch.dtype = torch.float32) -> AuditReport:
    """Check a hand-written gradient penalty ``fn(critic, real, fake) -> scalar tensor``.

    fn is called on probe critics whose input gradients are known in closed form and
    on probe data from the audit's own generator (`shape`, default a small image
    batch, then also a 2-D tabular batch; `device`, default the CPU; `dtype`). The
    report says which member of the family fn computes (variant, weight) and which
    known bugs it has (findings); a function that cannot be run this way gets a
    report with `error` set. Global RNG states are left as they were.
    """
    if not callable(fn):
        raise TypeError(f"fn must be a callable fn(critic, real, fake) returning the penalty, got "
                        f"{type(fn).__name__}")
    shapes = [IMAGE_SHAPE, TABLE_SHAPE] if shape is None else [_check_shape(shape)]
    dev = _check_device(device)
    dtype = _check_dtype(dtype)
    name = _name(fn)
    start = time.perf_counter()
    problem = check_signature(fn, name)
    if problem is not None:
        return AuditReport(name, error=problem)
    with _untouched_global_state(dev):
        results = [audit_shape(fn, name, s, dtype, dev) for s in shapes]
    return _merge(name, results, time.perf_counter() - start)
