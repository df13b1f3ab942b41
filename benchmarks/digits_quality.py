"""Digits quality benchmark of fastgp-train: a WGAN-GP on scikit-learn's 8x8 digits, several seeds, each run
scored by the trainer's offline evaluator (a small classifier of the real digits, fastgp/train/evaluator.py) on
2500 generated digits: classes covered, KL of the class histogram from the real one, and the Fréchet distance in the
classifier's features next to the real-vs-real baseline; for the EMA generator and the raw one.

    python benchmarks/digits_quality.py                 # 3 seeds, at most 15 CPU minutes each
    python benchmarks/digits_quality.py --seeds 0       # one run
    python benchmarks/digits_quality.py --table-only    # rebuild the table from finished runs

Each run is one `python -m fastgp.train --config benchmarks/digits_quality.json --seed S` process; its summary.json
gives the metrics. All runs share one evaluator (trained once, cached in the runs folder), so they are measured by
the same classifier. The table goes to benchmarks/results/digits_quality.md (and .json); `--docs` copies each run's
samples.png to docs/digits_quality_seed<S>.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # run as a script: the benchmarks package sits at the repository root

from benchmarks.quality_runs import mean_std, write_results  # noqa: E402

CPU_BUDGET_S = 15 * 60  # per run: CPU time of the training process (on a shared machine wall time says little)
GOAL = {"coverage": 10, "kl": 0.05, "fd_ratio": 2.0}  # the goal: 10/10 classes, KL <= 0.05, FD <= 2x baseline


def run_name(seed: int) -> str:
    return f"digits_quality-seed{seed}"


def run_one(seed: int, args) -> dict:
    name = run_name(seed)
    cmd = [sys.executable, "-m", "fastgp.train", "--config", args.config, "--seed", str(seed), "--name", name,
           "--out-dir", args.runs_dir, "--eval-cache", os.path.join(args.runs_dir, "evaluator"), "--overwrite",
           "--no-progress"] + args.extra
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    load_before = os.getloadavg()[0]
    os.makedirs(args.runs_dir, exist_ok=True)
    log = os.path.join(args.runs_dir, f"{name}.log")
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        # this child's own CPU time (user + system), whatever else runs beside it: the budget is checked on it
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    with open(log) as f:
        text = f.read()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{text[-2000:]}")
    print(text.strip(), flush=True)
    with open(os.path.join(args.runs_dir, name, "summary.json")) as f:
        summary = json.load(f)
    if "coverage" not in summary:
        raise SystemExit(f"{name}: no image-quality metric in summary.json: {summary}")
    # wall: the whole process, on a shared machine; CPU: the whole process's CPU time (imports, evaluator, training,
    # evaluations, pictures) and the training loop's alone (summary.json's cpu_seconds)
    summary.update(wall_s=round(wall, 1), cpu_s=round(usage.ru_utime + usage.ru_stime, 1),
                   train_cpu_s=round(summary["cpu_seconds"], 1), seed=seed, extra_flags=args.extra,
                   load_average=[round(load_before, 1), round(os.getloadavg()[0], 1)])
    with open(os.path.join(args.runs_dir, name, "benchmark.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def load_done(args) -> list:
    out = []
    for seed in args.seeds:
        path = os.path.join(args.runs_dir, run_name(seed), "benchmark.json")
        if os.path.isfile(path):
            with open(path) as f:
                out.append(json.load(f))
    return out


def _ratio(m: dict) -> float:
    return m["fd"] / m["fd_baseline"]


def goal_met(m: dict) -> bool:
    return m["coverage"] >= GOAL["coverage"] and m["kl"] <= GOAL["kl"] and _ratio(m) <= GOAL["fd_ratio"]


def table(results: list, config: dict) -> str:
    rows = [("EMA generator", [r for r in results]), ("raw generator", [r["raw_generator"] for r in results])]
    seeds = sorted(r["seed"] for r in results)
    base = results[0] if results else {}
    lines = ["| generator | classes covered (of 10) | KL (nats) | FD | real-vs-real FD | FD / real-vs-real | "
             "% confidently classified | goal met |", "|---|---|---|---|---|---|---|---|"]
    for label, ms in rows:
        lines.append(f"| {label} | {mean_std([m['coverage'] for m in ms], 1)} | {mean_std([m['kl'] for m in ms], 3)} | "
                     f"{mean_std([m['fd'] for m in ms], 2)} | {mean_std([m['fd_baseline'] for m in ms], 2)} | "
                     f"{mean_std([_ratio(m) for m in ms], 2)} | "
                     f"{mean_std([100 * m['confident_fraction'] for m in ms], 1)} | "
                     f"{sum(goal_met(m) for m in ms)} of {len(ms)} runs |")
    lines += ["", f"Mean ± std over seeds {seeds}. Goal (issue): 10/10 classes, KL <= {GOAL['kl']}, FD <= "
              f"{GOAL['fd_ratio']:g}x the real-vs-real baseline. Each run is scored on {base.get('samples', '?')} "
              f"generated digits; FD takes the first {base.get('fd_samples', '?')} of them against the held-out real "
              f"digits (25% of each class), the baseline as many real training-split digits against the same ones. "
              f"The evaluator's held-out accuracy is {100 * base.get('classifier_accuracy', float('nan')):.1f}%.", "",
              "Runs (wall: the whole process, on a machine shared with other work; CPU: the whole process's CPU time, "
              f"checked against the budget of {CPU_BUDGET_S} s, and the training loop's alone, evaluations included; "
              "load: the machine's 1-minute load average at the start and end of the run):", "",
              "| seed | EMA: classes / KL / FD | raw: classes / KL / FD | real-vs-real FD | steps | wall s | CPU s | "
              "training CPU s | within the CPU budget | load |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: r["seed"]):
        raw = r["raw_generator"]
        lines.append(f"| {r['seed']} | {r['coverage']}/10 / {r['kl']:.3f} / {r['fd']:.2f} | {raw['coverage']}/10 / "
                     f"{raw['kl']:.3f} / {raw['fd']:.2f} | {r['fd_baseline']:.2f} | {r['steps']} | {r['wall_s']} | "
                     f"{r['cpu_s']} | {r['train_cpu_s']} | {'yes' if r['cpu_s'] <= CPU_BUDGET_S else 'NO'} | "
                     f"{r['load_average'][0]}-{r['load_average'][1]} |")
    extra = sorted({" ".join(r.get("extra_flags", [])) for r in results} - {""})
    lines += ["", f"Config: `{json.dumps(config)}` (benchmarks/digits_quality.json)"
              + (f", with the flags {', '.join(f'`{e}`' for e in extra)}" if extra else "")
              + f"; machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--config", default=os.path.join("benchmarks", "digits_quality.json"))
    p.add_argument("--runs-dir", default=os.path.join("runs", "digits_quality"))
    p.add_argument("--out", default=os.path.join("benchmarks", "results", "digits_quality.md"))
    p.add_argument("--table-only", action="store_true", help="only rebuild the table from finished runs")
    p.add_argument("--jobs", type=int, default=1, help="runs at the same time (each uses one CPU thread)")
    p.add_argument("--docs", action="store_true", help="copy each run's samples.png to docs/digits_quality_seed<S>.png")
    p.add_argument("extra", nargs="*", help="more fastgp-train flags after --, e.g. -- --steps 1000")
    args = p.parse_args()
    os.chdir(ROOT)
    if not args.table_only:
        def one(seed):
            r = run_one(seed, args)
            print(f"seed {seed}: EMA {r['coverage']}/10 classes, KL {r['kl']:.3f}, FD {r['fd']:.2f} (real-vs-real "
                  f"{r['fd_baseline']:.2f}); {r['wall_s']} s wall, {r['cpu_s']} s CPU", flush=True)

        with ThreadPoolExecutor(max_workers=max(args.jobs, 1)) as pool:
            list(pool.map(one, args.seeds))
    results = load_done(args)
    if not results:
        raise SystemExit(f"no finished run in {args.runs_dir}")
    with open(args.config) as f:
        config = json.load(f)
    text = table(results, config)
    write_results(text, results, args.out)
    if args.docs:
        for r in results:
            shutil.copyfile(os.path.join(args.runs_dir, run_name(r["seed"]), "samples.png"),
                            os.path.join("docs", f"digits_quality_seed{r['seed']}.png"))
    print(text)


if __name__ == "__main__":
    main()
