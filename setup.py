"""Builds the fastgp._C extension and ships its C++/CUDA sources in the package
(fastgp/_csrc, for FASTGP_JIT=1); everything else is in pyproject.toml.

Knobs (environment variables):
  FASTGP_NO_EXTENSION=1   build no extension at all (pure-PyTorch install)
  FASTGP_CPU_ONLY=1       never compile the CUDA sources
  FORCE_CUDA=1            compile the CUDA sources even without a visible GPU
                          (by default they are compiled only when a CUDA device
                          is visible at build time, torch has CUDA and nvcc is found)
  TORCH_CUDA_ARCH_LIST    CUDA archs, e.g. "8.0;9.0+PTX"; default: the visible
                          devices' archs, or DEFAULT_CUDA_ARCHS with FORCE_CUDA=1 and no GPU
  MAX_JOBS                parallel compile jobs (ninja)
  FASTGP_DEBUG=1          -O0 -g

Object files live in build/ninja-<key> of the source tree, where the key hashes
the torch install and the compile flags: a reinstall with unchanged sources (an
editable install builds in a fresh temporary directory each time) finds them up
to date, and another torch or other flags get a directory of their own.
"""

import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CUDA_ARCHS = "8.0;8.6;8.9;9.0+PTX"
SHIPPED_SOURCES = os.path.join("fastgp", "_csrc")  # where the wheel carries csrc/
SOURCE_PATTERNS = ("*.cpp", "*.h", "*.cu", "*.cuh")


def _flag(name, env=None):
    return (os.environ if env is None else env).get(name, "0").lower() in ("1", "true", "yes", "on")


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


