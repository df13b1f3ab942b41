"""Which implementation runs. Every backend is one small module implementing
the Backend protocol below; PRIORITY lists them in the order ``"auto"`` tries:

  cpp     the compiled C++/CUDA extension          (cpp.py)
  triton  Triton kernels                           (triton.py; kernels in fastgp/triton/)
  torch   the pure-PyTorch reference               (pytorch.py)

``backend="auto"`` takes FASTGP_BACKEND if set (read at the first call on a
device), else the first backend in PRIORITY that is available on the tensors'
device. On CUDA that puts the
extension's kernels before Triton's for every shape class until GPU
benchmarks show Triton ahead on some class; no GPU figures have been measured
yet, so the order is the default, not a measured choice. What the backends
share (reduction codes, fake kernels, Python autograd, the adapter to the
reference) is in shared.py. A new backend joins by implementing the protocol
and taking its place in PRIORITY; the tests then run it through every
correctness test.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Protocol, Sequence, Tuple, Union, runtime_checkable

import torch

from . import cpp, pytorch, triton
from .._ext import warn_fallback


@runtime_checkable
class Backend(Protocol):
    """One implementation of fastgp's ops, with the signatures of the op schemas
    (csrc/fastgp.cpp); `reduction` is a code of shared.REDUCTION_CODES.
    penalty_forward is differentiable w.r.t. grads (its backward is
    penalty_backward); the norms it returns are not."""

    name: str
    ops: Tuple[str, ...]  # the ops it registers ("namespace::op"), whose fake kernels promise output layouts

    def unavailable_reason(self, device: torch.device) -> Optional[str]:
        """None if the backend can run on `device`, else a sentence saying why not."""

    def interpolate(self, real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """alpha_i * real_i + (1 - alpha_i) * fake_i, alpha of shape (B,)."""

    def penalty_forward(self, grads: Sequence[torch.Tensor], inv_scale: Optional[torch.Tensor], weight: float,
                        center: float, power: float, one_sided: bool,
                        reduction: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """(penalty, per-sample norms)."""

    def penalty_backward(self, grad_out: torch.Tensor, grads: Sequence[torch.Tensor], norms: torch.Tensor,
                         inv_scale: Optional[torch.Tensor], weight: float, center: float, power: float,
                         one_sided: bool, reduction: int) -> List[torch.Tensor]:
        """d penalty / d grads, contracted with grad_out."""


PRIORITY: Tuple[Backend, ...] = (cpp, triton, pytorch)
NAMES = tuple(b.name for b in PRIORITY)
BY_NAME: Dict[str, Backend] = {b.name: b for b in PRIORITY}
DeviceLike = Union[str, torch.device, None]


def _device(device: DeviceLike) -> torch.device:
    return torch.device(device) if device is not None else torch.device("cpu")


def get(name: str) -> Backend:
    """The backend module called `name` (one of NAMES)."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"backend must be one of {', '.join(('auto',) + NAMES)}, got {name!r}") from None


def unavailable_reason(name: str, device: DeviceLike = None) -> Optional[str]:
    """None if backend `name` can run on `device` (default: CPU), else a sentence saying why not."""
    backend = BY_NAME.get(name)
    if backend is None:
        return f"unknown backend {name!r}; expected one of {', '.join(('auto',) + NAMES)}"
    return backend.unavailable_reason(_device(device))


def available_backends(device: DeviceLike = None) -> List[str]:
    """Backends that can run on `device` (default: CPU), in PRIORITY order."""
    device = _device(device)
    return [b.name for b in PRIORITY if b.unavailable_reason(device) is None]


def _auto(device: torch.device) -> str:
    """What "auto" picks on `device`: the first available backend of PRIORITY.
    The one place where that choice is made."""
    reasons, cpp_why = [], None
    for backend in PRIORITY:
        why = backend.unavailable_reason(device)
        if why is None:
            if backend is not cpp:  # a missing or mismatched extension warns once (a deliberate choice does not)
                warn_fallback(device, backend.name, cpp_why)
            return backend.name
        if backend is cpp:
            cpp_why = why
        reasons.append(f"{backend.name}: {why}")
    raise RuntimeError(f"no fastgp backend can run on {device}: " + "; ".join(reasons))


_resolved: Dict[Tuple[str, torch.device], str] = {}


# torch.compile calls this once while tracing and bakes in the answer (it queries
# the dispatcher and the environment, which would break a fullgraph=True graph).
@torch.compiler.assume_constant_result
def resolve(backend: str, device: torch.device) -> str:
    """The name of the concrete, available backend that `backend` ("auto" or a
    name) means on `device`; raises when there is none. Cached per (backend,
    device): availability, and FASTGP_BACKEND, are read at the first call."""
    try:
        name = _resolved.get((backend, device))
    except TypeError:  # unhashable: not a name
        name = _resolve(backend, device)
    if name is None:
        name = _resolved[(backend, device)] = _resolve(backend, device)
    return name


def _resolve(backend: str, device: torch.device) -> str:
    if backend == "auto":
        # read once per device, like the availability it overrides (set it before the first call)
        backend = os.environ.get("FASTGP_BACKEND") or "auto"
        if backend == "auto":
            return _auto(device)
    if not isinstance(backend, str):
        raise TypeError(f"backend must be one of {', '.join(('auto',) + NAMES)}, got {backend!r}")
    why = get(backend).unavailable_reason(device)
    if why is not None:
        raise RuntimeError(f"fastgp backend {backend!r} is unavailable on {device.type}: {why}")
    return backend


def backend_for(backend: str, device: torch.device) -> Backend:
    """The backend module that runs a call with `backend` on `device`."""
    return BY_NAME[resolve(backend, device)]


def select_backend(backend: str = "auto", device: DeviceLike = None) -> str:
    """The concrete backend ("cpp", "triton" or "torch") that `backend` names on
    `device` (default: CPU), as the penalty functions resolve it: "auto" honours
    FASTGP_BACKEND, then takes the fastest available; an unavailable backend
    raises a RuntimeError saying why."""
    return resolve(backend, _device(device))

