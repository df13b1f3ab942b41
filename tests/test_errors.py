"""Bad input gets a clear error naming the argument."""

import pytest
import torch

import fastgp


def lin():
    return torch.nn.Linear(4, 1)


@pytest.mark.parametrize("real,fake,exc,match", [
    (torch.randn(3, 4), torch.randn(3, 5), ValueError, "real has shape"),
    (torch.randn(3, 4), torch.randn(3, 4, dtype=torch.float64), TypeError, "dtype"),
    (torch.randint(0, 3, (3, 4)), torch.randint(0, 3, (3, 4)), TypeError, "real must be float"),
    (torch.randn(0, 4), torch.randn(0, 4), ValueError, "empty batch"),
    (torch.tensor(1.0), torch.tensor(2.0), ValueError, "batch dimension"),
    ("x", torch.randn(3, 4), TypeError, "real must be a tensor"),
    ((torch.randn(3, 4),), (torch.randn(3, 4), torch.randn(3, 4)), ValueError, "real has 1 tensors"),
    ((torch.randn(3, 4), torch.randn(2, 4)), (torch.randn(3, 4), torch.randn(2, 4)), ValueError, "batch size"),
])
def test_bad_inputs(backend, real, fake, exc, match):
    with pytest.raises(exc, match=match):
        fastgp.gradient_penalty(lin(), real, fake, backend=backend)


def test_device_mismatch_is_named():
    real = torch.randn(3, 4)
    fake = torch.randn(3, 4, device="meta")
    with pytest.raises(ValueError, match="share one device"):
        fastgp.interpolate(real, fake)


@pytest.mark.parametrize("alpha,match", [
    (torch.rand(4), r"alpha must have shape \(3,\)"),
    (torch.rand(3, 4), r"alpha must have shape \(3,\)"),
    (torch.rand(()), r"alpha must have shape"),
    (0.5, "alpha must be a tensor"),
    (torch.ones(3, dtype=torch.int64), "alpha must be floating"),
])
def test_bad_alpha(backend, alpha, match):
    with pytest.raises((ValueError, TypeError), match=match):
        fastgp.gradient_penalty(lin(), torch.randn(3, 4), torch.randn(3, 4), alpha=alpha, backend=backend)


@pytest.mark.parametrize("critic,match", [
    (lambda x: x.sum(), r"shape \(3,\) or \(3, 1\)"),
    (lambda x: x, r"shape \(3,\) or \(3, 1\)"),
    (lambda x: (x.sum(1),), "must return a tensor"),
    (lambda x: torch.ones(3), "does not depend on its input"),
])
def test_bad_critic_output(backend, critic, match):
    with pytest.raises((ValueError, TypeError, RuntimeError), match=match):
        fastgp.gradient_penalty(critic, torch.randn(3, 4), torch.randn(3, 4), backend=backend)


def test_critic_ignoring_one_of_two_inputs(backend):
    with pytest.raises(RuntimeError, match="does not depend on input 1"):
        fastgp.gradient_penalty(lambda a, b: a.sum(1), (torch.randn(3, 4), torch.randn(3, 2)),
                                (torch.randn(3, 4), torch.randn(3, 2)), backend=backend)


@pytest.mark.parametrize("kw,exc,match", [
    (dict(reduction="avg"), ValueError, "reduction must be one of"),
    (dict(power=0.5), ValueError, "power must be a number >= 1"),
    (dict(weight=torch.tensor(1.0)), TypeError, "weight must be a Python number"),
    (dict(backend="cuda-magic"), ValueError, "backend must be one of"),
])
def test_bad_options(kw, exc, match):
    with pytest.raises(exc, match=match):
        fastgp.gradient_penalty(lin(), torch.randn(3, 4), torch.randn(3, 4), **kw)


def test_bad_grads():
    with pytest.raises(ValueError, match="grads\\[1\\] has batch size 2"):
        fastgp.penalty_from_grads((torch.randn(3, 4), torch.randn(2, 4)))
    with pytest.raises(ValueError, match="share dtype and device"):
        fastgp.penalty_from_grads((torch.randn(3, 4), torch.randn(3, 4, dtype=torch.float64)))
    with pytest.raises(TypeError, match="grads must be float"):
        fastgp.penalty_from_grads(torch.ones(3, 4, dtype=torch.int32))


def test_unavailable_backend_says_why(monkeypatch):
    from fastgp import backends

    monkeypatch.setattr(backends, "_resolved", {})
    monkeypatch.setattr(backends.state, "loaded", False)
    monkeypatch.setattr(backends.state, "reason", "simulated: not built")
    with pytest.raises(RuntimeError, match="'cpp' is unavailable on cpu: .*simulated: not built"):
        fastgp.penalty_from_grads(torch.randn(3, 4), backend="cpp")


def test_op_level_checks_when_called_directly():
    if "cpp" not in fastgp.available_backends("cpu"):
        pytest.skip("C++ extension not loaded")
    with pytest.raises(RuntimeError, match="no tensor arguments"):  # the dispatcher refuses first
        torch.ops.fastgp.penalty_forward([], None, 1.0, 1.0, 2.0, False, 1)
    with pytest.raises(RuntimeError, match="reduction code"):
        torch.ops.fastgp.penalty_forward([torch.randn(2, 3)], None, 1.0, 1.0, 2.0, False, 7)
    with pytest.raises(RuntimeError, match="alpha must have shape"):
        torch.ops.fastgp.interpolate(torch.randn(2, 3), torch.randn(2, 3), torch.rand(3))
    with pytest.raises(RuntimeError, match="inv_scale must hold one number"):
        torch.ops.fastgp.penalty_forward([torch.randn(2, 3)], torch.ones(2), 1.0, 1.0, 2.0, False, 1)
