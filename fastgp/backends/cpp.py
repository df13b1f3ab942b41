"""The "cpp" backend: the compiled extension fastgp._C (csrc/), whose ops
fastgp::interpolate, fastgp::penalty_forward and fastgp::penalty_backward have
CPU kernels and, in a CUDA build, CUDA kernels. The first-order autograd of
interpolate and penalty_forward is C++ (csrc/autograd.cpp), so a call costs
no Python; the fake kernels and the derivative of penalty_backward come from
shared.py.
"""

from __future__ import annotations

import re
from typing import Optional

import torch

from .._ext import has_kernel, state
from . import shared

name = "cpp"
# The registered ops (interpolate, penalty_forward, penalty_backward), by qualified name.
ops = ("fastgp::interpolate", "fastgp::penalty_forward", "fastgp::penalty_backward")


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


def unavailable_reason(device: torch.device) -> Optional[str]:
    """None if the extension's kernels can run on `device`, else why not."""
    if not state.loaded:
        return f"the C++ extension is not loaded: {state.reason}"
    if not has_kernel(device.type):
        if device.type == "cuda":
            return ("the C++ extension was built without CUDA kernels "
                    f"(with_cuda={(state.build or {}).get('with_cuda')}); rebuild with nvcc available or FORCE_CUDA=1")
        return f"the C++ extension has no kernels for device type {device.type!r}"
    if device.type == "cuda" and torch.cuda.is_available():
        archs = (state.build or {}).get("cuda_archs")
        cap = torch.cuda.get_device_capability(device)
        if not arch_supported(archs, cap):
            return (f"the C++ extension was built for CUDA archs {archs}, which cannot run on this GPU "
                    f"(sm_{cap[0]}{cap[1]}); rebuild with TORCH_CUDA_ARCH_LIST=\"{cap[0]}.{cap[1]}\"")
    return None


if state.loaded:
    shared.register_fake_kernels("fastgp::interpolate", "fastgp::penalty_forward", "fastgp::penalty_backward")
    shared.register_penalty_backward_derivative("fastgp::penalty_backward")
    # The ops themselves are the entry points: no Python frame between the caller and the dispatcher.
    interpolate = torch.ops.fastgp.interpolate.default
    penalty_forward = torch.ops.fastgp.penalty_forward.default
    penalty_backward = torch.ops.fastgp.penalty_backward.default
else:
    def _unloaded(*args, **kwargs):
        raise RuntimeError(f"the fastgp C++ backend is unavailable: the C++ extension is not loaded: {state.reason}")

    interpolate = penalty_forward = penalty_backward = _unloaded
