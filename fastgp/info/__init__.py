"""What fastgp is running with: ``python -m fastgp.info`` prints it.

A package with a ``__main__`` (not a module) so that ``python -m fastgp.info``
does not re-run a module that ``import fastgp`` has already imported (runpy
warns about that for modules); ``fastgp.info`` itself is the function below."""

from __future__ import annotations

import json
import platform

import torch

from .. import backends
from .._ext import has_kernel, state

__version__ = "0.1.0"


def _triton_version():
    try:
        import triton

        return triton.__version__
    except Exception as e:  # not installed, or broken install
        return f"unavailable ({type(e).__name__}: {e})"


def _cpu_capability():
    if not state.loaded or not has_kernel("cpu"):
        return None
    try:
        return torch.ops.fastgp.cpu_capability()
    except (AttributeError, RuntimeError):  # a library from before the per-capability kernels
        return None


def info() -> dict:
    """Versions, build info, and for each device type every backend's
    availability (True, or the reason it is unavailable)."""
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return {
        "fastgp": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "triton": _triton_version(),
        "threads": torch.get_num_threads(),
        # the CPU kernels' vector variant (ATEN_CPU_CAPABILITY=default|avx2|avx512 forces one)
        "cpu_kernels": _cpu_capability(),
        "extension": {"loaded": state.loaded, "loaded_from": state.loaded_from, "reason": state.reason,
                      "build": state.build},
        "backends": {d: {n: backends.unavailable_reason(n, d) or True for n in backends.NAMES} for d in devices},
        "auto": {d: backends.available_backends(d)[0] for d in devices},
    }


def main() -> None:
    print(json.dumps(info(), indent=2, default=str))
