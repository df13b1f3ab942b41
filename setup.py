"""Builds the fastgp._C extension (everything else is in pyproject.toml).

Knobs (environment variables):
  FASTGP_NO_EXTENSION=1   build no extension at all (pure-PyTorch install)
  FASTGP_CPU_ONLY=1       never compile the CUDA sources
  FORCE_CUDA=1            compile the CUDA sources even without a visible GPU
                          (they are compiled by default whenever torch has CUDA
                          and nvcc is found)
  TORCH_CUDA_ARCH_LIST    CUDA archs, e.g. "8.0;9.0+PTX" (default below)
  MAX_JOBS                parallel compile jobs (ninja)
  FASTGP_DEBUG=1          -O0 -g
"""

import glob
import json
import os
import shutil
import subprocess
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CUDA_ARCHS = "8.0;8.6;8.9;9.0+PTX"


def _flag(name):
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _rel(paths):
    return sorted(os.path.relpath(p, ROOT) for p in paths)


def _locate_cuda_home():
    """torch takes CUDA_HOME to be two levels above the nvcc on PATH; when that
    nvcc is a wrapper script outside the toolkit (so no include/ there), ask
    nvcc where it really lives. Must run before torch.utils.cpp_extension is imported."""
    nvcc = shutil.which("nvcc")
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or nvcc is None:
        return
    if os.path.exists(os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))), "include", "cuda_runtime.h")):
        return
    try:
        out = subprocess.run([nvcc, "--dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return
    for line in (out.stdout + out.stderr).splitlines():
        if line.startswith("#$ _HERE_="):
            home = os.path.dirname(line.split("=", 1)[1].strip())
            if os.path.exists(os.path.join(home, "include", "cuda_runtime.h")):
                os.environ["CUDA_HOME"] = home
            return


def _extensions():
    if _flag("FASTGP_NO_EXTENSION"):
        return [], {}, None
    if not _flag("FASTGP_CPU_ONLY"):
        _locate_cuda_home()
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    sources = _rel(glob.glob(os.path.join(ROOT, "csrc", "*.cpp")) + glob.glob(os.path.join(ROOT, "csrc", "cpu", "*.cpp")))
    cuda_sources = _rel(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")))
    nvcc_found = CUDA_HOME is not None and (
        os.path.exists(os.path.join(CUDA_HOME, "bin", "nvcc")) or shutil.which("nvcc") is not None
    )
    want_cuda = (
        not _flag("FASTGP_CPU_ONLY")
        and bool(cuda_sources)
        and torch.version.cuda is not None
        and (nvcc_found or _flag("FORCE_CUDA"))
    )
    debug = _flag("FASTGP_DEBUG")
    opt = ["-O0", "-g"] if debug else ["-O3"]
    # The C++ standard comes from torch's BuildExtension (what its headers need).
    cxx = opt + ["-fvisibility=hidden"]
    # at::parallel_for is an OpenMP loop in torch's headers: without -fopenmp it
    # silently runs on one thread. The runtime is torch's own libgomp (same soname).
    link = []
    if torch.backends.openmp.is_available() and sys.platform.startswith("linux"):
        cxx.append("-fopenmp")
        link.append("-fopenmp")
    archs = None
    if want_cuda:
        archs = os.environ.get("TORCH_CUDA_ARCH_LIST") or DEFAULT_CUDA_ARCHS
        os.environ["TORCH_CUDA_ARCH_LIST"] = archs
        nvcc = opt + ["-lineinfo"]
        ext = CUDAExtension(
            "fastgp._C",
            sources + cuda_sources,
            extra_compile_args={"cxx": cxx + ["-DFASTGP_WITH_CUDA"], "nvcc": nvcc + ["-DFASTGP_WITH_CUDA"]},
            extra_link_args=link,
            py_limited_api=True,
        )
    else:
        ext = CppExtension(
            "fastgp._C", sources, extra_compile_args={"cxx": cxx}, extra_link_args=link, py_limited_api=True
        )
    info = {
        "torch_version": torch.__version__,
        "torch_cuda_version": torch.version.cuda,
        "with_cuda": want_cuda,
        "cuda_archs": archs,
        "nvcc_found": nvcc_found,
        "debug": debug,
    }

    class BuildWithInfo(BuildExtension):
        """Records what the extension was built against next to it (checked at import)."""

        def run(self):
            super().run()
            for base in {self.build_lib, ROOT} if self.inplace else {self.build_lib}:
                target = os.path.join(base, "fastgp", "_build_info.json")
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with open(target, "w") as f:
                    json.dump(info, f, indent=1)

    return [ext], {"build_ext": BuildWithInfo.with_options(use_ninja=True)}, info


ext_modules, cmdclass, _ = _extensions()
setup(
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    # An abi3 library: the module is an empty PyInit, so one build serves every CPython >= 3.9.
    options={"bdist_wheel": {"py_limited_api": "cp39"}} if ext_modules else {},
)
