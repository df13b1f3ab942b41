"""Loads the compiled fastgp._C library, or records why it could not.

Never raises: a missing, disabled or mismatched extension leaves fastgp on its
pure-PyTorch backend and ``fastgp.info()`` says why. When backend "auto" then
falls back to a slower backend, the first such call warns once per device type
with the cause and the fix (``warn_fallback``); a deliberate choice
(FASTGP_DISABLE_EXTENSION=1, a FASTGP_NO_EXTENSION=1 or FASTGP_CPU_ONLY=1
build) does not warn.

Environment:
  FASTGP_DISABLE_EXTENSION=1  do not load the extension (pure-PyTorch only)
  FASTGP_JIT=1                when the prebuilt extension is missing or built
                              for another torch, compile the C++ sources (and
                              the CUDA ones when a GPU and nvcc are there) with
                              ninja against the running torch, cached by
                              torch.utils.cpp_extension. The sources ship in the
                              package (fastgp/_csrc), or come from a checkout.
"""

from __future__ import annotations

import glob
import importlib
import importlib.util
import json
import os
import sys
import warnings
from typing import Optional

import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
REBUILD = "pip install --no-build-isolation ."
_FIX = (f"to fix, rebuild it against this torch (`{REBUILD}` in fastgp's source directory) "
        "or set FASTGP_JIT=1 to compile it on first use")


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


def find_sources(package_dir: str = _HERE) -> Optional[str]:
    """The C++/CUDA source directory for a JIT build: the copy shipped in the
    package (fastgp/_csrc), else a source checkout's csrc/ beside the package."""
    for candidate in (os.path.join(package_dir, "_csrc"), os.path.join(os.path.dirname(package_dir), "csrc")):
        if os.path.isfile(os.path.join(candidate, "fastgp.cpp")):
            return candidate
    return None


def _jit_build() -> dict:
    """Compiles the sources against the running torch; returns the build record.
    The CUDA sources are added when a GPU is visible and torch finds a CUDA
    toolkit; if that build fails, the CPU sources alone are compiled."""
    from torch.utils.cpp_extension import CUDA_HOME, load

    csrc = find_sources()
    if csrc is None:
        raise RuntimeError(f"FASTGP_JIT=1 found no C++ sources in {os.path.join(_HERE, '_csrc')} "
                           f"or {os.path.join(os.path.dirname(_HERE), 'csrc')}")
    sources = sorted(glob.glob(os.path.join(csrc, "*.cpp")) + glob.glob(os.path.join(csrc, "cpu", "*.cpp")))
    cuda_sources = sorted(glob.glob(os.path.join(csrc, "cuda", "*.cu")))
    omp = ["-fopenmp"] if torch.backends.openmp.is_available() and sys.platform.startswith("linux") else []
    verbose = _flag("FASTGP_JIT_VERBOSE")
    record = {"torch_version": torch.__version__, "torch_cuda_version": torch.version.cuda, "with_cuda": False,
              "cuda_archs": None, "jit": True}
    if cuda_sources and torch.version.cuda is not None and torch.cuda.is_available() and CUDA_HOME is not None:
        cuda_flags = ["-DFASTGP_WITH_CUDA"]
        try:
            load(name="fastgp_jit_C_cuda", sources=sources + cuda_sources, extra_cflags=["-O3"] + omp + cuda_flags,
                 extra_cuda_cflags=["-O3", "-lineinfo"] + cuda_flags, extra_ldflags=list(omp), with_cuda=True,
                 is_python_module=False, verbose=verbose)
            return dict(record, with_cuda=True, cuda_archs=os.environ.get("TORCH_CUDA_ARCH_LIST"))
        except Exception as e:  # a toolkit torch cannot use (CUDA_HOME), nvcc errors...
            last_lines = " / ".join([line.strip() for line in str(e).splitlines() if line.strip()][-3:])
            record["cuda_why"] = (f"the JIT build of the CUDA sources failed ({last_lines}; is CUDA_HOME={CUDA_HOME} "
                                  "the CUDA toolkit?), so only the CPU sources were compiled")
    # fresh flag lists per call: load() appends its libraries to the list it is given
    load(name="fastgp_jit_C", sources=sources, extra_cflags=["-O3"] + omp, extra_ldflags=list(omp), with_cuda=False,
         is_python_module=False, verbose=verbose)
    return record


