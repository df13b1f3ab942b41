"""Toy quality benchmark of fastgp-train: WGAN-GP on the 8-Gaussians ring and the 25-Gaussians grid,
several seeds, scored with the VEEGAN protocol (2500 samples; a sample is high quality within 3 std of
its nearest mode; a mode is captured by at least one HQ sample), next to the published table.

    python benchmarks/toy_quality.py                       # 3 seeds x (ring, grid), about 2 x 3 x 10 min on 2 cores
    python benchmarks/toy_quality.py --seeds 0 --data ring # one run
    python benchmarks/toy_quality.py --table-only          # rebuild the table from finished runs

Each run is one `python -m fastgp.train --config benchmarks/toy_quality.json --data D --seed S` process;
its summary.json gives the metrics. The table goes to benchmarks/results/toy_quality.md (and .json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # run as a script: the benchmarks package sits at the repository root

from benchmarks.quality_runs import mean_std, write_results  # noqa: E402

# Published rows (modes captured, % HQ), as listed in the project's references (VEEGAN, GDPP, PacGAN tables).
PUBLISHED = [
    ("GAN", 1, 99.3, 3.3, 0.5, "VEEGAN Table 1"),
    ("ALI", 2.8, 0.13, 15.8, 1.6, "VEEGAN Table 1"),
    ("Unrolled GAN", 7.6, 35.6, 23.6, 16.0, "VEEGAN Table 1"),
    ("VEEGAN", 8.0, 52.9, 24.6, 40.0, "VEEGAN Table 1"),
    ("WGAN-GP", 6.8, 59.6, 24.2, 28.7, "GDPP Table 1 (25k iterations)"),
    ("GDPP", 8.0, 71.7, 24.8, 68.5, "GDPP Table 1"),
    ("PacGAN2 (larger nets, 400 epochs)", 7.9, 95.6, 23.8, 91.3, "PacGAN Table 1"),
    ("PacGAN4", 7.8, 95.9, 24.8, 93.6, "PacGAN Table 1"),
]


def run_one(data: str, seed: int, args) -> dict:
    name = f"toy_quality-{data}-seed{seed}"
    cmd = [sys.executable, "-m", "fastgp.train", "--config", args.config, "--data", data, "--seed", str(seed),
           "--name", name, "--out-dir", args.runs_dir, "--overwrite", "--no-progress"] + args.extra
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    print(proc.stdout.strip(), flush=True)
    with open(os.path.join(args.runs_dir, name, "summary.json")) as f:
        summary = json.load(f)
    # wall time of the whole process (imports, pictures included); CPU time of the training process
    summary.update(wall_s=round(wall, 1), cpu_s=round(summary["cpu_seconds"], 1), data=data, seed=seed)
    with open(os.path.join(args.runs_dir, name, "benchmark.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def load_done(args) -> list:
    out = []
    for data in ("ring", "grid"):
        for seed in args.seeds:
            path = os.path.join(args.runs_dir, f"toy_quality-{data}-seed{seed}", "benchmark.json")
            if os.path.isfile(path):
                with open(path) as f:
                    out.append(json.load(f))
    return out


def table(results: list, config: dict) -> str:
    by = {d: [r for r in results if r["data"] == d] for d in ("ring", "grid")}
    lines = ["| method | ring modes (of 8) | ring % HQ | grid modes (of 25) | grid % HQ | source |",
             "|---|---|---|---|---|---|"]
    for name, rm, rq, gm, gq, src in PUBLISHED:
        lines.append(f"| {name} | {rm} | {rq} | {gm} | {gq} | {src} |")
    ring, grid = by["ring"], by["grid"]
    lines.append(f"| **WGAN-GP, fastgp-train** | **{mean_std([r['modes'] for r in ring])}** | "
                 f"**{mean_std([r['hq_percent'] for r in ring])}** | **{mean_std([r['modes'] for r in grid])}** | "
                 f"**{mean_std([r['hq_percent'] for r in grid])}** | this benchmark, seeds "
                 f"{sorted({r['seed'] for r in results})}, mean ± std |")
    lines += ["", "Runs (wall: the whole process, on a CPU shared with other work; CPU: the training process):", "",
              "| data | seed | modes | % HQ | steps | wall s | CPU s |", "|---|---|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: (r["data"], r["seed"])):
        lines.append(f"| {r['data']} | {r['seed']} | {r['modes']}/{r['n_modes']} | {r['hq_percent']:.1f} | "
                     f"{r['steps']} | {r['wall_s']} | {r['cpu_s']} |")
    lines += ["", f"Config: `{json.dumps(config)}` (benchmarks/toy_quality.json); machine: {platform.machine()}, "
              f"{os.cpu_count()} CPUs, Python {platform.python_version()}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--data", nargs="+", default=["ring", "grid"], choices=["ring", "grid"])
    p.add_argument("--config", default=os.path.join("benchmarks", "toy_quality.json"))
    p.add_argument("--runs-dir", default=os.path.join("runs", "toy_quality"))
    p.add_argument("--out", default=os.path.join("benchmarks", "results", "toy_quality.md"))
    p.add_argument("--table-only", action="store_true", help="only rebuild the table from finished runs")
    p.add_argument("--jobs", type=int, default=1, help="runs at the same time (each uses one CPU thread)")
    p.add_argument("extra", nargs="*", help="more fastgp-train flags after --, e.g. -- --steps 3000")
    args = p.parse_args()
    os.chdir(ROOT)
    if not args.table_only:
        def one(job):
            r = run_one(*job, args)
            print(f"{r['data']} seed {r['seed']}: {r['modes']}/{r['n_modes']} modes, {r['hq_percent']:.1f}% HQ, "
                  f"{r['wall_s']} s wall, {r['cpu_s']} s CPU", flush=True)

        jobs = [(data, seed) for data in args.data for seed in args.seeds]
        with ThreadPoolExecutor(max_workers=max(args.jobs, 1)) as pool:
            list(pool.map(one, jobs))
    results = load_done(args)
    with open(args.config) as f:
        config = json.load(f)
    text = table(results, config)
    write_results(text, results, args.out)
    print(text)


if __name__ == "__main__":
    main()
