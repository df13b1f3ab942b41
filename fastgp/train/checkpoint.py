"""Checkpoints: atomic writes, safe loading, retention.

A checkpoint holds only tensors and primitive containers (the RNG states are
tensors), so ``torch.load(path, weights_only=True)`` reads it. It is written to
a temporary file in the same folder, flushed to disk, then renamed over the
target with ``os.replace``: a crash or a kill mid-write leaves the previous
checkpoint intact (and a temporary file, removed when the run resumes).
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
from typing import Any, Dict, List, Optional

import torch

FORMAT = "fastgp-train"
VERSION = 1
REQUIRED = ("format", "version", "config", "step", "generator", "critic", "opt_g", "opt_d", "rng")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the run; the message says which file and why."""


def save_atomic(obj: Dict[str, Any], path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = temporary_name(path)
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    try:  # make the rename itself durable
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temporary_name(path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.tmp-{os.getpid()}")


def remove_stale_temporaries(folder: str) -> List[str]:
    """Deletes the temporary files of saves that a kill interrupted (.NAME.tmp-PID); returns their names."""
    found = [n for n in os.listdir(folder) if re.fullmatch(r"\..+\.tmp-\d+", n)] if os.path.isdir(folder) else []
    for name in found:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(folder, name))
    return found


def load(path: str) -> Dict[str, Any]:
    """Reads and checks a trainer checkpoint (on CPU, weights_only=True) or raises CheckpointError."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, garbage bytes, pickled objects outside the allow-list...
        raise CheckpointError(f"checkpoint {path!r} is corrupt or not a fastgp-train checkpoint "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path!r} is not a fastgp-train checkpoint (no format tag {FORMAT!r})")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {path!r} has format version {ckpt.get('version')!r}; this trainer reads "
                              f"version {VERSION}")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path!r} is incomplete: missing {', '.join(missing)}")
    return ckpt


def periodic_name(step: int) -> str:
    return f"step_{step:07d}.pt"


def retain(folder: str, keep: int) -> None:
    """Deletes all but the `keep` newest periodic checkpoints (last.pt is never touched)."""
    found = []
    for path in glob.glob(os.path.join(folder, "step_*.pt")):
        m = re.fullmatch(r"step_(\d+)\.pt", os.path.basename(path))
        if m:
            found.append((int(m.group(1)), path))
    for _, path in sorted(found)[:max(len(found) - keep, 0)]:
        os.remove(path)


def resume_path(spec: str, run_dir: str) -> str:
    """'last' -> RUN_DIR/checkpoints/last.pt; anything else is a path."""
    return os.path.join(run_dir, "checkpoints", "last.pt") if spec == "last" else spec


def find_last(run_dir: str) -> Optional[str]:
    path = os.path.join(run_dir, "checkpoints", "last.pt")
    return path if os.path.isfile(path) else None
