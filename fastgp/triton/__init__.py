"""The "triton" backend: Triton kernels registered as fastgp ops.

Importing this package is cheap and never fails. Triton (and the torch
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
from typing import List, Optional, Sequence

import torch

from ..ops import REDUCTION_CODES

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
            kernels = importlib.import_module(".kernels", __name__)
            importlib.import_module(".ops", __name__)  # registers fastgp::triton_*
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


def unavailable_reason(device_type: str) -> Optional[str]:
    """None if the Triton kernels can run on this device type, else why not."""
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


def interpolate(real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    return _ops().triton_interpolate(real, fake, alpha)


def penalty(grads: Sequence[torch.Tensor], inv_scale: Optional[torch.Tensor], weight: float, center: float,
            power: float, one_sided: bool, reduction: str):
    """Returns (penalty, norms)."""
    grads_list: List[torch.Tensor] = list(grads)
    return _ops().triton_penalty_forward(grads_list, inv_scale, float(weight), float(center), float(power),
                                         bool(one_sided), REDUCTION_CODES[reduction])
