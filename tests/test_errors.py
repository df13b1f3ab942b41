"""Bad input gets a clear error naming the argument."""

import re

import numpy as np
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
    (dict(weight=torch.tensor(1.0)), TypeError, r"weight must be a finite real number .*got tensor\(1\.\) \(Tensor\)"),
    (dict(backend="cuda-magic"), ValueError, "backend must be one of"),
])
def test_bad_options(kw, exc, match):
    with pytest.raises(exc, match=match):
        fastgp.gradient_penalty(lin(), torch.randn(3, 4), torch.randn(3, 4), **kw)


def test_bad_grads():
    with pytest.raises(ValueError, match="grads\\[1\\] has batch size 2"):
        fastgp.penalty_from_grads((torch.randn(3, 4), torch.randn(2, 4)))
    with pytest.raises(TypeError, match="grads\\[1\\] has dtype torch.float64 but grads\\[0\\] has torch.float32; "
                                        "they must share one dtype"):
        fastgp.penalty_from_grads((torch.randn(3, 4), torch.randn(3, 4, dtype=torch.float64)))
    with pytest.raises(TypeError, match="grads must be float"):
        fastgp.penalty_from_grads(torch.ones(3, 4, dtype=torch.int32))


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
    with pytest.raises(TypeError, match=f"{next(iter(kw))} must be a finite real number"):
        fastgp.penalty_from_grads(torch.randn(3, 4), **kw)


def test_input_gradients_checks_its_inputs():
    from fastgp.functional import input_gradients

    critic = torch.nn.Linear(4, 1)
    x = torch.randn(3, 4, requires_grad=True)
    (g,), inv_scale = input_gradients(critic, x)  # a bare tensor is one input
    assert g.shape == (3, 4) and inv_scale is None
    with pytest.raises(ValueError, match="does not require grad"):
        input_gradients(critic, (torch.randn(3, 4),))


# ------------------------------------------- the kinds of every option
def _penalties(critic, real, fake):
    """Every public function that takes options, as fn(**options)."""
    grads = torch.randn(3, 4)
    return {
        "gradient_penalty": lambda **kw: fastgp.gradient_penalty(critic, real, fake, **kw),
        "penalty_from_grads": lambda **kw: fastgp.penalty_from_grads(grads, **kw),
        "r1_penalty": lambda **kw: fastgp.r1_penalty(critic, real, **kw),
        "r2_penalty": lambda **kw: fastgp.r2_penalty(critic, fake, **kw),
        "dragan_penalty": lambda **kw: fastgp.dragan_penalty(critic, real, **kw),
    }


BOOLS = {"gradient_penalty": ("one_sided", "return_norms"), "penalty_from_grads": ("one_sided", "return_norms"),
         "r1_penalty": ("return_norms",), "r2_penalty": ("return_norms",), "dragan_penalty": ("return_norms",)}


@pytest.mark.parametrize("value", ["False", "True", 0, 1, None, torch.tensor(True)], ids=repr)
@pytest.mark.parametrize("name", list(BOOLS))
def test_booleans_are_checked_as_bools(name, value):
    """A string is not taken by its truthiness ("False" is true), nor a number or a tensor."""
    fn = _penalties(lin(), torch.randn(3, 4), torch.randn(3, 4))[name]
    for arg in BOOLS[name]:
        with pytest.raises(TypeError, match=f"{arg} must be a bool \\(True or False\\), got {re.escape(repr(value))}"):
            fn(**{arg: value})


def test_numpy_bools_are_bools():
    g = torch.randn(3, 4, dtype=torch.float64)
    got = fastgp.penalty_from_grads(g, one_sided=np.bool_(True), return_norms=np.bool_(True))
    want = fastgp.penalty_from_grads(g, one_sided=True, return_norms=True)
    assert isinstance(got, tuple) and all(torch.equal(a, b) for a, b in zip(got, want))


@pytest.mark.parametrize("scaler", [65536.0, "cpu", torch.tensor(65536.0), object()], ids=repr)
@pytest.mark.parametrize("name", ["gradient_penalty", "r1_penalty", "r2_penalty", "dragan_penalty"])
def test_scaler_is_checked_before_use(name, scaler):
    fn = _penalties(lin(), torch.randn(3, 4), torch.randn(3, 4))[name]
    message = r"scaler must be a torch.amp.GradScaler or None, got .*\((float|str|Tensor|object)\)"
    with pytest.raises(TypeError, match=message):
        fn(scaler=scaler)
    with pytest.raises(TypeError, match="scaler must be a torch.amp.GradScaler"):
        fastgp.input_gradients(lin(), torch.randn(3, 4, requires_grad=True), scaler=scaler)


def test_numpy_scalars_are_numbers():
    """NumPy scalars wherever a number or an int is taken: the same results as Python numbers."""
    critic = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
    real, fake = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    alpha = torch.rand(6, dtype=torch.float64)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    pairs = [
        (lambda w, c, p, f, m: fastgp.gradient_penalty(critic, real, fake, weight=w, center=c, power=p, alpha=alpha,
                                                       batch_fraction=f, max_samples=m)),
        (lambda w, c, p, f, m: fastgp.penalty_from_grads(real, weight=w, center=c, power=p)),
        (lambda w, c, p, f, m: fastgp.r1_penalty(critic, real, gamma=w, batch_fraction=f, max_samples=m)),
        (lambda w, c, p, f, m: fastgp.dragan_penalty(critic, real, weight=w, center=c, noise_scale=c / 2,
                                                     generator=gen(), batch_fraction=f, max_samples=m)),
    ]
    python = (0.5, 1.0, 2, 0.75, 4)
    numpy = (np.float32(0.5), np.float64(1.0), np.int64(2), np.float64(0.75), np.int64(4))
    for fn in pairs:
        torch.testing.assert_close(fn(*numpy), fn(*python), rtol=0, atol=0)
    assert fastgp.LazyRegularizer(every=np.int64(4)).due(np.int32(8))
    assert fastgp.lazy_adam_hparams(np.float32(1e-3), (np.float64(0.0), np.float32(0.5)), np.int64(4)) == \
        fastgp.lazy_adam_hparams(float(np.float32(1e-3)), (0.0, float(np.float32(0.5))), 4)


@pytest.mark.parametrize("kw,exc,match", [
    (dict(weight=np.float32("nan")), TypeError, "weight must be a finite real number, got nan"),
    (dict(weight="1"), TypeError,
     r"weight must be a finite real number \(int, float or a NumPy scalar\), got '1' \(str\)"),
    (dict(power=np.float64(0.5)), ValueError, "power must be >= 1 .*got 0.5"),
    (dict(center=np.bool_(True)), TypeError, r"center must be a finite real number .*\(bool_?\)"),
    (dict(weight=10 ** 400), TypeError, "weight must be a finite real number"),
])
def test_number_messages_say_what_was_given(kw, exc, match):
    with pytest.raises(exc, match=match):
        fastgp.penalty_from_grads(torch.randn(3, 4), **kw)


@pytest.mark.parametrize("value,exc", [(2.0, TypeError), (True, TypeError), ("2", TypeError),
                                       (np.float64(2.0), TypeError), (0, ValueError), (np.int64(-1), ValueError)],
                         ids=repr)
def test_integers_are_checked_as_integers(value, exc):
    shown = str(value) if exc is ValueError else repr(value)  # the int it was taken as, or what was given
    with pytest.raises(exc, match=f"max_samples must be an int >= 1, got {re.escape(shown)}"):
        fastgp.gradient_penalty(lin(), torch.randn(3, 4), torch.randn(3, 4), max_samples=value)