def visible_capabilities():
    """(major, minor) of every CUDA device visible now, clamped (as torch does) to
    the newest arch this torch was built for; [] without a device."""
    import torch

    if torch.version.cuda is None or not torch.cuda.is_available():
        return []
    sms = [int("".join(c for c in a.split("_")[1] if c.isdigit())) for a in torch.cuda.get_arch_list() if "sm_" in a]
    newest = max(((sm // 10, sm % 10) for sm in sms), default=(99, 9))
    return [min(newest, torch.cuda.get_device_capability(i)) for i in range(torch.cuda.device_count())]


def cuda_plan(env, torch_cuda, capabilities, nvcc_found):
    """Whether to compile the CUDA sources and for which archs.

    env: the environment; torch_cuda: torch.version.cuda; capabilities: the
    visible devices' (major, minor); nvcc_found: whether a CUDA compiler is there.
    Returns {"with_cuda": bool, "archs": str or None, "why": str, "cpu_only": bool},
    cpu_only: CUDA left out by choice (FASTGP_CPU_ONLY=1), so a fallback is not warned about."""
    if _flag("FASTGP_CPU_ONLY", env):
        return {"with_cuda": False, "archs": None, "why": "FASTGP_CPU_ONLY=1", "cpu_only": True}
    if torch_cuda is None:
        return {"with_cuda": False, "archs": None, "why": "torch was built without CUDA"}
    forced = _flag("FORCE_CUDA", env)
    if not forced and not capabilities:
        return {"with_cuda": False, "archs": None,
                "why": "no CUDA device was visible at build time (FORCE_CUDA=1 compiles the CUDA kernels anyway)"}
    if not forced and not nvcc_found:
        return {"with_cuda": False, "archs": None,
                "why": "a CUDA device is visible but nvcc was not found (set CUDA_HOME)"}
    archs = env.get("TORCH_CUDA_ARCH_LIST", "")
    if not archs or archs == "native":
        if capabilities:
            visible = sorted(set(capabilities))
            archs = ";".join(f"{a}.{b}" for a, b in visible) + "+PTX"
        else:
            archs = DEFAULT_CUDA_ARCHS
    return {"with_cuda": True, "archs": archs,
            "why": "FORCE_CUDA=1" if forced else "a CUDA device is visible at build time"}


def object_dir(root, torch_dir, info, flags):
    """The persistent ninja build directory for this torch install and these flags."""
    key = json.dumps({"torch_dir": torch_dir, "info": info, "flags": flags,
                      "python": list(sys.version_info[:2])}, sort_keys=True)
    return os.path.join(root, "build", "ninja-" + hashlib.sha256(key.encode()).hexdigest()[:16])


def shipped_sources(root):
    """The C++/CUDA source files the package carries, relative to csrc/."""
    csrc = os.path.join(root, "csrc")
    found = []
    for pattern in SOURCE_PATTERNS:
        found += glob.glob(os.path.join(csrc, "**", pattern), recursive=True)
    return sorted(os.path.relpath(p, csrc) for p in found)


def _write_json(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


def _build_py_command(no_extension_info):
    class BuildPyWithSources(build_py):
        """Also copies csrc/ into the package as fastgp/_csrc (FASTGP_JIT=1 of an
        installed copy compiles them), and records a deliberately extension-free
        build. An editable install maps the checkout, whose csrc/ is found there."""

        def run(self):
            super().run()
            if no_extension_info is not None:
                bases = [ROOT] if self.editable_mode else [self.build_lib]
                for base in bases:
                    _write_json(os.path.join(base, "fastgp", "_build_info.json"), no_extension_info)
            if self.editable_mode:
                return
            for rel in shipped_sources(ROOT):
                dst = os.path.join(self.build_lib, SHIPPED_SOURCES, rel)
                self.mkpath(os.path.dirname(dst))
                self.copy_file(os.path.join(ROOT, "csrc", rel), dst)

        def get_outputs(self, include_bytecode=True):
            outs = super().get_outputs(include_bytecode)
            if self.editable_mode:
                return outs
            return outs + [os.path.join(self.build_lib, SHIPPED_SOURCES, rel) for rel in shipped_sources(ROOT)]

    return BuildPyWithSources


def _extensions():
    if _flag("FASTGP_NO_EXTENSION"):
        info = {"extension": False, "why": "built with FASTGP_NO_EXTENSION=1"}
        return [], {"build_py": _build_py_command(info)}
    if not _flag("FASTGP_CPU_ONLY"):
        _locate_cuda_home()
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    sources = _rel(glob.glob(os.path.join(ROOT, "csrc", "*.cpp")) + glob.glob(os.path.join(ROOT, "csrc", "cpu", "*.cpp")))
    cuda_sources = _rel(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")))
    nvcc_found = CUDA_HOME is not None and (
        os.path.exists(os.path.join(CUDA_HOME, "bin", "nvcc")) or shutil.which("nvcc") is not None
    )
    plan = cuda_plan(os.environ, torch.version.cuda if cuda_sources else None,
                     [] if _flag("FASTGP_CPU_ONLY") else visible_capabilities(), nvcc_found)
    debug = _flag("FASTGP_DEBUG")
    # -g0: Python's own CFLAGS carry -g, and debug info of torch's headers is a
    # third of the compile time and 90% of the library's size.
    opt = ["-O0", "-g"] if debug else ["-O3", "-g0"]
    # The C++ standard comes from torch's BuildExtension (what its headers need).
    cxx = opt + ["-fvisibility=hidden"]
    # at::parallel_for is an OpenMP loop in torch's headers: without -fopenmp it
    # silently runs on one thread. The runtime is torch's own libgomp (same soname).
    link = []
    if torch.backends.openmp.is_available() and sys.platform.startswith("linux"):
        cxx.append("-fopenmp")
        link.append("-fopenmp")
    nvcc = None
    if plan["with_cuda"]:
        os.environ["TORCH_CUDA_ARCH_LIST"] = plan["archs"]
        nvcc = ["-O0", "-g"] if debug else ["-O3"]
        nvcc += ["-lineinfo", "-DFASTGP_WITH_CUDA"]
        ext = CUDAExtension(
            "fastgp._C",
            sources + cuda_sources,
            extra_compile_args={"cxx": cxx + ["-DFASTGP_WITH_CUDA"], "nvcc": nvcc},
            extra_link_args=link,
            py_limited_api=True,
        )
    else:
        print(f"fastgp: compiling the CPU kernels only: {plan['why']}", file=sys.stderr)
        ext = CppExtension(
            "fastgp._C", sources, extra_compile_args={"cxx": cxx}, extra_link_args=link, py_limited_api=True
        )
    info = {
        "torch_version": torch.__version__,
        "torch_cuda_version": torch.version.cuda,
        "with_cuda": plan["with_cuda"],
        "cuda_archs": plan["archs"],
        "cuda_why": plan["why"],
        "cpu_only": plan.get("cpu_only", False),
        "nvcc_found": nvcc_found,
        "debug": debug,
    }
    compiled_for = {k: info[k] for k in ("torch_version", "torch_cuda_version", "with_cuda", "cuda_archs", "debug")}
    objects = object_dir(ROOT, os.path.dirname(torch.__file__), compiled_for, {"cxx": cxx, "nvcc": nvcc, "link": link})

    class BuildWithInfo(BuildExtension):
        """Compiles in the persistent object directory and records what the
        extension was built against next to it (checked at import)."""

        def finalize_options(self):
            super().finalize_options()
            if os.access(ROOT, os.W_OK):  # a read-only source tree keeps setuptools' choice
                self.build_temp = objects

        def run(self):
            super().run()
            for base in {self.build_lib, ROOT} if self.inplace else {self.build_lib}:
                _write_json(os.path.join(base, "fastgp", "_build_info.json"), info)

    return [ext], {"build_ext": BuildWithInfo.with_options(use_ninja=True), "build_py": _build_py_command(None)}


if __name__ == "__main__":  # setuptools (pip, build) runs this file as __main__; tests import it
    ext_modules, cmdclass = _extensions()
    setup(
        ext_modules=ext_modules,
        cmdclass=cmdclass,
        # An abi3 library: the module is an empty PyInit, so one build serves every CPython >= 3.9.
        options={"bdist_wheel": {"py_limited_api": "cp39"}} if ext_modules else {},
    )
