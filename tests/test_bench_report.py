"""The benchmark report's arithmetic: ratios, % of copy bandwidth with the
issue's byte counting, target verdicts, lazy steps per call, the chart."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks package lives beside tests/

from benchmarks import report  # noqa: E402
from benchmarks.matrix import MATRICES, bytes_moved  # noqa: E402

ENV = {"device": "cpu", "device_name": "test cpu", "torch": "x", "threads": 2, "cpu_count": 2, "matrix": "quick",
       "fastgp_backends": ["cpp", "torch"], "loadavg_1min": 0.5}
DCGAN = next(s for s in MATRICES["quick"] if s.id == "dcgan_256x3x64x64")
TAB = next(s for s in MATRICES["quick"] if s.id == "tabular_256x2")


def _op(shape, pass_name, provider, seconds, dtype="float32"):
    info = dict(ENV, kind="op", shape=list(shape.dims), shape_id=shape.id, numel=shape.numel, dtype=dtype,
                pass_name=pass_name, provider=provider, bytes=bytes_moved(pass_name, shape.numel, dtype))
    return {"name": f"{pass_name}-{provider}", "group": "g", "stats": {"median": seconds, "min": seconds / 2,
                                                                        "mean": seconds}, "extra_info": info}


def _step(model, provider, seconds, steps=1):
    info = dict(ENV, kind="step", model=model, batch=16, provider=provider, backend="cpp", steps_per_call=steps)
    return {"name": provider, "group": "s", "stats": {"median": seconds, "min": seconds, "mean": seconds},
            "extra_info": info}


@pytest.fixture
def run_json(tmp_path):
    t_copy = 2e-3
    benches = [
        _op(DCGAN, "copy", "copy", t_copy),
        _op(DCGAN, "fwdbwd", "eager", 12e-3), _op(DCGAN, "fwdbwd", "compile", 4e-3), _op(DCGAN, "fwdbwd", "cpp", 2e-3),
        _op(DCGAN, "forward", "eager", 3e-3), _op(DCGAN, "forward", "cpp", 1.25e-3),
        _op(DCGAN, "interp", "eager", 9e-3), _op(DCGAN, "interp", "lerp", 3e-3), _op(DCGAN, "interp", "cpp", 4e-3),
        _op(TAB, "fwdbwd", "eager", 100e-6), _op(TAB, "fwdbwd", "cpp", 50e-6),
        _step("dcgan", "floor", 1.0), _step("dcgan", "eager", 3.0), _step("dcgan", "cpp", 2.5),
        _step("dcgan", "lazy16", 20.0, steps=16), _step("dcgan", "arith-eager", 0.03),
    ]
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"datetime": "now", "benchmarks": benches}))
    return path, t_copy


def test_ratios_and_copy_fraction(run_json):
    path, t_copy = run_json
    results, _ = report.load([str(path)])
    ops = report.Ops(results)
    key = ("fwdbwd", DCGAN.id, "float32")
    assert ops.ratio(key, "eager", "cpp") == pytest.approx(6.0)
    assert ops.ratio(key, "compile", "cpp") == pytest.approx(2.0)
    # forward moves N*4 bytes in 1.25 ms; the copy moves 2*N*4 bytes in t_copy
    n4 = DCGAN.numel * 4
    expected = (n4 / 1.25e-3) / (2 * n4 / t_copy)
    assert ops.copy_fraction(("forward", DCGAN.id, "float32"), "cpp") == pytest.approx(expected)
    # fwd+bwd counts 3N: reads g, reads g again and writes dL/dg
    assert ops.copy_fraction(key, "cpp") == pytest.approx((3 * n4 / 2e-3) / (2 * n4 / t_copy))


def test_target_verdicts(run_json):
    path, _ = run_json
    results, _ = report.load([str(path)])
    rows = {(r["target"].label, r["shape"]): r for r in report.evaluate_targets(report.Ops(results), "cpu")}
    assert rows[("fwd+bwd >= 5x eager", DCGAN.id)]["met"] is True            # 6x
    assert rows[("fwd+bwd >= 1.5x torch.compile", DCGAN.id)]["met"] is True  # 2x
    assert rows[("interpolation >= 10x eager", DCGAN.id)]["met"] is False    # 2.25x
    assert rows[("interpolation no slower than torch.lerp", DCGAN.id)]["met"] is False
    assert rows[("tiny tabular fwd+bwd >= 3x eager", TAB.id)]["met"] is False  # 2x
    fwd_bw = rows[("forward >= 75% of copy bandwidth (large shapes)", DCGAN.id)]
    assert fwd_bw["met"] is True and fwd_bw["value"] == pytest.approx(0.8)
    # the large-shape targets do not apply to the tiny tabular shape
    assert ("forward >= 75% of copy bandwidth (large shapes)", TAB.id) not in rows


def test_render_and_chart(run_json, tmp_path):
    pytest.importorskip("matplotlib")
    path, _ = run_json
    out, chart = tmp_path / "report.md", tmp_path / "chart.png"
    assert report.main([str(path), "--out", str(out), "--chart", str(chart)]) == 0
    text = out.read_text()
    assert "**MISSED**" in text and f"Missed: {DCGAN.id} (cpp, interpolation >= 10x eager)" in text
    # lazy16: 20 s per call of 16 steps is 1.25 s per step
    assert "| dcgan | 16 | 1 s | 3 s | 2.5 s | 1.25 s |" in text
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_busy_machine_is_flagged(tmp_path):
    bench = _op(TAB, "fwdbwd", "eager", 1e-4)
    bench["extra_info"]["loadavg_1min"] = 6.0
    path = tmp_path / "busy.json"
    path.write_text(json.dumps({"benchmarks": [bench]}))
    results, runs = report.load([str(path)])
    assert "warning: the machine was busy" in report.render(results, runs, "median", None)


def test_page_faults_explain_a_missed_bandwidth_target(tmp_path):
    big = next(s for s in MATRICES["quick"] if s.id.startswith("stylegan256"))
    slow = _op(big, "backward", "cpp", 10e-3)
    slow["extra_info"]["page_faults_per_call"] = 12288.0
    benches = [_op(big, "copy", "copy", 4e-3), slow]  # backward at 40% of the copy's bandwidth
    path = tmp_path / "faults.json"
    path.write_text(json.dumps({"benchmarks": benches}))
    results, runs = report.load([str(path)])
    text = report.render(results, runs, "median", None)
    assert "**MISSED**" in text
    assert f"{big.id} (cpp): 12288 page faults per call" in text


def _overhead(op, provider, seconds, backend=None):
    info = dict(ENV, kind="overhead", op=op, provider=provider, backend=backend, shape=[256, 2],
                shape_id="tabular_256x2", dtype="float32")
    return {"name": f"overhead-{op}-{provider}-{backend}", "group": "o",
            "stats": {"median": seconds, "min": seconds, "mean": seconds}, "extra_info": info}


def test_call_overhead_section_and_targets(tmp_path):
    benches = [_overhead("interp", "lerp", 2e-6), _overhead("interp", "raw", 4e-6, "cpp"),
               _overhead("interp", "public", 7e-6, "cpp"),                    # 1.75x: met
               _overhead("forward", "eager", 50e-6), _overhead("forward", "raw", 10e-6, "cpp"),
               _overhead("forward", "public", 25e-6, "cpp")]                  # 2.5x: missed
    path = tmp_path / "overhead.json"
    path.write_text(json.dumps({"benchmarks": benches}))
    results, runs = report.load([str(path)])
    overhead = report.Overhead(results)
    assert overhead.quotient(("interp", "tabular_256x2", "float32", "cpp"), "public", "raw") == pytest.approx(1.75)
    rows = {r["target"].label: r for r in report.evaluate_targets(report.Ops(results), "cpu", overhead, {})}
    assert rows["public interpolate at most 2x the raw op"]["met"] is True
    assert rows["public penalty_from_grads at most 2x the raw op"]["met"] is False
    assert rows["public penalty fwd+bwd at most 2x the raw op"]["met"] is None  # not measured
    text = report.render(results, runs, "median", None)
    assert "## Call overhead" in text and "| 1.75x | 0.29x |" in text
    assert "| `fastgp.interpolate` | cpp | tabular_256x2 | float32 | 2 µs | 4 µs | 7 µs" in text


def test_step_target_compares_with_the_hand_written_penalty(run_json):
    path, _ = run_json
    results, _ = report.load([str(path)])
    rows = [r for r in report.evaluate_targets(report.Ops(results), "cpu", None, report._step_cells(results))
            if r["target"].kind == "step"]
    assert [(r["shape"], r["provider"], r["met"]) for r in rows] == [("dcgan B=16", "cpp", True)]  # 3 s / 2.5 s
    assert rows[0]["value"] == pytest.approx(1.2)


def test_step_target_prefers_the_paired_rounds(run_json):
    """Separate timings say cpp is faster (3 s vs 2.5 s); the paired rounds, taken
    side by side, say it is 0.9x: the verdict follows the paired rounds, and
    the step section says so."""
    path, _ = run_json
    raw = json.loads(path.read_text())
    info = dict(ENV, kind="step_paired", model="dcgan", batch=16, provider="cpp", backend="cpp",
                paired_seconds={"eager": [1.0, 0.9, 1.1, 5.0], "cpp": [1.2, 1.1, 1.3, 0.1]})
    raw["benchmarks"].append({"name": "paired", "group": "p", "stats": {"median": 2.1, "min": 2.0, "mean": 2.1},
                              "extra_info": info})
    path.write_text(json.dumps(raw))
    results, _ = report.load([str(path)])
    rows = [r for r in report.evaluate_targets(report.Ops(results), "cpu", None, report._step_cells(results))
            if r["target"].kind == "step"]
    assert [(r["shape"], r["provider"], r["met"]) for r in rows] == [("dcgan B=16", "cpp (paired)", False)]
    assert rows[0]["value"] == pytest.approx(1.05 / 1.15)  # the medians: one outlier each does not move them
    text = "\n".join(report.step_section(results))
    assert "paired: 4 rounds alternating the eager and the cpp penalty's steps" in text
    assert "| paired" not in text  # not a column of the table


def test_summary_regenerates_the_report(run_json, tmp_path):
    """The compact summary keeps every statistic and no per-round samples; the
    report rendered from it is the report rendered from the raw files."""
    path, _ = run_json
    raw = json.loads(path.read_text())
    for b in raw["benchmarks"]:
        b["stats"]["data"] = [b["stats"]["median"]] * 1000  # pytest-benchmark's per-round samples
    raw["machine_info"] = {"node": "somehost", "machine": "x86_64", "cpu": {"brand_raw": "test cpu", "count": 2}}
    path.write_text(json.dumps(raw))
    summary = tmp_path / "summary.json"
    assert report.main([str(path), "--summary", str(summary), "--out", str(tmp_path / "a.md")]) == 0
    data = json.loads(summary.read_text())
    assert data["format"] == report.SUMMARY_FORMAT and len(data["results"]) == len(raw["benchmarks"])
    assert all("data" not in r["stats"] for r in data["results"]) and "somehost" not in summary.read_text()
    assert summary.stat().st_size < path.stat().st_size / 5
    for stat in ("median", "min", "mean"):
        from_raw = report.render(*report.load([str(path)], stat), stat, None)
        from_summary = report.render(*report.load([str(summary)], stat), stat, None)
        assert from_summary == from_raw
