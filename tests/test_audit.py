"""fastgp.audit: each bug class flagged with exactly its code, correct penalties with
their variant and weight, the command line, and the audit's own argument errors."""

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fastgp
from fastgp.audit import CODES, AuditReport
from fastgp.audit.cli import main

import audit_examples as ex

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = Path(__file__).resolve().parent / "audit_examples.py"

BUGGY = [
    (ex.whole_batch_norm, "whole-batch-norm"),
    (ex.norm_dim1, "partial-norm"),
    (ex.squares_mean, "partial-norm"),
    (ex.one_alpha, "shared-alpha"),
    (ex.fixed_alpha, "shared-alpha"),
    (ex.gaussian_alpha, "not-interpolated"),
    (ex.alpha_per_element, "not-interpolated"),
    (ex.sqrt_sum_squares, "nan-at-zero"),
    (ex.no_create_graph, "no-graph"),
    (ex.detached_grad, "no-graph"),
    (ex.fake_not_detached, "gradient-leak"),
    (ex.grad_of_mean, "unrecognized"),
]

# (fn, kind, power, reduction, weight)
CORRECT = [
    (ex.wgan_gp, "two-sided", 2, "mean", 10.0),
    (ex.wgan_gp_expand, "two-sided", 2, "mean", 1.0),
    (ex.wgan_gp_eps_sqrt, "two-sided", 2, "mean", 10.0),
    (ex.wgan_lp, "one-sided", 2, "mean", 10.0),
    (ex.zero_centered, "zero-centered", 2, "mean", 5.0),
    (ex.wgan_div, "zero-centered", 6, "mean", 2.0),
    (ex.wgan_gp_sum, "two-sided", 2, "sum", 10.0),
    (ex.fastgp_penalty, "two-sided", 2, "mean", 10.0),
]

# The weight's bracket is a few float32 roundings wide (about 1e-5 relative);
# the reported weight is the shortest decimal inside it.
WEIGHT_REL = 1e-4


@pytest.mark.parametrize("fn, code", BUGGY, ids=[f.__name__ for f, _ in BUGGY])
def test_each_bug_is_flagged_with_exactly_its_code(fn, code):
    report = fastgp.audit(fn)
    assert report.error is None, report.error
    assert report.codes == [code], str(report)
    assert not report.ok
    f = report.findings[0]
    assert any(ch.isdigit() for ch in f.message), "the message says what was observed, with numbers"
    assert f.fix
    assert f"[{code}]" in str(report) and f.fix in str(report)


@pytest.mark.parametrize("fn, kind, power, reduction, weight", CORRECT, ids=[c[0].__name__ for c in CORRECT])
def test_correct_penalties_have_no_finding_and_their_variant_and_weight(fn, kind, power, reduction, weight):
    report = fastgp.audit(fn)
    assert report.ok, str(report)
    assert report.findings == []
    assert (report.variant.kind, report.variant.power, report.variant.reduction) == (kind, power, reduction)
    assert report.weight == pytest.approx(weight, rel=WEIGHT_REL)
    assert "OK" in str(report)


@pytest.mark.parametrize("options", [
    dict(weight=3.0, one_sided=True, reduction="sum"),
    dict(weight=0.1, center=0.0, power=6.0),
    dict(weight=10.0, power=1.0),
    dict(weight=2.5, center=0.0, power=2.0, reduction="sum"),
    dict(weight=1e6, power=1.5, one_sided=True),
    dict(weight=1e-6, center=0.0, power=3.0, reduction="sum"),
])
def test_fastgp_variants_are_read_back(options):
    """The audit of fastgp.gradient_penalty(**options) gives back those options."""
    report = fastgp.audit(lambda critic, real, fake: fastgp.gradient_penalty(critic, real, fake, **options))
    assert report.ok, str(report)
    kwargs = report.variant.gradient_penalty_kwargs(report.weight)
    expected = {k: v for k, v in options.items() if (k, v) not in
                (("center", 1.0), ("power", 2.0), ("one_sided", False), ("reduction", "mean"))}
    assert kwargs.keys() == expected.keys()
    for k, v in expected.items():
        assert kwargs[k] == (pytest.approx(v, rel=WEIGHT_REL) if isinstance(v, float) else v)


