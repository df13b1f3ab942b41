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
    (dict(power=0.5), ValueError, "power must be >= 1"),
    (dict(weight=torch.tensor(1.0)), TypeError, "weight must be a finite Python number"),
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


@pytest.mark.parametrize("inv_scale,exc,match", [
    (torch.ones(3), TypeError, "holding one number"),
    (0.5, TypeError, "inv_scale must be a floating-point tensor"),
    (torch.ones(1, dtype=torch.int64), TypeError, "holding one number"),
    (torch.ones((), device="meta"), ValueError, "inv_scale is on meta"),
])
def test_bad_inv_scale(backend, inv_scale, exc, match):
    with pytest.raises(exc, match=match):
        fastgp.penalty_from_grads(torch.randn(3, 4), inv_scale=inv_scale, backend=backend)


def test_inv_scale_of_any_single_element_shape(backend):
    g = torch.randn(3, 4, dtype=torch.float64)
    expected = fastgp.penalty_from_grads(g * 0.5, reduction="none", backend=backend)
    for s in (torch.tensor(0.5, dtype=torch.float64), torch.full((1, 1), 0.5), torch.tensor([0.5])):
        got = fastgp.penalty_from_grads(g, inv_scale=s, reduction="none", backend=backend)
        assert got.shape == (3,)
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kw", [dict(weight=float("nan")), dict(center=float("inf")), dict(power=float("inf")),
                                dict(power=True)])
def test_non_finite_options_are_refused(kw):
    with pytest.raises(TypeError, match="finite Python number"):
        fastgp.penalty_from_grads(torch.randn(3, 4), **kw)


def test_input_gradients_checks_its_inputs():
    from fastgp.functional import input_gradients

    critic = torch.nn.Linear(4, 1)
    x = torch.randn(3, 4, requires_grad=True)
    (g,), inv_scale = input_gradients(critic, x)  # a bare tensor is one input
    assert g.shape == (3, 4) and inv_scale is None
    with pytest.raises(ValueError, match="does not require grad"):
        input_gradients(critic, (torch.randn(3, 4),))


def test_rows_of_no_elements(backend):
    g = torch.randn(4, 0, 3, requires_grad=True)
    penalty, norms = fastgp.penalty_from_grads(g, return_norms=True, backend=backend)
    assert torch.equal(norms, torch.zeros(4)) and penalty.item() == 1.0
    (d,) = torch.autograd.grad(penalty, g)
    assert d.shape == g.shape
    x = fastgp.interpolate(torch.randn(4, 0), torch.randn(4, 0), backend=backend)
    assert x.shape == (4, 0)


@pytest.mark.parametrize("archs,cap,ok", [
    ("8.0;8.6;8.9;9.0+PTX", (9, 0), True), ("8.0;8.6;8.9;9.0+PTX", (12, 0), True),
    ("8.0;8.6;8.9;9.0+PTX", (7, 5), False), ("9.0", (8, 0), False), ("9.0", (10, 0), False),
    ("8.0", (8, 9), True), ("9.0a", (9, 0), True), (None, (7, 0), True), ("8.0 9.0", (9, 0), True),
])
def test_cuda_arch_compatibility_rule(archs, cap, ok):
    from fastgp.backends import arch_supported

    assert arch_supported(archs, cap) is ok
