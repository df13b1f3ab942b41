"""Diagnostics: BatchNorm warning, no-graph and no-dependence errors, critic
output shape; each fires when it should and stays silent on a clean critic."""

import warnings

import pytest
import torch

import fastgp



def data(batch=4):
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, 6, generator=g), torch.randn(batch, 6, generator=g)


def mlp(*middle):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), *middle, torch.nn.Tanh(), torch.nn.Linear(8, 1))


PENALTIES = {
    "gradient_penalty": lambda D, r, f, **kw: fastgp.gradient_penalty(D, r, f, **kw),
    "r1_penalty": lambda D, r, f, **kw: fastgp.r1_penalty(D, r, **kw),
    "r2_penalty": lambda D, r, f, **kw: fastgp.r2_penalty(D, f, **kw),
    "dragan_penalty": lambda D, r, f, **kw: fastgp.dragan_penalty(D, r, **kw),
}


# ------------------------------------------------------------------ BatchNorm
@pytest.mark.parametrize("name", list(PENALTIES))
def test_batchnorm_warns_once_at_the_callers_line(name):
    critic = mlp(torch.nn.BatchNorm1d(8))
    real, fake = data()
    call = getattr(fastgp, name)
    args = (critic, real, fake) if name == "gradient_penalty" else (critic, fake if name == "r2_penalty" else real)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call(*args)
        call(*args)
    bn = [w for w in caught if "BatchNorm" in str(w.message)]
    assert len(bn) == 1
    assert "LayerNorm" in str(bn[0].message) and "1" in str(bn[0].message)  # names the layer and the fix
    assert bn[0].filename == __file__  # points at the user's call, not inside fastgp


@pytest.mark.parametrize("norm", [torch.nn.LayerNorm(8), torch.nn.GroupNorm(2, 8)], ids=["layer", "group"])
@pytest.mark.parametrize("name", list(PENALTIES))
def test_clean_critics_are_silent(name, norm):
    critic = mlp(norm)
    real, fake = data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pen = PENALTIES[name](critic, real, fake)
    pen.backward()
    assert all(p.grad is not None for p in list(critic.parameters())[:-1])


def test_batchnorm_in_eval_mode_is_silent():
    critic = mlp(torch.nn.BatchNorm1d(8)).eval()
    real, fake = data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastgp.gradient_penalty(critic, real, fake)


# ------------------------------------------------------- gradient without graph
class _Detaching(torch.autograd.Function):
    """x @ w whose backward returns a detached input gradient: what a compiled
    critic can silently do (PyTorch issue 181581)."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return x @ w

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        return (grad @ w.t()).detach(), x.t() @ grad


class GraphlessCritic(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(6, 1))

    def forward(self, x):
        return _Detaching.apply(x, self.w)


@pytest.mark.parametrize("name", list(PENALTIES))
def test_gradient_without_graph_raises(backend, name):
    critic = GraphlessCritic()
    real, fake = data()
    with pytest.raises(RuntimeError, match="no autograd graph.*181581.*uncompiled critic"):
        PENALTIES[name](critic, real, fake, backend=backend)
    # a plain function closing over the parameter: found by walking the output's graph
    with pytest.raises(RuntimeError, match="no autograd graph"):
        PENALTIES[name](lambda x: _Detaching.apply(x, critic.w), real, fake, backend=backend)


def test_constant_gradient_without_parameters_is_fine(backend):
    """A parameter-free linear critic has a constant input gradient: no graph, no error."""
    real, fake = data()
    pen = fastgp.gradient_penalty(lambda x: 0.5 * x.sum(1), real, fake, backend=backend)
    torch.testing.assert_close(pen, torch.tensor((0.5 * 6 ** 0.5 - 1) ** 2))
    frozen = mlp().requires_grad_(False)
    assert torch.isfinite(fastgp.r1_penalty(frozen, real, backend=backend))


# -------------------------------------------------------------- no dependence
@pytest.mark.parametrize("name", list(PENALTIES))
def test_output_not_depending_on_input_raises(name):
    real, fake = data()
    w = torch.nn.Parameter(torch.ones(4))
    with pytest.raises(RuntimeError, match="does not depend on its input"):
        PENALTIES[name](lambda x: w * 2, real, fake)
    with pytest.raises(RuntimeError, match="does not depend on its input"):
        PENALTIES[name](lambda x: torch.zeros(x.shape[0]), real, fake)


def test_no_grad_mode_raises():
    critic = mlp()
    real, fake = data()
    with torch.no_grad(), pytest.raises(RuntimeError, match="torch.no_grad"):
        fastgp.gradient_penalty(critic, real, fake)


def test_unused_input_of_a_multi_input_critic_raises():
    critic = mlp()
    real, fake = data()
    with pytest.raises(RuntimeError, match="does not depend on input 1.*critic_args"):
        fastgp.gradient_penalty(lambda x, y: critic(x), (real, real), (fake, fake))


# --------------------------------------------------------------- output shape
@pytest.mark.parametrize("shape", [(4, 2), (4, 1, 1), (), (2,), (1, 4)])
@pytest.mark.parametrize("name", list(PENALTIES))
def test_bad_output_shape_raises(name, shape):
    critic = mlp()
    real, fake = data()

    def bad(x):
        return critic(x).sum() * torch.ones(shape) if shape != (4, 2) else critic(x).expand(4, 2)

    with pytest.raises(ValueError, match=r"shape \(4,\) or \(4, 1\).*got"):
        PENALTIES[name](bad, real, fake)


def test_non_tensor_output_raises():
    real, fake = data()
    with pytest.raises(TypeError, match="must return a tensor"):
        fastgp.gradient_penalty(lambda x: [x.sum(1)], real, fake)


@pytest.mark.parametrize("shape", [(4,), (4, 1)])
def test_good_output_shapes(shape):
    critic = mlp()
    real, fake = data()
    pen = fastgp.gradient_penalty(lambda x: critic(x).reshape(shape), real, fake, alpha=torch.rand(4))
    assert pen.shape == () and torch.isfinite(pen)
