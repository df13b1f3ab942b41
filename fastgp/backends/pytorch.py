"""The "torch" backend: fastgp.reference, the readable pure-PyTorch oracle,
behind the op signature (shared.py adapts it). Runs wherever PyTorch runs."""

from __future__ import annotations

from typing import Optional

import torch

from .. import reference
from . import shared

name = "torch"
ops = ()  # plain PyTorch functions, no registered ops


def unavailable_reason(device: torch.device) -> Optional[str]:
    return None


interpolate = reference.interpolate
penalty_forward = shared.reference_penalty_forward
penalty_backward = shared.reference_penalty_backward
