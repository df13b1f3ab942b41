"""``python -m fastgp.audit module:function`` (or ``path/to/file.py:function``): print
the audit report; exit 0 when there is no finding, 1 when there is one, 2 when the
function cannot be audited (it cannot be called as fn(critic, real, fake))."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from .auditor import audit

EXIT_OK, EXIT_FINDINGS, EXIT_CANNOT_AUDIT = 0, 1, 2


class TargetError(Exception):
    """The module:function given on the command line cannot be loaded."""


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def _load_module(spec: str):
    if spec.endswith(".py") or os.sep in spec or "/" in spec:
        path = Path(spec)
        if not path.is_file():
            raise TargetError(f"no such file: {spec}")
        name = path.stem if path.stem not in sys.modules else f"_fastgp_audit_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise TargetError(f"{spec} is not a Python file that can be imported")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        sys.path.insert(0, str(path.resolve().parent))  # so that it can import its neighbours
        try:
            module_spec.loader.exec_module(module)
        except Exception as e:  # the user's module: a message, not a traceback
            del sys.modules[name]
            raise TargetError(f"importing {spec} failed: {_describe(e)}") from e
        finally:
            sys.path.pop(0)
        return module
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as e:
        if e.name is not None and spec.startswith(e.name):
            raise TargetError(f"no module named {spec!r} (run from the folder that holds it, or give "
                              "path/to/file.py:function)") from e
        raise TargetError(f"importing {spec} failed: {_describe(e)}") from e
    except Exception as e:
        raise TargetError(f"importing {spec} failed: {_describe(e)}") from e


def load_target(target: str) -> Callable:
    """module:function, module:Class.method or path/to/file.py:function."""
    spec, sep, attr = target.rpartition(":")
    if not sep or not spec or not attr:
        raise TargetError(f"expected module:function or path/to/file.py:function, got {target!r}")
    obj = _load_module(spec)
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = sorted(n for n, v in vars(obj).items() if callable(v) and not n.startswith("_")) \
                if hasattr(obj, "__dict__") else []
            listed = f" (its callables: {', '.join(names[:12])}{', ...' if len(names) > 12 else ''})" if names else ""
            raise TargetError(f"{spec} has no attribute {attr!r}{listed}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise TargetError(f"{target} is a {type(obj).__name__}, not a function fn(critic, real, fake)")
    return obj


def _shape(text: str):
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes separated by commas, e.g. 8,3,32,32, got {text!r}") from None
    return shape


def _dtype(text: str) -> torch.dtype:
    dtype = getattr(torch, text, None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise argparse.ArgumentTypeError(f"expected a floating dtype such as float32, float64, bfloat16, got {text!r}")
    return dtype


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fastgp.audit",
        description="Check a hand-written gradient penalty fn(critic, real, fake) against fastgp's reference and "
                    "name its bug. Exit status: 0 no finding, 1 findings, 2 the function cannot be audited.")
    parser.add_argument("target", help="module:function or path/to/file.py:function")
    parser.add_argument("--shape", type=_shape, default=None,
                        help="the batch shape to probe, e.g. 8,3,32,32 (default: a small image batch, then a 2-D "
                             "tabular batch)")
    parser.add_argument("--device", default=None, help="device of the probe tensors (default cpu)")
    parser.add_argument("--dtype", type=_dtype, default=torch.float32, help="dtype of the probe tensors (float32)")
    args = parser.parse_args(argv)
    try:
        fn = load_target(args.target)
        report = audit(fn, shape=args.shape, device=args.device, dtype=args.dtype)
    except (TargetError, TypeError, ValueError) as e:
        print(f"fastgp.audit: error: {e}", file=sys.stderr)
        return EXIT_CANNOT_AUDIT
    print(report)
    if report.error is not None:
        return EXIT_CANNOT_AUDIT
    return EXIT_OK if report.ok else EXIT_FINDINGS
