"""What the quality benchmarks (toy_quality.py, digits_quality.py) share: the
mean ± std cell of a table over seeds, and writing the table and its runs."""

from __future__ import annotations

import json
import os
import statistics


def mean_std(values, digits: int = 1) -> str:
    """'m ± s' over the runs; one run says so; none gives 'n/a'."""
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.{digits}f} (1 run)"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def write_results(text: str, results: list, out: str) -> None:
    """The markdown table to `out`, the runs' summaries beside it as .json."""
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as f:
        f.write(text)
    with open(os.path.splitext(out)[0] + ".json", "w") as f:
        json.dump(results, f, indent=2)