def test_equivalent_call_is_printed():
    report = fastgp.audit(ex.wgan_lp)
    assert report.equivalent_call() == "fastgp.gradient_penalty(critic, real, fake, weight=10.0, one_sided=True)"
    assert report.equivalent_call() in str(report)


def test_norm_dim1_is_correct_on_tabular_batches():
    """norm(2, dim=1) is the per-sample norm of a 2-D gradient: no finding there."""
    report = fastgp.audit(ex.norm_dim1, shape=(8, 5))
    assert report.ok, str(report)
    assert report.shapes == [(8, 5)]
    report = fastgp.audit(ex.norm_dim1, shape=(6, 3, 8, 8))
    assert report.codes == ["partial-norm"]
    assert "dim 1 only" in report.findings[0].message


def test_image_only_function_skips_the_tabular_batch_with_a_note():
    report = fastgp.audit(ex.wgan_gp_image_only)
    assert report.ok, str(report)
    assert report.weight == pytest.approx(10.0, rel=WEIGHT_REL)
    assert any("(8, 6) was skipped" in n for n in report.notes)


def test_float64_probes():
    assert fastgp.audit(ex.wgan_gp_eps_sqrt, dtype=torch.float64).ok
    assert fastgp.audit(ex.norm_dim1, dtype=torch.float64).codes == ["partial-norm"]


def test_half_detached_gradient_differs_from_the_reference():
    """Same value as the two-sided penalty, half its parameter gradient."""
    def half_detached(critic, real, fake):
        x = torch.lerp(fake.detach(), real, ex._alpha(real)).requires_grad_(True)
        n = ex._input_grad(critic, x).flatten(1).norm(dim=1)
        return ((n.detach() - 1) * (n - 1)).mean()

    report = fastgp.audit(half_detached)
    assert report.codes == ["unrecognized"]
    assert "parameter gradient" in report.findings[0].message


def test_python_number_has_no_graph():
    report = fastgp.audit(lambda critic, real, fake: ex.wgan_gp(critic, real, fake).item())
    assert report.codes == ["no-graph"]


def test_every_code_is_documented_in_the_report_type():
    flagged = {code for _, code in BUGGY}
    assert flagged == set(CODES)


# ------------------------------------------------ the audit changes nothing else
def test_global_state_is_left_as_it_was():
    torch.manual_seed(123)
    np.random.seed(4)
    random.seed(5)
    torch_state, np_state, py_state = torch.get_rng_state(), np.random.get_state(), random.getstate()
    fastgp.audit(ex.wgan_gp)  # draws from torch's global RNG
    fastgp.audit(ex.wgan_gp_image_only)  # and this one from NumPy's
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state[1])
    assert random.getstate() == py_state
    assert torch.is_grad_enabled()


def test_runs_inside_no_grad():
    with torch.no_grad():
        report = fastgp.audit(ex.wgan_gp)
        assert not torch.is_grad_enabled()
    assert report.ok, str(report)


# ----------------------------------------------------- cannot be audited
def test_wrong_signature_says_how_to_wrap_it():
    report = fastgp.audit(ex.calc_gradient_penalty)
    assert not report.ok and report.error is not None
    assert "cannot be called as fn(critic, real, fake)" in report.error
    assert "def gp(critic, real, fake):" in report.error
    assert "calc_gradient_penalty(critic, real, fake, device=real.device)" in report.error


def test_tuple_return_says_how_to_wrap_it():
    report = fastgp.audit(ex.returns_tuple)
    assert "returns_tuple(critic, real, fake)[0]" in report.error


def test_a_failing_function_gets_a_report_not_an_exception():
    def broken(critic, real, fake):
        raise KeyError("boom")

    report = fastgp.audit(broken)
    assert not report.ok
    assert "KeyError" in report.error and "boom" in report.error
    assert "cannot audit" in str(report)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the report on a machine without CUDA")
