"""Probe critics whose input gradients are known in closed form, and the calling of
the audited function on them.

ProbeCritic: D(x)_i = s_i * <W_i, x_i> + (q / 2) * ||x_i||^2 with a trainable
per-sample scale s (ones), so the input gradient at sample i is s_i W_i + q x_i
exactly: W_i alone whatever x when q = 0 (the penalty's value then does not depend
on the points), and through the curvature q it depends on the points (so a
gradient can reach `fake`). Every call is recorded for the check of the points.
"""

from __future__ import annotations

import inspect
import math
import re
import traceback
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import torch


class ProbeCallError(Exception):
    """The audited function could not be run on a probe; the message says why (and how to wrap it)."""


@dataclass(eq=False)
class Call:
    points: torch.Tensor  # the critic's input, detached, float64 on the CPU
    dtype: torch.dtype    # its dtype as the function passed it
    requires_grad: bool


class ProbeCritic(torch.nn.Module):
    def __init__(self, directions: torch.Tensor, curvature: float = 0.0):
        super().__init__()
        self.register_buffer("directions", directions)
        self.scale = torch.nn.Parameter(torch.ones(directions.shape[0], dtype=directions.dtype,
                                                   device=directions.device))
        self.curvature = curvature  # a power of two: q x is then computed exactly
        self.calls: List[Call] = []

    def forward(self, x):
        expected = tuple(self.directions.shape)
        if not isinstance(x, torch.Tensor) or tuple(x.shape) != expected:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ProbeCallError(f"called the critic on {got}; the audit's critic scores batches shaped "
                                 f"like real and fake, {expected} (one score per sample)")
        self.calls.append(Call(x.detach().to(device="cpu", dtype=torch.float64), x.dtype, x.requires_grad))
        out = self.scale.to(x.dtype) * (self.directions.to(x.dtype) * x).flatten(1).sum(1)
        if self.curvature:
            out = out + (0.5 * self.curvature) * x.flatten(1).square().sum(1)
        return out.unsqueeze(1)  # (B, 1), like nn.Linear(..., 1)


class ProbeFactory:
    """Deterministic probe inputs from the audit's own generator (the global RNG is the user's)."""

    def __init__(self, shape: Tuple[int, ...], dtype: torch.dtype, device: torch.device, seed: int = 0):
        self.sample_shape = tuple(shape[1:])
        self.numel = math.prod(self.sample_shape)
        self.dtype, self.device = dtype, device
        self.gen = torch.Generator().manual_seed(seed)

    def _cast(self, x64: torch.Tensor) -> torch.Tensor:
        return x64.to(dtype=self.dtype, device=self.device)

    def data(self, batch: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """real and fake with per-sample norms about 1."""
        std = 1 / math.sqrt(self.numel)
        real = torch.randn(batch, *self.sample_shape, generator=self.gen, dtype=torch.float64) * std
        fake = torch.randn(batch, *self.sample_shape, generator=self.gen, dtype=torch.float64) * std
        return self._cast(real), self._cast(fake)

    def uniform(self, batch: int, norm: float) -> torch.Tensor:
        """Every element of magnitude norm / sqrt(numel), random signs: every sample's
        gradient has norm `norm`, and a norm over any subset of its dims is
        norm * sqrt(subset size / numel), the same for every sample and position."""
        signs = torch.randint(0, 2, (batch, *self.sample_shape), generator=self.gen, dtype=torch.int64) * 2 - 1
        return self._cast(signs.to(torch.float64) * (norm / math.sqrt(self.numel)))

    def varied(self, norms) -> torch.Tensor:
        """Random directions (uneven magnitudes) with the given per-sample norms (0 = flat)."""
        norms = torch.as_tensor(norms, dtype=torch.float64)
        u = torch.randn(len(norms), *self.sample_shape, generator=self.gen, dtype=torch.float64)
        u = u / u.flatten(1).norm(dim=1).reshape(-1, *([1] * len(self.sample_shape)))
        return self._cast(u * norms.reshape(-1, *([1] * len(self.sample_shape))))

    def shuffled(self, values, batch: int) -> List[float]:
        """`batch` values cycled from `values`, in a random order."""
        order = torch.randperm(batch, generator=self.gen).tolist()
        return [values[k % len(values)] for k in order]


# ---------------------------------------------------------------- calling fn
def _where(e: BaseException) -> str:
    """The innermost frame of the traceback outside torch and fastgp: where the user's code failed."""
    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if not re.search(r"[/\\](torch|fastgp)[/\\]", f.filename)]
    return f" (at {frames[-1].filename}:{frames[-1].lineno}, in {frames[-1].name})" if frames else ""


