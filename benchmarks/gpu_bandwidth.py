"""Bandwidth and speed of fastgp's GPU kernels on the shapes of the GPU
targets, against a device-to-device copy, the hand-written eager penalty and
its torch.compile, on the same card in the same run; launches per call; and
whether each target is met.

    python benchmarks/gpu_bandwidth.py --out OUTDIR [--budget-s 150]

Targets (the CUDA kernels, backend "cpp"; Triton's figures are reported):
  * interpolation and penalty backward >= 85% of copy bandwidth, penalty
    forward >= 80%, at 4096x1024, 256x3x64x64 and 1,000,000x2, float32 and bfloat16;
  * penalty forward+backward >= 3x the eager hand-written penalty and no slower
    than its torch.compile, at 1,000,000x2 and 65,536x16 (float32 and bfloat16);
  * at most 4 kernel launches per gradient-penalty call (interpolate, forward, backward).
Bytes counted per element: copy 2 (read + write), interpolation 3, forward 1,
backward 2. Times are CUDA-event medians per call, launch overhead included
(what a training loop pays).

Writes OUTDIR/bandwidth.json (every measurement, the environment, errors),
OUTDIR/bandwidth.md (the summary), OUTDIR/targets.json (each target: value,
threshold, met or not) and OUTDIR/readme_table.md (the README's GPU table,
ready to paste). Exits 0 only when every target was measured and met.

``--rehearse-on-cpu`` runs the same code on tiny CPU tensors (wall-clock
timers, no kernel counts) to check the script where no GPU is present; its
targets are "not measured on a GPU" and it exits non-zero.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
import traceback

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastgp  # noqa: E402
from benchmarks import providers  # noqa: E402
from fastgp import backends  # noqa: E402
from fastgp.backends.shared import REDUCTION_CODES  # noqa: E402
from fastgp._ext import state  # noqa: E402

BANDWIDTH_SHAPES = [(4096, 1024), (256, 3, 64, 64), (1_000_000, 2)]
SPEED_SHAPES = [(1_000_000, 2), (65_536, 16)]
GPU_SHAPES = [(4096, 1024), (256, 3, 64, 64), (1_000_000, 2), (65_536, 16)]
CPU_SHAPES = [(64, 16), (4, 3, 8, 8), (1000, 2)]  # rehearsal: same code, tiny tensors
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
BANDWIDTH_TARGETS = {"interpolate": 0.85, "backward": 0.85, "forward": 0.80}
SPEEDUP_VS_EAGER = 3.0
SPEEDUP_VS_COMPILED = 1.0
MAX_LAUNCHES = 4
WEIGHT = providers.WEIGHT
# The Backend protocol's signature: penalty_forward(grads, inv_scale, weight, center, power, one_sided, reduction).
PENALTY_ARGS = (WEIGHT, 1.0, 2.0, False, REDUCTION_CODES["mean"])


def shape_name(shape) -> str:
    return "x".join(str(s) for s in shape)


class Timer:
    """Median time per call of fn: CUDA events on a GPU, wall clock on the CPU."""

    def __init__(self, device: str, min_time_s: float, repeats: int):
        self.cuda = device == "cuda"
        self.min_time_s, self.repeats = min_time_s, repeats

    def _sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def _run(self, fn, n: int) -> float:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(n):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return time.perf_counter() - t0

    def __call__(self, fn) -> float:
        for _ in range(3):
            fn()
        self._sync()
        n = 1
        while n < 4096:  # calls per sample so that a sample lasts min_time_s
            if self._run(fn, n) >= self.min_time_s:
                break
            n *= 2
        return statistics.median(self._run(fn, n) / n for _ in range(self.repeats))


def count_kernels(fn, device: str):
    """CUDA kernels launched by one call of fn (None on the CPU)."""
    if device != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    names = [e.name for e in prof.events()
             if e.device_type == torch.autograd.DeviceType.CUDA and "Activity Buffer" not in e.name]
    return {"kernels": len(names), "fastgp_kernels": sum("fastgp" in n for n in names), "names": names}


def environment(device: str) -> dict:
    env = {
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "device": device,
        "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
        "extension": {"loaded": state.loaded, "reason": state.reason, "build": state.build},
        "backends": backends.available_backends(device),
        "fastgp": fastgp.__version__,
    }
    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        env["gpu_memory_gib"] = round(p.total_memory / 2**30, 1)
        env["compute_capability"] = f"{p.major}.{p.minor}"
        env["multiprocessors"] = p.multi_processor_count
    try:
        import triton

        env["triton"] = triton.__version__
    except Exception as e:  # not installed or broken
        env["triton"] = f"unavailable: {e}"
    return env


class Bench:
    def __init__(self, args):
        self.device = "cpu" if args.rehearse_on_cpu else "cuda"
        self.timer = Timer(self.device, args.min_time_s, args.repeats)
        self.deadline = time.monotonic() + args.budget_s
        self.rows, self.errors, self.skipped, self.launches = [], [], [], {}
        self.impls = {n: backends.get(n) for n in ("cpp", "triton")
                      if backends.unavailable_reason(n, self.device) is None}
        self.unavailable = {n: backends.unavailable_reason(n, self.device) for n in ("cpp", "triton")
                            if n not in self.impls}

    def out_of_time(self) -> bool:
        return time.monotonic() > self.deadline

    def record(self, case, op, backend, fn, nbytes=None):
        """Times fn and stores one row; failures are recorded, never raised."""
        if self.out_of_time():
            self.skipped.append({**case, "op": op, "backend": backend, "why": "time budget spent"})
            return None
        try:
            t = self.timer(fn)
        except Exception as e:
            self.errors.append({**case, "op": op, "backend": backend, "error": f"{type(e).__name__}: {e}",
                                "trace": traceback.format_exc(limit=3)})
            return None
        row = {**case, "op": op, "backend": backend, "time_us": t * 1e6}
        if nbytes is not None:
            row["bytes"] = nbytes
            row["gbps"] = nbytes / t / 1e9
        self.rows.append(row)
        return t

    def case(self, shape, dtype_name, with_compiled):
        dtype = DTYPES[dtype_name]
        case = {"shape": list(shape), "dtype": dtype_name}
        n = 1
        for s in shape:
            n *= s
        es = torch.empty((), dtype=dtype).element_size()
        gen = torch.Generator(device=self.device).manual_seed(0)

        def rnd():
            return torch.randn(shape, device=self.device, dtype=dtype, generator=gen)

        real, fake, g = rnd(), rnd(), rnd()
        alpha = torch.rand(shape[0], device=self.device, generator=gen)
        dst = torch.empty_like(real)
        self.record(case, "copy", "torch", lambda: dst.copy_(real), 2 * n * es)
        go = torch.ones((), device=self.device)
        for name, impl in self.impls.items():
            self.record(case, "interpolate", name, lambda: impl.interpolate(real, fake, alpha), 3 * n * es)
            self.record(case, "forward", name, lambda: impl.penalty_forward([g], None, *PENALTY_ARGS), n * es)
            _, norms = impl.penalty_forward([g], None, *PENALTY_ARGS)
            self.record(case, "backward", name,
                        lambda: impl.penalty_backward(go, [g], norms, None, *PENALTY_ARGS), 2 * n * es)
            gr = g.detach().requires_grad_(True)
            self.record(case, "forward+backward", name,
                        lambda: torch.autograd.grad(impl.penalty_forward([gr], None, *PENALTY_ARGS)[0], [gr]))
            key = f"{name} {shape_name(shape)} {dtype_name}"
            if key not in self.launches and not self.out_of_time():
                def gp_call():
                    impl.interpolate(real, fake, alpha)
                    torch.autograd.grad(impl.penalty_forward([gr], None, *PENALTY_ARGS)[0], [gr])
                try:
                    self.launches[key] = count_kernels(gp_call, self.device)
                except Exception as e:
                    self.errors.append({**case, "op": "launch count", "backend": name, "error": repr(e)})
        gr = g.detach().requires_grad_(True)
        eager = providers.penalty("eager")
        self.record(case, "forward+backward", "eager", lambda: torch.autograd.grad(eager(gr), [gr]))
        if with_compiled and not self.out_of_time():
            compiled = providers.penalty("compile")
            self.record(case, "forward+backward", "compiled", lambda: torch.autograd.grad(compiled(gr), [gr]))
        del real, fake, g, dst

    def run(self, shapes, speed_shapes):
        for shape in shapes:
            for dtype_name in DTYPES:
                self.case(shape, dtype_name, with_compiled=tuple(shape) in speed_shapes)
                if self.device == "cuda":
                    torch.cuda.empty_cache()


def _find(rows, shape, dtype, op, backend):
    for r in rows:
        if r["shape"] == list(shape) and r["dtype"] == dtype and r["op"] == op and r["backend"] == backend:
            return r
    return None


def evaluate_targets(result: dict, bandwidth_shapes, speed_shapes) -> list:
    """Every target with its measured value; a target not measured on a GPU is not met."""
    rows, on_gpu = result["rows"], result["env"]["device"] == "cuda"
    targets = []

    def add(name, shape, dtype, value, threshold, unit):
        met = on_gpu and value is not None and value >= threshold
        why = None if on_gpu and value is not None else ("not measured on a GPU" if not on_gpu else "not measured")
        targets.append({"target": name, "shape": shape_name(shape), "dtype": dtype, "value": value,
                        "threshold": threshold, "unit": unit, "met": met, "why": why})

    for shape in bandwidth_shapes:
        for dtype in DTYPES:
            copy = _find(rows, shape, dtype, "copy", "torch")
            for op, threshold in BANDWIDTH_TARGETS.items():
                r = _find(rows, shape, dtype, op, "cpp")
                value = r["gbps"] / copy["gbps"] if r and copy else None
                add(f"{op} bandwidth / copy bandwidth", shape, dtype, value, threshold, "fraction")
    for shape in speed_shapes:
        for dtype in DTYPES:
            ours = _find(rows, shape, dtype, "forward+backward", "cpp")
            for base, threshold in (("eager", SPEEDUP_VS_EAGER), ("compiled", SPEEDUP_VS_COMPILED)):
                r = _find(rows, shape, dtype, "forward+backward", base)
                value = r["time_us"] / ours["time_us"] if r and ours else None
                add(f"forward+backward speed-up vs {base}", shape, dtype, value, threshold, "x")
    for shape in bandwidth_shapes + [s for s in speed_shapes if s not in bandwidth_shapes]:
        for dtype in DTYPES:
            counted = result["launches"].get(f"cpp {shape_name(shape)} {dtype}")
            value = None if counted is None else counted["kernels"]
            met = on_gpu and value is not None and value <= MAX_LAUNCHES
            targets.append({"target": "kernel launches per gradient-penalty call", "shape": shape_name(shape),
                            "dtype": dtype, "value": value, "threshold": MAX_LAUNCHES, "unit": "at most",
                            "met": met, "why": None if value is not None else
                            ("not measured on a GPU" if not on_gpu else "not measured")})
    return targets


def _pct(x):
    return "-" if x is None else f"{100 * x:.0f}%"


def readme_table(result: dict, shapes) -> str:
    """The README's GPU table: one row per shape and dtype, the CUDA kernels (backend "cpp")."""
    env, rows = result["env"], result["rows"]
    lines = [f"{env.get('gpu') or 'no GPU (rehearsal on the CPU: not a GPU figure)'}, "
             f"torch {env['torch']} (CUDA {env['torch_cuda']}), triton {env['triton']}, fastgp {env['fastgp']}, "
             f"{env['timestamp'][:10]}. % of the copy bandwidth measured on the same shape; times per call "
             "(CUDA events, launch overhead included).", "",
             "| shape | dtype | copy GB/s | interpolate | forward | backward | fwd+bwd us | eager us | compiled us "
             "| vs eager | vs compiled | launches |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for shape in shapes:
        for dtype in DTYPES:
            copy = _find(rows, shape, dtype, "copy", "torch")
            if copy is None:
                continue

            def frac(op):
                r = _find(rows, shape, dtype, op, "cpp")
                return _pct(r["gbps"] / copy["gbps"]) if r else "-"

            def us(backend):
                r = _find(rows, shape, dtype, "forward+backward", backend)
                return (f"{r['time_us']:.1f}", r["time_us"]) if r else ("-", None)

            ours, eager, comp = us("cpp"), us("eager"), us("compiled")
            ratio = [f"{b[1] / ours[1]:.1f}x" if b[1] and ours[1] else "-" for b in (eager, comp)]
            counted = result["launches"].get(f"cpp {shape_name(shape)} {dtype}")
            lines.append(f"| {shape_name(shape)} | {dtype} | {copy['gbps']:.0f} | {frac('interpolate')} | "
                         f"{frac('forward')} | {frac('backward')} | {ours[0]} | {eager[0]} | {comp[0]} | "
                         f"{ratio[0]} | {ratio[1]} | {counted['kernels'] if counted else '-'} |")
    return "\n".join(lines) + "\n"


def summarize(result: dict) -> str:
    env, rows = result["env"], result["rows"]
    lines = [f"# fastgp GPU bandwidth ({env['gpu'] or env['device']})", ""]
    lines += [readme_table(result, result["shapes"]), "## Targets", ""]
    for t in result["targets"]:
        value = "-" if t["value"] is None else (f"{t['value']:.2f}" if isinstance(t["value"], float) else t["value"])
        lines.append(f"- {'met' if t['met'] else 'MISSED'}: {t['target']} at {t['shape']} {t['dtype']}: {value} "
                     f"({t['unit']} {t['threshold']}){'; ' + t['why'] if t['why'] else ''}")
    triton = [r for r in rows if r["backend"] == "triton"]
    if triton:
        lines += ["", "## Triton kernels (reported, not targets)", ""]
        for r in triton:
            copy = _find(rows, r["shape"], r["dtype"], "copy", "torch")
            frac = f", {_pct(r['gbps'] / copy['gbps'])} of copy" if "gbps" in r and copy else ""
            lines.append(f"- {r['op']} {shape_name(r['shape'])} {r['dtype']}: {r['time_us']:.1f} us{frac}")
    lines += ["", "## Launches per gradient-penalty call (interpolate + penalty forward + backward)", ""]
    for key, v in result["launches"].items():
        lines.append(f"- {key}: " + ("not counted on the CPU" if v is None else
                                     f"{v['kernels']} kernels ({v['fastgp_kernels']} fastgp): {', '.join(v['names'])}"))
    if result["unavailable"]:
        lines += ["", "## Backends not measured", ""] + [f"- {k}: {v}" for k, v in result["unavailable"].items()]
    if result["errors"]:
        lines += ["", "## Errors", ""] + [f"- {e['backend']} {e['op']} {e.get('shape')} {e.get('dtype')}: "
                                          f"{e['error']}" for e in result["errors"]]
    if result["skipped"]:
        lines += ["", f"{len(result['skipped'])} measurements skipped: time budget spent."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for the results")
    p.add_argument("--budget-s", type=float, default=150.0, help="stop starting measurements after this long")
    p.add_argument("--min-time-s", type=float, default=0.02, help="length of one timing sample")
    p.add_argument("--repeats", type=int, default=5, help="samples per measurement (median)")
    p.add_argument("--rehearse-on-cpu", action="store_true", help="tiny CPU run that checks this script")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    device = "cpu" if args.rehearse_on_cpu else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        msg = "no CUDA device is visible: nothing measured (use --rehearse-on-cpu to check the script)"
        with open(os.path.join(args.out, "bandwidth.json"), "w") as f:
            json.dump({"env": environment("cpu"), "skipped": msg}, f, indent=1, default=str)
        with open(os.path.join(args.out, "bandwidth.md"), "w") as f:
            f.write(f"# fastgp GPU bandwidth\n\n{msg}\n")
        print(msg, file=sys.stderr)
        return 3
    shapes = CPU_SHAPES if args.rehearse_on_cpu else GPU_SHAPES
    bandwidth_shapes = CPU_SHAPES[:2] if args.rehearse_on_cpu else BANDWIDTH_SHAPES
    speed_shapes = CPU_SHAPES[2:] if args.rehearse_on_cpu else SPEED_SHAPES
    bench = Bench(args)
    bench.run(shapes, [tuple(s) for s in speed_shapes])
    result = {"env": environment(device), "shapes": [list(s) for s in shapes], "rows": bench.rows,
              "launches": bench.launches, "unavailable": bench.unavailable, "errors": bench.errors,
              "skipped": bench.skipped}
    result["targets"] = evaluate_targets(result, bandwidth_shapes, speed_shapes)
    with open(os.path.join(args.out, "bandwidth.json"), "w") as f:
        json.dump(result, f, indent=1, default=str)
    with open(os.path.join(args.out, "targets.json"), "w") as f:
        json.dump(result["targets"], f, indent=1)
    with open(os.path.join(args.out, "readme_table.md"), "w") as f:
        f.write(readme_table(result, shapes))
    summary = summarize(result)
    with open(os.path.join(args.out, "bandwidth.md"), "w") as f:
        f.write(summary)
    print(summary)
    return 0 if not bench.errors and all(t["met"] for t in result["targets"]) else 1


if __name__ == "__main__":
    sys.exit(main())