class _State:
    loaded: bool = False
    loaded_from: Optional[str] = None  # which library was loaded: the prebuilt one, or a JIT build
    reason: Optional[str] = None       # why it was not loaded, and the fix
    deliberate: bool = False           # not loaded on purpose: no fallback warning
    build: Optional[dict] = None


state = _State()


def load() -> None:
    state.build = read_build_info()
    if _flag("FASTGP_DISABLE_EXTENSION"):
        state.reason, state.deliberate = "disabled by FASTGP_DISABLE_EXTENSION=1", True
        return
    if state.build is not None and state.build.get("extension") is False:
        problem = f"this install has no C++ extension ({state.build.get('why', 'built without one')})"
        state.deliberate = True
    else:
        problem = _mismatch(state.build) if state.build else None
    if problem is None:
        try:
            # Only the library next to this file: an import hook (an editable install
            # of another checkout, say) could otherwise hand us a foreign build.
            spec = importlib.util.find_spec("fastgp._C")
            if spec is None or spec.origin is None or os.path.dirname(os.path.abspath(spec.origin)) != _HERE:
                raise ImportError(f"no compiled library next to {_HERE} (the extension was not built)")
            importlib.import_module("fastgp._C")
            state.loaded, state.loaded_from = True, "prebuilt fastgp._C"
            return
        except ImportError as e:  # not built, or unloadable
            problem = f"fastgp._C could not be imported ({e})"
    if _flag("FASTGP_JIT"):
        try:
            state.build = _jit_build()
            state.loaded, state.deliberate = True, False
            state.loaded_from = "compiled on first use (FASTGP_JIT=1) against the running torch"
            return
        except Exception as e:  # compiler missing, sources missing...
            problem += f"; JIT build failed: {e}"
            state.deliberate = False
    state.reason = problem if state.deliberate else f"{problem}; {_FIX}"


class FallbackWarning(RuntimeWarning):
    """backend="auto" runs a slower backend because the C++ extension is
    missing, built for another torch, or failed to load."""


_warned_devices: set = set()


def fallback_message(device_type: str, chosen: str, cpp_reason: Optional[str]) -> Optional[str]:
    """The warning for backend "auto" choosing `chosen` over "cpp" (unavailable
    because `cpp_reason`) on `device_type`; None when that is deliberate."""
    if cpp_reason is None or device_type not in ("cpu", "cuda") or state.deliberate:
        return None
    fix = ""
    if state.loaded and device_type == "cuda" and not has_kernel("cuda"):
        if (state.build or {}).get("cpu_only"):  # built without CUDA by choice
            return None
        fix = f"; to fix, rebuild where the GPU is visible, or with `FORCE_CUDA=1 {REBUILD}`"
    return (f"fastgp: backend='auto' runs the slower {chosen!r} backend on {device_type}, not the C++ kernels: "
            f"{cpp_reason}{fix}. (Warned once; FASTGP_BACKEND={chosen} makes the choice explicit.)")


def warn_fallback(device: torch.device, chosen: str, cpp_reason: Optional[str]) -> None:
    """Called when backend "auto" resolved to `chosen` rather than "cpp": warns
    the first time per device type, unless the fallback is deliberate."""
    if device.type in _warned_devices:
        return
    message = fallback_message(device.type, chosen, cpp_reason)
    if message is not None:
        _warned_devices.add(device.type)
        # point at the user's line: the first frame outside this package
        frame, level = sys._getframe(0), 1
        while frame is not None and frame.f_code.co_filename.startswith(_HERE + os.sep):
            frame, level = frame.f_back, level + 1
        warnings.warn(message, FallbackWarning, stacklevel=level)


def has_kernel(device_type: str) -> bool:
    """Whether the loaded library registered kernels for this device type."""
    if not state.loaded:
        return False
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
    return key is not None and torch._C._dispatch_has_kernel_for_dispatch_key("fastgp::penalty_forward", key)


load()
