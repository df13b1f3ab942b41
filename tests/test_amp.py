"""AMP on CPU: a GradScaler follows PyTorch's gradient-penalty recipe (grads of
the scaled output, unscaled before the norm) with the unscale inside the fused
op and no host sync; bf16 autocast works without one; norms accumulate in fp32."""

import contextlib

import pytest
import torch

import fastgp



def make_critic(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def data(batch=6, seed=1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    real = torch.randn(batch, 3, 2, 2, generator=g).to(dtype)
    fake = torch.randn(batch, 3, 2, 2, generator=g).to(dtype)
    return real, fake, torch.rand(batch, generator=g)


def params_grad(value, critic):
    ps = list(critic.parameters())
    gs = torch.autograd.grad(value, ps, allow_unused=True, retain_graph=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(ps, gs)]


def recipe_gp(critic, real, fake, alpha, scaler, autocast):
    """PyTorch's AMP gradient-penalty recipe, by hand: autograd.grad of
    scaler.scale(output), times 1/scaler.get_scale(), then the norm."""
    a = alpha.view(-1, 1, 1, 1).to(real.dtype)
    x_hat = (a * real + (1 - a) * fake).requires_grad_(True)
    with autocast():
        out = critic(x_hat)
    scaled = scaler.scale(out) if scaler is not None else out
    (g,) = torch.autograd.grad(scaled, x_hat, torch.ones_like(scaled), create_graph=True)
    if scaler is not None:
        g = g * (1.0 / scaler.get_scale())
    with autocast():
        n = g.float().flatten(1).norm(dim=1)
        return ((n - 1) ** 2).mean()


def bf16_autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def fp16_autocast():
    return torch.autocast("cpu", dtype=torch.float16)


@pytest.mark.parametrize("init_scale", [2.0 ** 10, 3.0])
@pytest.mark.parametrize("autocast", [contextlib.nullcontext, bf16_autocast], ids=["fp32", "bf16"])
def test_grad_scaler_follows_the_recipe(backend, init_scale, autocast):
    critic = make_critic()
    real, fake, alpha = data()
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    with autocast():
        got, norms = fastgp.gradient_penalty(critic, real, fake, alpha=alpha, scaler=scaler, return_norms=True,
                                             backend=backend)
    want = recipe_gp(critic, real, fake, alpha, scaler, autocast)
    tol = dict(rtol=1e-5, atol=1e-6) if autocast is contextlib.nullcontext else dict(rtol=2e-3, atol=1e-4)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, **tol)
    for a, b in zip(params_grad(got, critic), params_grad(want, critic)):
        torch.testing.assert_close(a, b, **tol)
    # the norms are the unscaled ones: the same as without any scaler
    with autocast():
        _, plain = fastgp.gradient_penalty(critic, real, fake, alpha=alpha, return_norms=True, backend=backend)
    torch.testing.assert_close(norms, plain, **tol)


def test_grad_scaler_in_a_training_step(backend):
    """scaler.scale(loss + gp).backward(); scaler.step: the same update as the recipe."""
    results = []
    for use_fastgp in (True, False):
        critic = make_critic()
        opt = torch.optim.SGD(critic.parameters(), lr=0.1)
        scaler = torch.amp.GradScaler("cpu", init_scale=256.0)
        real, fake, alpha = data()
        for _ in range(2):
            opt.zero_grad()
            loss = critic(fake).mean() - critic(real).mean()
            if use_fastgp:
                gp = fastgp.gradient_penalty(critic, real, fake, alpha=alpha, weight=10.0, scaler=scaler,
                                             backend=backend)
            else:
                gp = 10.0 * recipe_gp(critic, real, fake, alpha, scaler, contextlib.nullcontext)
            scaler.scale(loss + gp).backward()
            scaler.step(opt)
            scaler.update()
        results.append([p.detach().clone() for p in critic.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_inv_scale_tensor_unscales(backend):
    """A fake scale: penalty_from_grads(scale * g, inv_scale=1/scale) == penalty of g, and its
    gradient w.r.t. the scaled grads is the unscaled one times 1/scale."""
    g = torch.randn(5, 3, 4, dtype=torch.float64)
    scale = torch.tensor(1024.0, dtype=torch.float64)
    gs = (g * scale).requires_grad_(True)
    g0 = g.clone().requires_grad_(True)
    for kw in (dict(), dict(center=0.0), dict(one_sided=True), dict(center=0.0, power=6.0)):
        got, norms = fastgp.penalty_from_grads(gs, inv_scale=1 / scale, return_norms=True, backend=backend, **kw)
        want = ((g0.flatten(1).norm(dim=1) - kw.get("center", 1.0)) ** 2).mean() if "power" not in kw else \
            (g0.flatten(1).norm(dim=1) ** 6).mean()
        if kw.get("one_sided"):
            want = (torch.clamp(g0.flatten(1).norm(dim=1) - 1, min=0) ** 2).mean()
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(norms, g.flatten(1).norm(dim=1))
        (d_scaled,) = torch.autograd.grad(got, gs)
        (d_plain,) = torch.autograd.grad(want, g0)
        torch.testing.assert_close(d_scaled, d_plain / scale)


def test_disabled_scaler_is_no_scaler(backend):
    critic = make_critic()
    real, fake, alpha = data()
    off = torch.amp.GradScaler("cpu", enabled=False)
    a = fastgp.gradient_penalty(critic, real, fake, alpha=alpha, scaler=off, backend=backend)
    b = fastgp.gradient_penalty(critic, real, fake, alpha=alpha, backend=backend)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_scaler_must_be_a_grad_scaler():
    critic = make_critic()
    real, fake, _ = data()

    class NotAScaler:
        def is_enabled(self):
            return True

    with pytest.raises(TypeError, match="GradScaler"):
        fastgp.gradient_penalty(critic, real, fake, scaler=NotAScaler())


def _boom(*args, **kwargs):
    raise AssertionError("fastgp read a tensor value on the host (a device sync)")


def test_no_host_sync(backend):
    critic = make_critic()
    real, fake, alpha = data()
    scaler = torch.amp.GradScaler("cpu", init_scale=512.0)
    scaler.scale(torch.ones(()))  # create the scale tensor before the guard
    outs = []
    # every Python-level read of a tensor value on the host raises inside this block
    with pytest.MonkeyPatch.context() as mp:
        for name in ("item", "tolist", "__bool__", "__float__", "__int__", "numpy"):
            mp.setattr(torch.Tensor, name, _boom)
        mp.setattr(torch.amp.GradScaler, "get_scale", _boom)
        for fn, kw in ((fastgp.gradient_penalty, dict(fake=fake, alpha=alpha)), (fastgp.r1_penalty, {}),
                       (fastgp.dragan_penalty, {})):
            for reduction in ("mean", "none"):
                out = fn(critic, real, scaler=scaler, reduction=reduction, return_norms=True, backend=backend, **kw)
                out[0].sum().backward()
                outs.append(out)
    assert all(torch.isfinite(p).all() and torch.isfinite(n).all() for p, n in outs)


def test_bf16_autocast_without_scaler(backend):
    critic = make_critic()
    real, fake, alpha = data()
    with bf16_autocast():
        got = fastgp.gradient_penalty(critic, real, fake, alpha=alpha, weight=10.0, backend=backend)
        r1 = fastgp.r1_penalty(critic, real, backend=backend)
    want = 10.0 * recipe_gp(critic, real, fake, alpha, None, bf16_autocast)
    assert got.dtype == r1.dtype == torch.float32 and torch.isfinite(r1)
    torch.testing.assert_close(got, want, rtol=2e-3, atol=1e-4)
    for a, b in zip(params_grad(got, critic), params_grad(want, critic)):
        torch.testing.assert_close(a, b, rtol=2e-3, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_accumulate_in_fp32(backend, dtype):
    """Half-precision critic and data: grads are half, norms and penalty float32,
    equal to the float64 norm of those very grads."""
    critic = make_critic().to(dtype)
    real, fake, alpha = data(dtype=dtype)
    pen, norms = fastgp.gradient_penalty(critic, real, fake, alpha=alpha, return_norms=True, backend=backend)
    assert pen.dtype == norms.dtype == torch.float32
    a = alpha.to(dtype).view(-1, 1, 1, 1)
    x_hat = (a * real + (1 - a) * fake).requires_grad_(True)
    out = critic(x_hat)
    (g,) = torch.autograd.grad(out, x_hat, torch.ones_like(out))
    torch.testing.assert_close(norms.double(), g.double().flatten(1).norm(dim=1), rtol=2e-2, atol=1e-3)


def test_fp16_autocast_with_a_default_grad_scaler(backend):
    """GradScaler's default scale 2^16 is inf in float16: the cotangent of an fp16
    critic output must stay finite (fastgp caps it at 2^15), so the penalty is
    finite at once. Scaling by a power of two is exact in float16, so the penalty
    equals the recipe's at any scale float16 holds; the critic's parameter
    gradients (a float16 double backward, whose cotangents the scale shifts into
    or out of float16's subnormals) equal the recipe's at the same scale."""
    critic = make_critic()
    real, fake, alpha = data()
    default = torch.amp.GradScaler("cpu")
    assert default.get_scale() == 2.0 ** 16
    for fn, kw in ((fastgp.gradient_penalty, dict(fake=fake, alpha=alpha)), (fastgp.r1_penalty, {})):
        with fp16_autocast():
            got = fn(critic, real, scaler=default, backend=backend, **kw)
        assert torch.isfinite(got), fn.__name__
        grads = params_grad(got, critic)
        assert all(torch.isfinite(g).all() for g in grads), fn.__name__
    with fp16_autocast():
        got = fastgp.gradient_penalty(critic, real, fake, alpha=alpha, scaler=default, backend=backend)
    for scale in (2.0 ** 10, 2.0 ** 15):  # the values at any scale; the float16 backward at fastgp's cap
        want = recipe_gp(critic, real, fake, alpha, torch.amp.GradScaler("cpu", init_scale=scale), fp16_autocast)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for a, b in zip(params_grad(got, critic), params_grad(want, critic)):
        torch.testing.assert_close(a, b, rtol=2e-3, atol=1e-4)
