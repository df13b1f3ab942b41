"""The "triton" backend: the Triton kernels of fastgp/triton/, registered as
the ops fastgp::triton_interpolate, fastgp::triton_penalty_forward and
fastgp::triton_penalty_backward (fastgp/triton/ops.py).

Importing this module is cheap and never fails. Triton (and the torch
machinery behind ``torch.library.triton_op``, several seconds to import) is
loaded on the first call that can use it; without triton ``unavailable_reason``
says why. The kernels run on CUDA devices, and on CPU tensors through the
Triton interpreter when TRITON_INTERPRET=1 was set before they were defined
(set it before importing fastgp and triton; slow, meant for tests).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from typing import Optional

import torch

name = "triton"
# The registered ops (interpolate, penalty_forward, penalty_backward), by qualified name.
ops = ("fastgp::triton_interpolate", "fastgp::triton_penalty_forward", "fastgp::triton_penalty_backward")

_loaded = False
_load_error: Optional[str] = None
INTERPRETED = False  # set by load(): whether the kernels run in the Triton interpreter


def load() -> Optional[str]:
    """Imports the kernels and registers the ops, once; returns why that failed, if it did."""
    global _loaded, _load_error, INTERPRETED
    if not _loaded:
        _loaded = True
        try:
            if not hasattr(torch.library, "triton_op"):
                raise ImportError(f"torch {torch.__version__} has no torch.library.triton_op (needs torch >= 2.6)")
            kernels = importlib.import_module("fastgp.triton.kernels")
            importlib.import_module("fastgp.triton.ops")  # registers fastgp::triton_*
            INTERPRETED = kernels.INTERPRETED
        except Exception as e:  # triton missing or broken: keep fastgp usable, remember why
            _load_error = f"{type(e).__name__}: {e}"
    return _load_error


def _interpreter_requested() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def _installed() -> bool:
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):
        return False


def unavailable_reason(device: torch.device) -> Optional[str]:
    """None if the Triton kernels can run on `device`, else why not."""
    device_type = device.type
    if not _loaded and not _installed():
        return "triton is not installed; install it with `pip install triton`"
    no_interpreter = ("Triton kernels run on CUDA devices; on CPU tensors they run only through the Triton "
                      "interpreter, which needs TRITON_INTERPRET=1 in the environment before fastgp and triton are "
                      "imported (it is slow: meant for tests)")
    if device_type not in ("cpu", "cuda"):
        return f"Triton kernels need a CUDA device, got device type {device_type!r}"
    # Decide what needs no import first: loading triton costs seconds.
    if not _loaded and not _interpreter_requested():
        if device_type == "cpu":
            return no_interpreter
        if not torch.cuda.is_available():
            return "no CUDA device is available"
    error = load()
    if error is not None:
        return f"triton could not be imported ({error}); install it with `pip install triton`"
    if INTERPRETED:
        return None
    if device_type == "cpu":
        return no_interpreter
    return None if torch.cuda.is_available() else "no CUDA device is available"


def _ops():
    error = load()
    if error is not None:
        raise RuntimeError(f"the fastgp Triton backend is unavailable: triton could not be imported ({error})")
    return torch.ops.fastgp


def interpolate(real, fake, alpha):
    return _ops().triton_interpolate.default(real, fake, alpha)


def penalty_forward(grads, inv_scale, weight, center, power, one_sided, reduction):
    return _ops().triton_penalty_forward.default(grads, inv_scale, weight, center, power, one_sided, reduction)


def penalty_backward(grad_out, grads, norms, inv_scale, weight, center, power, one_sided, reduction):
    return _ops().triton_penalty_backward.default(grad_out, grads, norms, inv_scale, weight, center, power,
                                                  one_sided, reduction)
