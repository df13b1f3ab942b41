"""Which implementation runs: "cpp" (the compiled C++/CUDA extension),
"triton" (Triton kernels), "torch" (the pure-PyTorch reference).

``backend="auto"`` takes FASTGP_BACKEND if set, else the fastest available for
the tensors' device: cpp, then triton, then torch. On CUDA that puts the
extension's kernels before Triton's for every shape class until GPU benchmarks
show Triton ahead on some class; no GPU figures have been measured yet, so the
order is the default, not a measured choice. Every backend exposes the
same two entry points:
  interpolate(real, fake, alpha) -> x_hat
  penalty(grads, inv_scale, weight, center, power, one_sided, reduction) -> (penalty, norms)
"""

from __future__ import annotations

import importlib
import os
import re
from types import SimpleNamespace
from typing import Dict, List, Optional, Union

import torch

from . import reference
from ._ext import has_kernel, state, warn_fallback

NAMES = ("cpp", "triton", "torch")
_AUTO_ORDER = ("cpp", "triton", "torch")


def _triton_module():
    return importlib.import_module("fastgp.triton")


def arch_supported(archs: Optional[str], capability) -> bool:
    """Whether CUDA code built for `archs` (a TORCH_CUDA_ARCH_LIST string such as
    "8.0;9.0+PTX") runs on a device of `capability` (major, minor): machine code
    runs on the same major with an equal or newer minor, PTX on anything newer."""
    if not archs:
        return True  # not recorded: let the launch decide
    major, minor = capability
    for entry in re.split(r"[;,\s]+", archs.strip()):
        m = re.match(r"(\d+)\.(\d+)[a-z]?(\+PTX)?$", entry)
        if not m:
            continue
        a_major, a_minor, ptx = int(m.group(1)), int(m.group(2)), m.group(3)
        if (a_major == major and a_minor <= minor) or (ptx and (a_major, a_minor) <= (major, minor)):
            return True
    return False


def unavailable_reason(name: str, device: Union[str, torch.device, None] = None) -> Optional[str]:
    """None if `name` can run on `device`, else a sentence saying why not."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    device_type = device.type
    if name == "torch":
        return None
    if name == "cpp":
        if not state.loaded:
            return f"the C++ extension is not loaded: {state.reason}"
        if not has_kernel(device_type):
            build = state.build or {}
            if device_type == "cuda":
                return ("the C++ extension was built without CUDA kernels "
                        f"(with_cuda={build.get('with_cuda')}); rebuild with nvcc available or FORCE_CUDA=1")
            return f"the C++ extension has no kernels for device type {device_type!r}"
        if device_type == "cuda" and torch.cuda.is_available():
            archs = (state.build or {}).get("cuda_archs")
            cap = torch.cuda.get_device_capability(device)
            if not arch_supported(archs, cap):
                return (f"the C++ extension was built for CUDA archs {archs}, which cannot run on this GPU "
                        f"(sm_{cap[0]}{cap[1]}); rebuild with TORCH_CUDA_ARCH_LIST=\"{cap[0]}.{cap[1]}\"")
        return None
    if name == "triton":
        try:
            mod = _triton_module()
        except ImportError as e:
            return f"the Triton backend could not be imported ({e})"
        return mod.unavailable_reason(device_type)
    return f"unknown backend {name!r}; expected one of {', '.join(('auto',) + NAMES)}"


def available_backends(device: Union[str, torch.device, None] = None) -> List[str]:
    """Backends that can run on `device` (default: CPU), fastest first."""
    return [n for n in _AUTO_ORDER if unavailable_reason(n, device) is None]


_resolved: Dict[tuple, str] = {}


# torch.compile calls this once while tracing and bakes in the answer (it queries
# the dispatcher and the environment, which would break a fullgraph=True graph).
@torch.compiler.assume_constant_result
def resolve(backend: str, device: torch.device) -> str:
    """Maps a user's backend choice to a concrete, available backend or raises."""
    if backend == "auto":
        backend = os.environ.get("FASTGP_BACKEND", "auto") or "auto"
    key = (backend, str(device))
    hit = _resolved.get(key)
    if hit is not None:
        return hit
    if backend == "auto":
        # first available, without probing the slower-to-import ones needlessly
        name = next(n for n in _AUTO_ORDER if unavailable_reason(n, device) is None)
        if name != "cpp":  # a missing or mismatched extension warns once (a deliberate choice does not)
            warn_fallback(device, name, unavailable_reason("cpp", device))
    elif backend in NAMES:
        why = unavailable_reason(backend, device)
        if why is not None:
            raise RuntimeError(f"fastgp backend {backend!r} is unavailable on {device.type}: {why}")
        name = backend
    else:
        raise ValueError(f"backend must be one of {', '.join(('auto',) + NAMES)}, got {backend!r}")
    _resolved[key] = name
    return name


def select_backend(backend: str = "auto", device: Union[str, torch.device, None] = None) -> str:
    """The concrete backend ("cpp", "triton" or "torch") that `backend` names on
    `device` (default: CPU), as the penalty functions resolve it: "auto" honours
    FASTGP_BACKEND, then takes the fastest available; an unavailable backend
    raises a RuntimeError saying why."""
    return resolve(backend, torch.device(device) if device is not None else torch.device("cpu"))


def implementation(name: str):
    """The module-like object holding `interpolate` and `penalty` for a backend."""
    if name == "cpp":
        from . import ops

        return ops
    if name == "triton":
        return _triton_module()
    return _TORCH


def _torch_penalty(grads, inv_scale, weight, center, power, one_sided, reduction):
    return reference.penalty_from_grads(list(grads), weight=weight, center=center, power=power, one_sided=one_sided,
                                        reduction=reduction, inv_scale=inv_scale)


_TORCH = SimpleNamespace(interpolate=reference.interpolate, penalty=_torch_penalty)
