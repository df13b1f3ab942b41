"""Command line: ``fastgp-train [options]``, ``python -m fastgp.train``, or under
``torchrun --nproc_per_node=N -m fastgp.train [options]``."""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from .checkpoint import CheckpointError
from .config import ConfigError, from_args
from .trainer import NonFiniteLossError, run


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        _, explicit = from_args(argv)
        run(explicit)
    except (ConfigError, CheckpointError) as e:
        print(f"fastgp-train: error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLossError as e:
        print(f"fastgp-train: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fastgp-train: interrupted; resume with --resume last", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
