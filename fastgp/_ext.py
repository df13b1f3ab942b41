"""Loads the compiled fastgp._C library, or records why it could not.

Never raises: a missing, disabled or mismatched extension leaves fastgp on its
pure-PyTorch backend and ``fastgp.info()`` says why.

Environment:
  FASTGP_DISABLE_EXTENSION=1  do not load the extension (pure-PyTorch only)
  FASTGP_JIT=1                when the prebuilt extension is missing or built
                              for another torch, compile the C++ sources with
                              ninja against the running torch (cached by
                              torch.utils.cpp_extension; needs a source checkout)
"""

from __future__ import annotations

import glob
import importlib
import importlib.util
import json
import os
import sys
from typing import Optional

import torch

_HERE = os.path.dirname(os.path.abspath(__file__))


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def read_build_info() -> Optional[dict]:
    path = os.path.join(_HERE, "_build_info.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _mismatch(build: dict) -> Optional[str]:
    """Why a prebuilt library must not be loaded into this process, if it must not."""
    built = build.get("torch_version")
    if built != torch.__version__:
        return f"the extension was built against torch {built}, but torch {torch.__version__} is running"
    if build.get("with_cuda"):
        built_cuda, running_cuda = build.get("torch_cuda_version"), torch.version.cuda
        if running_cuda is None or str(built_cuda).split(".")[0] != running_cuda.split(".")[0]:
            return f"the extension was built for CUDA {built_cuda}, but this torch has CUDA {running_cuda}"
    return None


def _jit_build() -> str:
    """Compiles the CPU sources against the running torch; returns a status line."""
    from torch.utils.cpp_extension import load

    root = os.path.dirname(_HERE)
    csrc = os.path.join(root, "csrc")
    sources = sorted(glob.glob(os.path.join(csrc, "*.cpp")) + glob.glob(os.path.join(csrc, "cpu", "*.cpp")))
    if not sources:
        raise RuntimeError(f"FASTGP_JIT=1 needs the C++ sources next to the package (looked in {csrc})")
    omp = ["-fopenmp"] if torch.backends.openmp.is_available() and sys.platform.startswith("linux") else []
    load(name="fastgp_jit_C", sources=sources, extra_cflags=["-O3"] + omp, extra_ldflags=omp, is_python_module=False,
         verbose=_flag("FASTGP_JIT_VERBOSE"))
    return "compiled on first use (FASTGP_JIT=1) against the running torch"


class _State:
    loaded: bool = False
    how: Optional[str] = None      # how it was loaded
    reason: Optional[str] = None   # why it was not loaded
    build: Optional[dict] = None


state = _State()


def load() -> None:
    state.build = read_build_info()
    if _flag("FASTGP_DISABLE_EXTENSION"):
        state.reason = "disabled by FASTGP_DISABLE_EXTENSION=1"
        return
    problem = _mismatch(state.build) if state.build else None
    if problem is None:
        try:
            # Only the library next to this file: an import hook (an editable install
            # of another checkout, say) could otherwise hand us a foreign build.
            spec = importlib.util.find_spec("fastgp._C")
            if spec is None or spec.origin is None or os.path.dirname(os.path.abspath(spec.origin)) != _HERE:
                raise ImportError(f"no compiled library next to {_HERE} (the extension was not built)")
            importlib.import_module("fastgp._C")
            state.loaded, state.how = True, "prebuilt fastgp._C"
            return
        except ImportError as e:  # not built, or unloadable
            problem = f"fastgp._C could not be imported ({e})"
    if _flag("FASTGP_JIT"):
        try:
            state.how = _jit_build()
            state.loaded = True
            state.build = {"torch_version": torch.__version__, "with_cuda": False, "jit": True}
            return
        except Exception as e:  # compiler missing, sources missing...
            problem += f"; JIT build failed: {e}"
    state.reason = problem + ("" if _flag("FASTGP_JIT") else "; set FASTGP_JIT=1 to compile it on first use")


def has_kernel(device_type: str) -> bool:
    """Whether the loaded library registered kernels for this device type."""
    if not state.loaded:
        return False
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
    return key is not None and torch._C._dispatch_has_kernel_for_dispatch_key("fastgp::penalty_forward", key)


load()
