"""The benchmark shape matrix and the byte model behind "% of copy bandwidth".

Shapes are the ones GAN users train (issue 7): tabular, sequence, DCGAN,
StyleGAN-256 and 3-D. ``quick`` is the default (a CPU run of every suite in
about ten minutes on two cores); ``full`` is the whole matrix; ``smoke`` is for
checking that the suites still run (tests use it). No torch import here: the
report reads this module too.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Dict, List, Tuple

# Passes of the op suite and how many times each moves every element of the
# gradient (or input) tensor: forward reads g once; backward reads g and
# writes dL/dg once; interpolation reads real and fake and writes x_hat; a
# copy reads and writes once.
PASSES = ("interp", "forward", "backward", "fwdbwd")
ELEMENT_TRIPS = {"copy": 2, "interp": 3, "forward": 1, "backward": 2, "fwdbwd": 3}

ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}

# A shape whose tensors are at least this many elements is bandwidth bound,
# not call-overhead bound: the "% of copy bandwidth" targets apply to it.
LARGE_NUMEL = 1 << 21


@dataclass(frozen=True)
class Shape:
    family: str          # tabular, sequence, dcgan, stylegan256, 3d
    dims: Tuple[int, ...]

    @property
    def id(self) -> str:
        return f"{self.family}_{'x'.join(map(str, self.dims))}"

    @property
    def numel(self) -> int:
        return prod(self.dims)

    @property
    def large(self) -> bool:
        return self.numel >= LARGE_NUMEL


def _tabular(batches, features):
    return [Shape("tabular", (b, f)) for b in batches for f in features]


MATRICES: Dict[str, List[Shape]] = {
    "full": (
        _tabular((256, 1024, 4096), (2, 64, 1024))
        + [Shape("sequence", (64, 128, 512))]
        + [Shape("dcgan", (b, 3, 64, 64)) for b in (64, 128, 256)]
        + [Shape("stylegan256", (b, 3, 256, 256)) for b in (16, 32, 64)]
        + [Shape("3d", (8, 1, 64, 64, 64))]
    ),
    # The core issue's target shapes, the largest shape, and one of each family.
    "quick": [
        Shape("tabular", (256, 2)),
        Shape("tabular", (4096, 1024)),
        Shape("sequence", (64, 128, 512)),
        Shape("dcgan", (256, 3, 64, 64)),
        Shape("stylegan256", (64, 3, 256, 256)),
        Shape("3d", (8, 1, 64, 64, 64)),
    ],
    "smoke": [Shape("tabular", (5, 3)), Shape("dcgan", (3, 3, 8, 8))],
}

DEFAULT_DTYPES = {"cpu": ("float32",), "cuda": ("float32", "bfloat16")}


def bytes_moved(pass_name: str, numel: int, dtype: str) -> int:
    """Bytes a pass must move at minimum (the issue's counting)."""
    return ELEMENT_TRIPS[pass_name] * numel * ITEMSIZE[dtype]