def _needs_cuda(e: BaseException) -> bool:
    return not torch.cuda.is_available() and re.search(r"cuda|nvidia", str(e), re.IGNORECASE) is not None


def describe_failure(name: str, e: BaseException, device: torch.device) -> str:
    if isinstance(e, ProbeCallError):
        return f"{name} {e}"
    what = f"{type(e).__name__}: {e}".strip().splitlines()[0]
    if _needs_cuda(e):
        return (f"{name} needs CUDA: it puts tensors on a GPU itself ({what}){_where(e)}, and no CUDA device is "
                "available here. Run the audit on a machine with a GPU (device='cuda', or --device cuda), or let "
                "the function follow its inputs' device (device=real.device instead of .cuda()).")
    hint = ""
    if "same device" in str(e) and device.type == "cpu" and torch.cuda.is_available():
        hint = " The function seems to put tensors on a GPU itself: audit it with device='cuda' (--device cuda)."
    hint = hint or (" If it needs a particular batch shape, dtype or device, pass shape=, dtype=, device= "
                    "(--shape, --dtype, --device on the command line).")
    return f"{name} failed on the audit's probe ({what}){_where(e)}.{hint}"


def wrapper_hint(fn: Callable, name: str) -> str:
    """How to wrap fn as gp(critic, real, fake), using its own parameter names."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        params = []
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    extra = [p for p in positional[3:] + [p for p in params if p.kind == p.KEYWORD_ONLY]
             if p.default is p.empty]
    fill = {"device": "real.device", "batch_size": "real.shape[0]"}
    args = ["critic", "real", "fake"][:len(positional)] + [f"{p.name}={fill.get(p.name, '...')}" for p in extra]
    call = f"{getattr(fn, '__name__', name)}({', '.join(args)})"
    if len(positional) < 3:
        call += "  # and make it use `critic` as the critic"
    return ("Wrap it in a function of (critic, real, fake) that returns the penalty as a scalar tensor, e.g.\n\n"
            f"    def gp(critic, real, fake):\n        return {call}\n\nand audit that one.")


def check_signature(fn: Callable, name: str) -> Optional[str]:
    """None when fn can be called as fn(critic, real, fake), else why not and how to wrap it."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None  # a builtin or C function: let the call decide
    try:
        sig.bind(object(), object(), object())
    except TypeError as e:
        return f"{name}{sig} cannot be called as fn(critic, real, fake): {e}.\n{wrapper_hint(fn, name)}"
    return None


def as_penalty(out, fn: Callable, name: str) -> torch.Tensor:
    """fn's return value as a one-element tensor (a Python number carries no graph)."""
    if isinstance(out, (int, float)) and not isinstance(out, bool):
        return torch.tensor(float(out), dtype=torch.float64)
    if isinstance(out, torch.Tensor) and out.numel() == 1 and out.is_floating_point():
        return out.reshape(())
    if isinstance(out, (tuple, list)):
        first = next((k for k, o in enumerate(out) if isinstance(o, torch.Tensor) and o.numel() == 1), None)
        hint = ("" if first is None else
                f"\nWrap it: def gp(critic, real, fake): return {getattr(fn, '__name__', name)}"
                f"(critic, real, fake)[{first}]")
        raise ProbeCallError(f"{name} returned a {type(out).__name__} of {len(out)}; the audit needs the penalty as "
                             f"a scalar tensor.{hint}")
    what = (f"a tensor of shape {tuple(out.shape)} and dtype {out.dtype}" if isinstance(out, torch.Tensor)
            else type(out).__name__)
    raise ProbeCallError(f"{name} returned {what}; the audit needs the penalty as a scalar (one-element) floating "
                         "tensor. If it returns per-sample penalties, wrap it: "
                         "def gp(critic, real, fake): return fn(critic, real, fake).mean()")


def run(fn: Callable, name: str, critic: ProbeCritic, real: torch.Tensor, fake: torch.Tensor,
        device: torch.device) -> torch.Tensor:
    """fn(critic, real, fake) as a one-element tensor, or ProbeCallError saying why not."""
    try:
        out = fn(critic, real, fake)
    except ProbeCallError as e:
        raise ProbeCallError(describe_failure(name, e, device)) from None
    except Exception as e:  # the user's code: any failure becomes a report, not a traceback
        raise ProbeCallError(describe_failure(name, e, device)) from e
    return as_penalty(out, fn, name)
