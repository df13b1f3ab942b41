"""Turns pytest-benchmark JSON from the fastgp suites into a markdown report
(times, ratios vs the eager reference and vs torch.compile, % of the copy
bandwidth measured in the same run, the call overhead of the public API,
which targets are met or missed per shape) and a PNG chart.

    python -m benchmarks.report OUT/raw/*.json --summary OUT/summary.json \
        --out OUT/report.md --chart OUT/chart.png
    python -m benchmarks.report OUT/summary.json --out OUT/report.md --chart OUT/chart.png

The summary is the compact form of the raw files (every statistic, no
per-round samples): the committed results keep it, and the report and chart
can be regenerated from it alone. Needs no torch; the chart needs matplotlib
(the "bench" extra).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Tuple

if __package__ in (None, ""):  # run as a script: python benchmarks/report.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from benchmarks.matrix import LARGE_NUMEL, PASSES
else:
    from .matrix import LARGE_NUMEL, PASSES

FUSED = ("cpp", "cuda", "triton")
PROVIDER_ORDER = ("copy", "eager", "lerp", "compile", "torch", "cpp", "cuda", "triton")
PASS_TITLES = {"interp": "Interpolation", "forward": "Penalty forward (norm + penalty)",
               "backward": "Penalty backward (dL/dg)", "fwdbwd": "Penalty forward + backward"}


# ------------------------------------------------------------------ loading
@dataclass
class Result:
    name: str
    group: str
    seconds: float          # the chosen statistic of one call
    info: dict

    @property
    def kind(self) -> str:
        return self.info.get("kind", "op")


SUMMARY_FORMAT = "fastgp-benchmark-summary"
SUMMARY_STATS = ("min", "max", "mean", "median", "stddev", "iqr", "rounds", "iterations")
SUMMARY_MACHINE = ("machine", "system", "release", "python_version")


def _runs_and_benchmarks(path: str) -> Tuple[List[dict], List[dict]]:
    """The runs and the benchmarks (pytest-benchmark's layout) of a raw file or a summary."""
    with open(path) as f:
        data = json.load(f)
    if data.get("format") == SUMMARY_FORMAT:
        return data["runs"], data["results"]
    machine = data.get("machine_info", {})
    run = {"file": os.path.basename(path), "datetime": data.get("datetime"), "commit": data.get("commit_info", {}),
           "machine": {**{k: machine.get(k) for k in SUMMARY_MACHINE},
                       "cpu": (machine.get("cpu") or {}).get("brand_raw"),
                       "cpu_count": (machine.get("cpu") or {}).get("count")}}
    return [run], data.get("benchmarks", [])


def load(paths: Iterable[str], stat: str = "median") -> Tuple[List[Result], List[dict]]:
    results, runs = [], []
    for path in paths:
        file_runs, benchmarks = _runs_and_benchmarks(path)
        runs += file_runs
        for b in benchmarks:
            results.append(Result(b["name"], b.get("group") or "", float(b["stats"][stat]), b.get("extra_info", {})))
    return results, runs


def write_summary(paths: Iterable[str], out: str) -> None:
    """The compact summary of raw pytest-benchmark files (or of summaries):
    every statistic and the recorded environment, no per-round samples."""
    runs, results = [], []
    for path in paths:
        file_runs, benchmarks = _runs_and_benchmarks(path)
        runs += file_runs
        results += [{"name": b["name"], "group": b.get("group") or "",
                     "stats": {k: b["stats"][k] for k in SUMMARY_STATS if k in b["stats"]},
                     "extra_info": b.get("extra_info", {})} for b in benchmarks]
    with open(out, "w") as f:
        json.dump({"format": SUMMARY_FORMAT, "version": 1, "runs": runs, "results": results}, f, indent=1,
                  sort_keys=True)
        f.write("\n")


# ------------------------------------------------------------------ formatting
def fmt_time(s: Optional[float]) -> str:
    if s is None:
        return "–"
    if s < 0:
        return "-" + fmt_time(-s)
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def fmt_ratio(r: Optional[float]) -> str:
    return "–" if r is None else f"{r:.2f}x"


def fmt_pct(r: Optional[float]) -> str:
    return "–" if r is None else f"{100 * r:.0f}%"


def pct(r: float) -> str:
    """Two significant digits: 0.31%, 4.2%, 57%."""
    return f"{100 * r:.2g}%" if 100 * r < 100 else f"{100 * r:.0f}%"


def fmt_bytes(n: Optional[float]) -> str:
    if n is None:
        return "–"
    for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


def table(header: List[str], rows: List[List[str]]) -> List[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _order(names: Iterable[str]) -> List[str]:
    names = set(names)
    return [p for p in PROVIDER_ORDER if p in names] + sorted(names - set(PROVIDER_ORDER))


# ------------------------------------------------------------------ op results
class Cells:
    """Results indexed by a key -> provider -> result."""

    cells: Dict[tuple, Dict[str, Result]]

    def time(self, key, provider) -> Optional[float]:
        r = self.cells.get(key, {}).get(provider)
        return None if r is None else r.seconds

    def quotient(self, key, numerator: str, denominator: str) -> Optional[float]:
        """numerator's time over denominator's."""
        a, b = self.time(key, numerator), self.time(key, denominator)
        return None if a is None or b is None else a / b


class Ops(Cells):
    """Op results indexed by (pass, shape_id, dtype) -> provider -> result."""

    def __init__(self, results: List[Result]):
        self.cells: Dict[Tuple[str, str, str], Dict[str, Result]] = defaultdict(dict)
        self.copy: Dict[Tuple[str, str], Result] = {}
        for r in results:
            if r.kind != "op":
                continue
            i = r.info
            if i["pass_name"] == "copy":
                self.copy[(i["shape_id"], i["dtype"])] = r
            else:
                self.cells[(i["pass_name"], i["shape_id"], i["dtype"])][i["provider"]] = r

    def keys(self, pass_name: str) -> List[Tuple[str, str, str]]:
        ks = [k for k in self.cells if k[0] == pass_name]
        # in matrix order: by family then size, as recorded
        return sorted(ks, key=lambda k: (k[2], _numel_of(self.cells[k]), k[1]))

    def ratio(self, key, baseline: str, provider: str) -> Optional[float]:
        """How many times faster `provider` is than `baseline`."""
        return self.quotient(key, baseline, provider)

    def bandwidth(self, key, provider) -> Optional[float]:
        r = self.cells.get(key, {}).get(provider)
        return None if r is None else r.info["bytes"] / r.seconds

    def copy_bandwidth(self, shape_id, dtype) -> Optional[float]:
        r = self.copy.get((shape_id, dtype))
        return None if r is None else r.info["bytes"] / r.seconds

    def copy_fraction(self, key, provider) -> Optional[float]:
        bw, cbw = self.bandwidth(key, provider), self.copy_bandwidth(key[1], key[2])
        return None if bw is None or cbw is None else bw / cbw

    def numel(self, key) -> int:
        return _numel_of(self.cells[key])


def _numel_of(cell: Dict[str, Result]) -> int:
    return next(iter(cell.values())).info["numel"]


# ------------------------------------------------------------------ targets
@dataclass
class Target:
    label: str
    device: str
    pass_name: str                          # op results: the pass; overhead: the op; step: "step"
    applies: Callable[[str, int], bool]     # (shape_id or model, numel or batch) -> bool
    metric: str                             # "x eager", "x compile", "x lerp", "% copy", "public / raw"
    threshold: float
    providers: Tuple[str, ...]              # op and step results: providers; overhead: backends
    dtypes: Tuple[str, ...] = ("float32",)
    kind: str = "op"                        # which results: "op", "overhead" or "step"
    at_most: bool = False                   # met when the value is at most the threshold


def _is(*shape_ids):
    return lambda sid, numel: sid in shape_ids


def _large(sid, numel):
    return numel >= LARGE_NUMEL


def _families(*fams):
    return lambda sid, numel: sid.split("_")[0] in fams


# A call with at least this many page faults is paying for fresh output pages.
FAULTS_NOTE = 64
_DCGAN256 = "dcgan_256x3x64x64"
_TAB = "tabular_256x2"
GPU_DTYPES = ("float32", "bfloat16")

TARGETS = [
    # Core issue (CPU, 2 threads, fp32).
    Target("fwd+bwd >= 5x eager", "cpu", "fwdbwd", _is(_DCGAN256), "x eager", 5.0, ("cpp",)),
    Target("fwd+bwd >= 1.5x torch.compile", "cpu", "fwdbwd", _is(_DCGAN256), "x compile", 1.5, ("cpp",)),
    Target("interpolation >= 10x eager", "cpu", "interp", _is(_DCGAN256), "x eager", 10.0, ("cpp",)),
    Target("interpolation no slower than torch.lerp", "cpu", "interp", _is(_DCGAN256), "x lerp", 1.0, ("cpp",)),
    Target("tiny tabular fwd+bwd >= 3x eager", "cpu", "fwdbwd", _is(_TAB), "x eager", 3.0, ("cpp",)),
    Target("forward >= 75% of copy bandwidth (large shapes)", "cpu", "forward", _large, "% copy", 0.75, ("cpp",)),
    Target("backward >= 75% of copy bandwidth (large shapes)", "cpu", "backward", _large, "% copy", 0.75, ("cpp",)),
    Target("fwd+bwd >= 75% of copy bandwidth (large shapes)", "cpu", "fwdbwd", _large, "% copy", 0.75, ("cpp",)),
    # CUDA issue (GPU; the same targets hold for Triton).
    Target("interpolation >= 90% of copy bandwidth (large shapes)", "cuda", "interp", _large, "% copy", 0.90,
           ("cuda", "triton"), GPU_DTYPES),
    Target("backward >= 90% of copy bandwidth (large shapes)", "cuda", "backward", _large, "% copy", 0.90,
           ("cuda", "triton"), GPU_DTYPES),
    Target("forward >= 85% of copy bandwidth (StyleGAN-256, DCGAN)", "cuda", "forward",
           _families("stylegan256", "dcgan"), "% copy", 0.85, ("cuda", "triton"), GPU_DTYPES),
    Target("fwd+bwd >= 1.8x eager (large shapes)", "cuda", "fwdbwd", _large, "x eager", 1.8, ("cuda", "triton"),
           GPU_DTYPES),
    Target("fwd+bwd >= 3x eager (B=256 x 2)", "cuda", "fwdbwd", _is(_TAB), "x eager", 3.0, ("cuda", "triton"),
           GPU_DTYPES),
    Target("fwd+bwd not slower than torch.compile (every shape)", "cuda", "fwdbwd", lambda s, n: True, "x compile",
           1.0, ("cuda", "triton"), GPU_DTYPES),
    # The public call costs at most twice the op it calls (the house issue), and a
    # step with gradient_penalty is never slower than with the hand-written penalty.
] + [Target(f"public {fn} at most 2x the raw op", device, op, _is("tabular_256x2"), "public / raw", 2.0,
            backends, dtypes, kind="overhead", at_most=True)
     for op, fn in (("interp", "interpolate"), ("forward", "penalty_from_grads"), ("fwdbwd", "penalty fwd+bwd"))
     for device, backends, dtypes in (("cpu", ("cpp",), ("float32",)), ("cuda", ("cpp", "triton"), GPU_DTYPES))
     ] + [Target("gradient_penalty step no slower than the hand-written one", device, "step",
                 lambda model, batch: model in ("mlp-toy", "mlp-tabular", "dcgan"), "x eager", 1.0, fused, kind="step")
          for device, fused in (("cpu", ("cpp",)), ("cuda", ("cuda", "triton")))]


def _metric(ops: Ops, key, metric: str, provider: str) -> Optional[float]:
    if metric == "% copy":
        return ops.copy_fraction(key, provider)
    return ops.ratio(key, metric.split()[1], provider)


def evaluate_targets(ops: Ops, device: str, overhead: Optional["Overhead"] = None,
                     steps: Optional[dict] = None) -> List[dict]:
    rows = []
    for t in TARGETS:
        if t.device != device:
            continue
        if t.kind == "op":
            checks = _op_checks(ops, t)
        elif t.kind == "overhead":
            checks = _overhead_checks(overhead, t) if overhead is not None else []
        else:
            checks = _step_checks(steps, t) if steps is not None else []
        if not checks:
            rows.append(dict(target=t, shape="(not in this run)", dtype="", provider="", value=None, met=None))
        for shape, dtype, provider, v, faults in checks:
            met = None if v is None else (v <= t.threshold if t.at_most else v >= t.threshold)
            rows.append(dict(target=t, shape=shape, dtype=dtype, provider=provider, value=v, met=met, faults=faults))
    return rows


def _op_checks(ops: Ops, t: Target):
    keys = [k for k in ops.keys(t.pass_name) if k[2] in t.dtypes and t.applies(k[1], ops.numel(k))]
    return [(k[1], k[2], p, _metric(ops, k, t.metric, p), ops.cells[k][p].info.get("page_faults_per_call"))
            for k in keys for p in t.providers if p in ops.cells[k]]


def _overhead_checks(overhead: "Overhead", t: Target):
    keys = [k for k in overhead.keys(t.pass_name) if k[2] in t.dtypes and k[3] in t.providers and t.applies(k[1], 0)]
    return [(k[1], k[2], k[3], overhead.quotient(k, "public", "raw"), None) for k in keys]


def paired_medians(r: Result) -> Optional[Tuple[float, float, int]]:
    """(median eager step, median fastgp step, rounds) of a paired step result."""
    times = r.info.get("paired_seconds") or {}
    eager, fused = times.get("eager"), times.get(r.info.get("provider"))
    if not eager or not fused:
        return None
    return statistics.median(eager), statistics.median(fused), min(len(eager), len(fused))


def _step_checks(steps: dict, t: Target):
    """eager / fastgp step time: from the paired rounds when the run has them
    (side by side in time), else from the providers' separate timings."""
    checks = []
    for (model, batch), cell in sorted(steps.items()):
        if not t.applies(model, batch):
            continue
        paired = cell.get("paired")
        for p in t.providers:
            medians = paired_medians(paired) if paired is not None and paired.info.get("provider") == p else None
            if medians is not None:
                checks.append((f"{model} B={batch}", "float32", f"{p} (paired)", medians[0] / medians[1], None))
            elif p in cell and "eager" in cell:
                checks.append((f"{model} B={batch}", "float32", p,
                               step_per_call(cell["eager"]) / step_per_call(cell[p]), None))
    return checks


def _fmt_metric(metric: str, v: Optional[float]) -> str:
    return fmt_pct(v) if metric == "% copy" else fmt_ratio(v)


# ------------------------------------------------------------------ call overhead
class Overhead(Cells):
    """Overhead results indexed by (op, shape_id, dtype, backend) -> provider
    ("raw", "public", or the baseline "eager"/"lerp", stored under every backend)."""

    def __init__(self, results: List[Result]):
        self.cells: Dict[Tuple[str, str, str, str], Dict[str, Result]] = defaultdict(dict)
        baselines: Dict[Tuple[str, str, str], Dict[str, Result]] = defaultdict(dict)
        for r in results:
            if r.kind != "overhead":
                continue
            i = r.info
            if i.get("backend"):
                self.cells[(i["op"], i["shape_id"], i["dtype"], i["backend"])][i["provider"]] = r
            else:
                baselines[(i["op"], i["shape_id"], i["dtype"])][i["provider"]] = r
        for (op, sid, dt, backend), cell in self.cells.items():
            cell.update(baselines.get((op, sid, dt), {}))

    def keys(self, op: str) -> List[Tuple[str, str, str, str]]:
        return sorted(k for k in self.cells if k[0] == op)


OVERHEAD_OPS = {"interp": "`fastgp.interpolate`", "forward": "`fastgp.penalty_from_grads` (forward)",
                "fwdbwd": "`penalty_from_grads` forward + backward",
                "gp": "`gradient_penalty` + backward, 1-layer critic"}


def overhead_section(overhead: Overhead) -> List[str]:
    if not overhead.cells:
        return []
    rows = []
    for op in OVERHEAD_OPS:
        for k in overhead.keys(op):
            base = "lerp" if op == "interp" else "eager"
            public_raw = overhead.quotient(k, "public", "raw")
            rows.append([OVERHEAD_OPS[op], k[3], k[1], k[2], fmt_time(overhead.time(k, base)),
                         fmt_time(overhead.time(k, "raw")), fmt_time(overhead.time(k, "public")),
                         fmt_time(None if public_raw is None else overhead.time(k, "public") - overhead.time(k, "raw")),
                         fmt_ratio(public_raw), fmt_ratio(overhead.quotient(k, base, "public"))])
    return ["## Call overhead", "",
            "What fastgp's Python layer (argument checks, backend resolution, the autograd wrapper) adds to the op "
            "it calls, measured side by side in one run at a shape where the call, not the data, is the cost. "
            "*raw* is the backend's op called directly, *public* the public function; the baseline is `torch.lerp` "
            "(weight already shaped) for interpolation and the eager reference otherwise (for `gradient_penalty`: "
            "`reference.handwritten_gradient_penalty`, the hand-written penalty). Target: public at most 2x raw.", ""] + \
        table(["call", "backend", "shape", "dtype", "baseline", "raw", "public", "public - raw", "public / raw",
               "baseline / public"], rows) + [""]


# ------------------------------------------------------------------ sections
def environment_section(results: List[Result], runs: List[dict]) -> List[str]:
    infos = [r.info for r in results if "device" in r.info]
    if not infos:
        return ["No results."]
    first = infos[0]
    loads = [i["loadavg_1min"] for i in infos if i.get("loadavg_1min") is not None]
    lines = [
        f"- device: **{first['device']}** ({first.get('device_name')}), threads: {first.get('threads')}"
        f" of {first.get('cpu_count')} CPUs",
        f"- torch {first.get('torch')} (CUDA {first.get('torch_cuda')}), triton {first.get('triton')}, "
        f"fastgp {first.get('fastgp')}, backends available: {', '.join(first.get('fastgp_backends', []))}",
        f"- matrix: {first.get('matrix')}; label: {first.get('label') or '–'}; "
        f"runs: {', '.join(sorted({str(r['datetime']) for r in runs}))}",
    ]
    for key, var in (("glibc_tunables", "GLIBC_TUNABLES"), ("omp_wait_policy", "OMP_WAIT_POLICY")):
        if first.get(key):
            lines.append(f"- {var}={first[key]}")
    if loads:
        threads = first.get("threads") or 1
        worst = max(loads)
        lines.append(f"- 1-minute load average during the run: median {statistics.median(loads):.2f}, max {worst:.2f}")
        if first["device"] == "cpu" and worst > (first.get("cpu_count") or threads) + 0.5:
            lines.append(f"- **warning: the machine was busy (load {worst:.1f} on {first.get('cpu_count')} CPUs): "
                         "these timings are noisy; rerun on a quiet machine before quoting them.** On a busy "
                         "machine OpenMP's spin-waiting stalls every multi-threaded op for a scheduler slice "
                         "(milliseconds), which favours single-threaded code; OMP_WAIT_POLICY=PASSIVE avoids it.")
    return lines


def targets_section(ops: Ops, device: str, overhead: Optional[Overhead] = None,
                    steps: Optional[dict] = None) -> List[str]:
    rows = evaluate_targets(ops, device, overhead, steps)
    if not rows:
        return [f"No targets are defined for device {device!r}."]
    out = table(["target", "shape", "dtype", "provider", "measured", "required", "status"], [
        [r["target"].label, r["shape"], r["dtype"], r["provider"], _fmt_metric(r["target"].metric, r["value"]),
         _fmt_metric(r["target"].metric, r["target"].threshold),
         "n/a" if r["met"] is None else ("met" if r["met"] else "**MISSED**")] for r in rows])
    missed = sorted({f"{r['shape']} ({r['provider']}, {r['target'].label})" for r in rows if r["met"] is False})
    met = sum(1 for r in rows if r["met"])
    judged = sum(1 for r in rows if r["met"] is not None)
    out += ["", f"{met} of {judged} target checks met."]
    if missed:
        out += ["Missed: " + "; ".join(missed) + "."]
    faulting = sorted({(r["shape"], r["provider"], r["faults"]) for r in rows
                       if r["met"] is False and r["target"].metric == "% copy"
                       and (r.get("faults") or 0) >= FAULTS_NOTE})
    for shape, provider, faults in faulting:
        out += [f"- {shape} ({provider}): {faults:.0f} page faults per call (~{fmt_bytes(faults * 4096)} mapped afresh "
                "each call): the output is larger than glibc malloc's mmap threshold (at most 32 MiB by default), so "
                "every call maps and zero-fills new pages; that cost is the allocator's, paid by every provider that "
                "allocates its output. `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=<bytes>` (or jemalloc/tcmalloc) "
                "removes it."]
    if device == "cuda":
        out += ["", "Not measured by these suites: the CUDA issue's 'at most 4 kernel launches per GP call'."]
    return out


def pass_section(ops: Ops, pass_name: str) -> List[str]:
    keys = ops.keys(pass_name)
    if not keys:
        return []
    providers = _order({p for k in keys for p in ops.cells[k]})
    fused = [p for p in providers if p in FUSED]
    baselines = [b for b in ("eager", "compile", "lerp") if b in providers]
    header = ["shape", "dtype", "copy"] + providers
    for p in fused:
        header += [f"{p} x {b}" for b in baselines] + [f"{p} GB/s", f"{p} % copy"]
    rows = []
    for k in keys:
        copy = ops.copy.get((k[1], k[2]))
        row = [k[1], k[2], fmt_time(copy.seconds if copy else None)]
        row += [fmt_time(ops.time(k, p)) for p in providers]
        for p in fused:
            row += [fmt_ratio(ops.ratio(k, b, p)) for b in baselines]
            bw = ops.bandwidth(k, p)
            row += ["–" if bw is None else f"{bw / 1e9:.1f}", fmt_pct(ops.copy_fraction(k, p))]
        rows.append(row)
    return [f"### {PASS_TITLES[pass_name]}", ""] + table(header, rows) + [""]


def copy_section(ops: Ops) -> List[str]:
    if not ops.copy:
        return []
    rows = [[sid, dt, fmt_time(r.seconds), f"{r.info['bytes'] / r.seconds / 1e9:.1f}"]
            for (sid, dt), r in sorted(ops.copy.items(), key=lambda kv: (kv[0][1], kv[1].info["numel"]))]
    return ["### Copy bandwidth (the yardstick: `dst.copy_(src)`, bytes = read + write)", ""] + \
        table(["shape", "dtype", "time", "GB/s"], rows) + [""]


def _step_cells(results: List[Result]):
    """(model, batch) -> provider -> result; the paired measurement under "paired"."""
    cells: Dict[Tuple[str, int], Dict[str, Result]] = defaultdict(dict)
    for r in results:
        if r.kind == "step":
            cells[(r.info["model"], r.info["batch"])][r.info["provider"]] = r
        elif r.kind == "step_paired":
            cells[(r.info["model"], r.info["batch"])]["paired"] = r
    return cells


def step_per_call(r: Optional[Result]) -> Optional[float]:
    return None if r is None else r.seconds / r.info.get("steps_per_call", 1)


def step_section(results: List[Result]) -> List[str]:
    cells = _step_cells(results)
    if not cells:
        return []
    out = ["## Critic step", "",
           "One critic step: D(real), D(fake), the gradient penalty (through the critic, double backward), "
           "backward and an Adam step. *floor* has no penalty. *lazy k* applies the penalty every k steps with "
           "gain k in a regularization step of its own (time per step, averaged over k steps); *r1* is R1 on "
           "the real samples (StyleGAN2 lazy-regularizes it every 16 steps). *GP on k%* regularizes only the first k% "
           "of each batch (`batch_fraction`, `fastgp-train --gp-batch-fraction`). *arithmetic* is the penalty's own "
           "arithmetic (interpolation + norm + penalty forward and backward) without the critic, timed alone at the "
           "step's shape. The columns are timed one after another; *paired* alternates the eager and the fastgp "
           "step round by round, so a drift of the machine's speed between timings does not enter their ratio "
           "(the target uses it).", ""]
    present = {p for c in cells.values() for p in c} - {"paired"}
    fused = [p for p in FUSED if p in present]
    lazy = sorted((p for p in present if p.startswith("lazy")), key=lambda p: int(p[4:]))
    r1 = [p for p in ("r1-eager", "r1-fastgp", "r1-lazy16") if p in present]
    fractions = [p for p in ("frac50", "frac25") if p in present]
    columns = [("floor", "floor (no penalty)"), ("eager", "eager GP")] + [(p, f"{p} GP") for p in fused] + \
        [(p, f"GP lazy {p[4:]}") for p in lazy] + [(p, f"GP on {p[4:]}%") for p in fractions] + \
        [(p, p.replace("-", " ")) for p in r1] + \
        [("arith-eager", "arithmetic eager")] + [(f"arith-{p}", f"arithmetic {p}") for p in fused]
    rows, notes = [], []
    for (model, batch), c in sorted(cells.items()):
        t = {p: step_per_call(r) for p, r in c.items()}
        rows.append([model, str(batch)] + [fmt_time(t.get(p)) for p, _ in columns])
        floor, eager = t.get("floor"), t.get("eager")
        medians = paired_medians(c["paired"]) if "paired" in c else None
        if medians is not None:
            p = c["paired"].info["provider"]
            notes.append(f"- **{model}** (B={batch}), paired: {medians[2]} rounds alternating the eager and the "
                         f"{p} penalty's steps: median {fmt_time(medians[0])} eager, {fmt_time(medians[1])} {p}, "
                         f"{medians[0] / medians[1]:.2f}x.")
        if not (floor and eager):
            continue
        sentence = (f"- **{model}** (B={batch}): the eager penalty makes a step {eager / floor:.2f}x the floor "
                    f"({'+' if eager >= floor else ''}{fmt_time(eager - floor)})")
        if t.get("arith-eager"):
            sentence += f"; its arithmetic alone is {fmt_time(t['arith-eager'])}, " \
                        f"{pct(t['arith-eager'] / eager)} of the step"
        for p in fused:
            if t.get(p):
                sentence += f"; with fastgp {p} the step is {t[p] / floor:.2f}x the floor ({eager / t[p]:.2f}x " \
                            "faster than eager"
                ap = t.get(f"arith-{p}")
                sentence += f", arithmetic {pct(ap / t[p])} of it)" if ap else ")"
        for p in lazy:
            if t.get(p):
                sentence += f"; lazy every {p[4:]} steps ({c[p].info.get('backend')}): {t[p] / floor:.2f}x the floor"
        for p in fractions:
            if t.get(p):
                sentence += f"; penalty on {p[4:]}% of the batch ({c[p].info.get('backend')}): {t[p] / floor:.2f}x " \
                            "the floor"
        if t.get("r1-eager") and t.get("r1-fastgp"):
            sentence += (f"; R1 every step: eager {t['r1-eager'] / floor:.2f}x, fastgp "
                         f"({c['r1-fastgp'].info.get('backend')}) {t['r1-fastgp'] / floor:.2f}x the floor")
            if t.get("r1-lazy16"):
                sentence += f", lazy every 16 steps {t['r1-lazy16'] / floor:.2f}x"
        notes.append(sentence + ".")
    return out + table(["model", "B"] + [h for _, h in columns], rows) + [""] + notes + [""]


def memory_section(results: List[Result]) -> List[str]:
    mem = [r for r in results if r.kind == "memory"]
    if not mem:
        return []
    rows = []
    for r in sorted(mem, key=lambda r: (r.info["pass_name"], r.info["dtype"],
                                        PROVIDER_ORDER.index(r.info["provider"])
                                        if r.info["provider"] in PROVIDER_ORDER else 99)):
        i = r.info
        peak = i["cuda_peak_bytes"] if i.get("cuda_peak_bytes", -1) >= 0 else i["peak_bytes"]
        rows.append([i["pass_name"], i["shape_id"], i["dtype"], i["provider"], fmt_bytes(peak),
                     f"{peak / i['input_bytes']:.2f}", str(i["allocations"]), fmt_bytes(i["allocated_bytes"]),
                     str(i["full_size_allocations"])])
    return ["## Memory", "",
            "Peak bytes allocated during one call above what existed before it (CUDA: `max_memory_allocated`; "
            "CPU: the profiler's allocation events), in units of one input tensor; allocations made; and how many "
            "of them are full-size (at least one byte per element). The fused path's outputs are the only "
            "full-size allocations it may make: x_hat (interp), none (forward), dL/dg (fwdbwd).", ""] + \
        table(["path", "shape", "dtype", "provider", "peak", "peak / input", "allocations", "allocated",
               "full-size"], rows) + [""]


def render(results: List[Result], runs: List[dict], stat: str, chart: Optional[str]) -> str:
    ops = Ops(results)
    device = next((r.info["device"] for r in results if "device" in r.info), "cpu")
    out = ["# fastgp benchmark report", ""] + environment_section(results, runs) + [
        f"- statistic: {stat} of the timed rounds; ratios are how many times faster the fastgp kernel is; "
        "% copy is achieved bytes/s over the copy's bytes/s at the same shape and dtype in the same run "
        "(bytes: interpolation reads 2 and writes 1 per element, forward reads g once, backward reads g and "
        "writes dL/dg once, copy reads and writes once).", ""]
    overhead, steps = Overhead(results), _step_cells(results)
    if ops.cells or overhead.cells or steps:
        out += ["## Targets", ""] + targets_section(ops, device, overhead, steps) + [""]
    if chart:
        out += [f"![benchmark chart]({os.path.basename(chart)})", ""]
    if ops.cells:
        out += ["## Ops", ""]
        for p in PASSES:
            out += pass_section(ops, p)
        out += copy_section(ops)
    out += overhead_section(overhead) + step_section(results) + memory_section(results)
    return "\n".join(out).rstrip() + "\n"


# ------------------------------------------------------------------ chart
def draw_chart(results: List[Result], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    ops = Ops(results)
    steps = _step_cells(results)
    panels = [p for p in PASSES if ops.keys(p)]
    n = len(panels) + (1 if ops.cells else 0) + (1 if steps else 0)
    if n == 0:
        raise SystemExit("no results to chart")
    cols = 2 if n > 1 else 1
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(8 * cols, 4.2 * rows), squeeze=False)
    axes = list(axes.flat)
    for ax in axes[n:]:
        ax.axis("off")
    dtypes = {k[2] for k in ops.cells}

    def label(k):
        return k[1] if len(dtypes) == 1 else f"{k[1]} {k[2]}"

    for ax, pass_name in zip(axes, panels):
        keys = ops.keys(pass_name)
        providers = [p for p in _order({p for k in keys for p in ops.cells[k]}) if p != "eager"]
        width = 0.8 / max(1, len(providers))
        for j, p in enumerate(providers):
            ys = [ops.ratio(k, "eager", p) or 0 for k in keys]
            ax.bar([i + (j - (len(providers) - 1) / 2) * width for i in range(len(keys))], ys, width, label=p)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.yaxis.set_minor_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}" if str(v)[0] in "25" else ""))
        ax.set_title(f"{PASS_TITLES[pass_name]}: speed-up vs eager")
        ax.set_xticks(range(len(keys)), [label(k) for k in keys], rotation=25, ha="right", fontsize=7)
        ax.legend(fontsize=7)
    i = len(panels)
    if ops.cells:
        ax = axes[i]
        i += 1
        series = [(p, pn) for pn in PASSES for p in FUSED if any(p in ops.cells[k] for k in ops.keys(pn))]
        keys = sorted({(k[1], k[2]) for k in ops.cells}, key=lambda sk: (sk[1], ops.copy[sk].info["numel"]
                                                                        if sk in ops.copy else 0))
        width = 0.8 / max(1, len(series))
        for j, (p, pn) in enumerate(series):
            ys = [100 * (ops.copy_fraction((pn, sid, dt), p) or 0) for sid, dt in keys]
            ax.bar([x + (j - (len(series) - 1) / 2) * width for x in range(len(keys))], ys, width, label=f"{p} {pn}")
        ax.axhline(100, color="k", lw=0.8)
        ax.set_title("fastgp kernels: % of copy bandwidth (same run)")
        ax.set_xticks(range(len(keys)), [sid if len(dtypes) == 1 else f"{sid} {dt}" for sid, dt in keys],
                      rotation=25, ha="right", fontsize=7)
        ax.legend(fontsize=7)
    if steps:
        ax = axes[i]
        models = sorted(steps)
        provs = [p for p in ("eager",) + FUSED + ("lazy4", "lazy16", "frac50", "frac25", "r1-eager", "r1-fastgp",
                                                   "r1-lazy16")
                 if any(p in steps[m] for m in models)]
        width = 0.8 / max(1, len(provs))
        for j, p in enumerate(provs):
            ys = []
            for m in models:
                floor, t = step_per_call(steps[m].get("floor")), step_per_call(steps[m].get(p))
                ys.append(t / floor if floor and t else 0)
            ax.bar([x + (j - (len(provs) - 1) / 2) * width for x in range(len(models))], ys, width, label=p)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_title("critic step time / step without penalty")
        ax.set_xticks(range(len(models)), [f"{m} B={b}" for m, b in models], fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", nargs="+", help="pytest-benchmark JSON files (--benchmark-json output) or summaries")
    ap.add_argument("--summary", help="write the compact summary of the inputs here (no per-round samples)")
    ap.add_argument("--out", help="markdown file to write (default: stdout)")
    ap.add_argument("--chart", help="PNG chart to write")
    ap.add_argument("--stat", default="median", choices=("min", "median", "mean"),
                    help="statistic of the timed rounds (default median)")
    args = ap.parse_args(argv)
    if args.summary:
        write_summary(args.json, args.summary)
    results, runs = load(args.json, args.stat)
    if args.chart:
        draw_chart(results, args.chart)
    text = render(results, runs, args.stat, args.chart)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
