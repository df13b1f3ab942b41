"""Seeds and random streams.

Every random draw of a training step (data batch, noise, interpolation weights)
comes from a generator derived from (seed, stream, step, ...), so a run is a
pure function of its seed and step counter: resuming from a checkpoint and
splitting a global batch over processes reproduce a single straight run.
The global Python/NumPy/torch states (used for model initialization) are still
saved in checkpoints, as tensors, and restored.
"""

from __future__ import annotations

import random
from typing import Dict

import torch

_MASK = (1 << 64) - 1
DATA, NOISE, ALPHA, FIXED, EVAL, PERTURB = range(1, 7)


def _mix(x: int) -> int:
    """SplitMix64 finalizer: consecutive keys give unrelated seeds."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def key(seed: int, *keys: int) -> int:
    """A 63-bit seed determined by the seed and the keys (stream id, step, ...)."""
    h = _mix(seed & _MASK)
    for k in keys:
        h = _mix(h ^ (k & _MASK))
    return h & ((1 << 63) - 1)


def stream(seed: int, *keys: int) -> torch.Generator:
    """A CPU generator determined by the seed and the keys."""
    return torch.Generator().manual_seed(key(seed, *keys))


def device_stream(device: torch.device, seed: int, *keys: int) -> torch.Generator:
    """The same on `device`, for draws made where the tensors live (DRAGAN's perturbation noise)."""
    return torch.Generator(device=device).manual_seed(key(seed, *keys))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np
    except ImportError:
        return
    np.random.seed(seed % (1 << 32))


def global_rng_state() -> Dict[str, torch.Tensor]:
    """Python, NumPy and torch global states as tensors (loadable with weights_only=True)."""
    version, internal, gauss = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "python": torch.tensor(list(internal), dtype=torch.int64),
             "python_gauss": torch.tensor([float("nan") if gauss is None else gauss], dtype=torch.float64)}
    try:
        import numpy as np
    except ImportError:
        return state
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state["numpy"] = torch.from_numpy(keys.astype("int64"))
    state["numpy_extra"] = torch.tensor([pos, has_gauss, cached], dtype=torch.float64)
    return state


def set_global_rng_state(state: Dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch"])
    gauss = float(state["python_gauss"][0])
    random.setstate((3, tuple(int(v) for v in state["python"].tolist()), None if gauss != gauss else gauss))
    if "numpy" in state:
        import numpy as np

        pos, has_gauss, cached = state["numpy_extra"].tolist()
        np.random.set_state(("MT19937", state["numpy"].numpy().astype("uint32"), int(pos), int(has_gauss), cached))