def test_cuda_hard_wired_function_needs_cuda():
    report = fastgp.audit(ex.needs_cuda)
    assert not report.ok
    assert "needs CUDA" in report.error


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_probes():
    """On a GPU a function hard-wired to .cuda() can be audited with device='cuda'."""
    report = fastgp.audit(ex.needs_cuda, device="cuda")
    assert report.ok, str(report)
    assert report.weight == pytest.approx(10.0, rel=WEIGHT_REL)
    assert fastgp.audit(ex.norm_dim1, device="cuda").codes == ["partial-norm"]
    assert fastgp.audit(ex.fake_not_detached, device="cuda").codes == ["gradient-leak"]


# ------------------------------------------------------ argument errors
@pytest.mark.parametrize("kwargs, error, words", [
    (dict(fn=42), TypeError, "fn"),
    (dict(shape=(8,)), ValueError, "shape"),
    (dict(shape=(1, 3)), ValueError, "shape[0]"),
    (dict(shape=(8, 0)), ValueError, "shape"),
    (dict(shape="8,3"), TypeError, "shape"),
    (dict(shape=(8, 2.5)), TypeError, "shape"),
    (dict(dtype=torch.int64), TypeError, "dtype"),
    (dict(dtype="float32"), TypeError, "dtype"),
    (dict(device="not-a-device"), ValueError, "device"),
    (dict(device=3.0), TypeError, "device"),
])
def test_bad_arguments(kwargs, error, words):
    fn = kwargs.pop("fn", ex.wgan_gp)
    with pytest.raises(error, match=words.replace("[", r"\[").replace("]", r"\]")):
        fastgp.audit(fn, **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda():
    with pytest.raises(ValueError, match="device"):
        fastgp.audit(ex.wgan_gp, device="cuda")


# ------------------------------------------------------------ command line
@pytest.mark.parametrize("target, code, words", [
    (f"{EXAMPLES}:wgan_gp", 0, "OK"),
    (f"{EXAMPLES}:norm_dim1", 1, "[partial-norm]"),
    (f"{EXAMPLES}:calc_gradient_penalty", 2, "def gp(critic, real, fake):"),
    (f"{EXAMPLES}:returns_tuple", 2, "[0]"),
])
def test_cli_exit_codes(target, code, words, capsys):
    assert main([target]) == code
    assert words in capsys.readouterr().out


@pytest.mark.parametrize("argv, words", [
    (["no_colon"], "module:function"),
    ([f"{EXAMPLES}:missing"], "no attribute 'missing'"),
    (["surely_not_a_module_here:fn"], "no module named"),
    (["does/not/exist.py:fn"], "no such file"),
    ([f"{EXAMPLES}:np"], "not a function"),
    ([f"{EXAMPLES}:wgan_gp", "--shape", "1,3"], "shape[0]"),
])
def test_cli_user_errors_are_messages(argv, words, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_cli_shape_option(capsys):
    assert main([f"{EXAMPLES}:norm_dim1", "--shape", "8,5"]) == 0
    assert "(8, 5)" in capsys.readouterr().out


def _run_module(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m", "fastgp.audit", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the report on a machine without CUDA")
def test_python_m_needs_cuda_exit_2_without_traceback():
    """Also: python -m fastgp.audit imports fastgp (which imports fastgp.audit) without runpy's warning."""
    proc = _run_module("tests/audit_examples.py:needs_cuda")
    assert proc.returncode == 2, proc.stderr
    assert "needs CUDA" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "RuntimeWarning" not in proc.stderr


def test_python_m_module_function_form():
    proc = _run_module("tests.audit_examples:one_alpha")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "[shared-alpha]" in proc.stdout
    assert "RuntimeWarning" not in proc.stderr


def test_report_type_is_exported():
    assert fastgp.AuditReport is AuditReport
    assert "audit" in fastgp.__all__ and "AuditReport" in fastgp.__all__
