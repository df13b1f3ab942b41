"""The penalty family against independent float64 formulas written here (not
fastgp.reference): values and critic parameter gradients, every CPU backend."""

import copy
import math

import pytest
import torch

import fastgp

F64 = dict(rtol=1e-9, atol=1e-11)


def make_critic(in_features, seed=0, dtype=torch.float64, gain=1.0):
    torch.manual_seed(seed)
    critic = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(in_features, 16), torch.nn.Tanh(), torch.nn.Linear(16, 8),
        torch.nn.Softplus(), torch.nn.Linear(8, 1),
    ).to(dtype)
    with torch.no_grad():  # gain 5 puts the norms of data() on both sides of 1
        critic[1].weight.mul_(gain)
        critic[3].weight.mul_(gain)
    return critic


class TwoInputCritic(torch.nn.Module):
    """D(image, vector, labels, *, temperature): two differentiated inputs plus conditioning."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = make_critic(12 + 5 + 4, seed)
        self.embed = torch.nn.Embedding(3, 4).double()

    def forward(self, x, y, labels=None, *, temperature=None):
        e = self.embed(labels) if labels is not None else torch.zeros(x.shape[0], 4, dtype=x.dtype)
        out = self.body(torch.cat([x.flatten(1), y.flatten(1) ** 2, e], 1))
        return out if temperature is None else out * temperature[:, None]


def data(batch=7, shape=(3, 2, 2), seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    real = torch.randn(batch, *shape, generator=g, dtype=torch.float64).to(dtype)
    fake = torch.randn(batch, *shape, generator=g, dtype=torch.float64).to(dtype)
    alpha = torch.rand(batch, generator=g, dtype=torch.float64)
    return real, fake, alpha


def params_grad(value, critic):
    """d value / d parameters; zeros for a parameter the input gradient does not
    depend on (the last bias)."""
    ps = list(critic.parameters())
    gs = torch.autograd.grad(value, ps, allow_unused=True, retain_graph=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(ps, gs)]


def input_grads(critic, xs, args=(), kwargs=None):
    """grad_x critic for each x, with graph: the plain autograd recipe."""
    xs = [x.detach().clone().requires_grad_(True) for x in xs]
    out = critic(*xs, *args, **(kwargs or {}))
    return torch.autograd.grad(out.sum(), xs, create_graph=True)


def sq_norms(gs):
    """||concat of all grads of sample i||^2, float64."""
    return torch.cat([g.reshape(g.shape[0], -1) for g in gs], 1).square().sum(1)


def mix(real, fake, alpha):
    return alpha.view(-1, *([1] * (real.dim() - 1))) * real + (1 - alpha.view(-1, *([1] * (real.dim() - 1)))) * fake


def assert_same(got, want, critic, tol=F64):
    torch.testing.assert_close(got, want, **tol)
    for a, b in zip(params_grad(got.sum(), critic), params_grad(want.sum(), critic)):
        torch.testing.assert_close(a, b, **tol)


# ------------------------------------------------------------ WGAN-GP variants
VARIANTS = {
    # name: (kwargs, formula of the per-sample norm n and the squared norm s)
    "two_sided": (dict(center=1.0), lambda n, s: (n - 1) ** 2),
    "one_sided": (dict(center=1.0, one_sided=True), lambda n, s: torch.clamp(n - 1, min=0) ** 2),
    "zero_centered": (dict(center=0.0), lambda n, s: s),
    "power6_center0": (dict(center=0.0, power=6.0), lambda n, s: s ** 3),
    "center_half_power3": (dict(center=0.5, power=3.0), lambda n, s: (n - 0.5).abs() ** 3),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gradient_penalty_variants(backend, variant, reduction):
    kwargs, formula = VARIANTS[variant]
    critic = make_critic(12, gain=5.0)
    real, fake, alpha = data()
    got = fastgp.gradient_penalty(critic, real, fake, alpha=alpha, weight=2.5, reduction=reduction,
                                  backend=backend, **kwargs)
    (g,) = input_grads(critic, [mix(real, fake, alpha)])
    s = sq_norms([g])
    per = 2.5 * formula(s.sqrt(), s)
    want = {"mean": per.mean(), "sum": per.sum(), "none": per}[reduction]
    assert_same(got, want, critic)
    if variant == "one_sided":
        n = s.sqrt()
        assert (n < 1).any() and (n > 1).any(), "the data must put norms on both sides of the center"


def test_default_is_the_handwritten_wgan_gp(backend):
    """gradient_penalty(D, real, fake) with a seeded generator: alpha ~ U[0, 1) per sample."""
    critic = make_critic(12)
    real, fake, _ = data()
    got = fastgp.gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(5), backend=backend)
    alpha = torch.rand(real.shape[0], generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    (g,) = input_grads(critic, [mix(real, fake, alpha)])
    want = ((sq_norms([g]).sqrt() - 1) ** 2).mean()
    assert_same(got, want, critic)


def test_return_norms_are_detached_per_sample_norms(backend):
    critic = make_critic(12)
    real, fake, alpha = data()
    pen, norms = fastgp.gradient_penalty(critic, real, fake, alpha=alpha, return_norms=True, backend=backend)
    (g,) = input_grads(critic, [mix(real, fake, alpha)])
    torch.testing.assert_close(norms, sq_norms([g]).sqrt().detach(), **F64)
    assert not norms.requires_grad and norms.shape == (real.shape[0],)


# ----------------------------------------------------------------- R1 and R2
@pytest.mark.parametrize("which", ["r1", "r2"])
@pytest.mark.parametrize("gamma", [10.0, 0.2])
def test_r1_r2(backend, which, gamma):
    critic = make_critic(12)
    real, fake, _ = data()
    x = real if which == "r1" else fake
    fn = fastgp.r1_penalty if which == "r1" else fastgp.r2_penalty
    got = fn(critic, x, gamma=gamma, backend=backend)
    (g,) = input_grads(critic, [x])
    want = gamma / 2 * g.square().sum(dim=(1, 2, 3)).mean()
    assert_same(got, want, critic)


def test_r1_float32_against_float64(backend):
    critic64 = make_critic(12)
    critic32 = copy.deepcopy(critic64).float()
    real, _, _ = data()
    got = fastgp.r1_penalty(critic32, real.float(), backend=backend)
    assert got.dtype == torch.float32
    (g,) = input_grads(critic64, [real.float().double()])
    want = 5.0 * g.square().sum(dim=(1, 2, 3)).mean()
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    for a, b in zip(params_grad(got, critic32), params_grad(want, critic64)):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-6)


def test_r1_zero_gradient_is_not_nan(backend):
    """A critic flat at the data: R1 is 0 and its parameter gradient finite."""
    critic = make_critic(12)
    with torch.no_grad():
        critic[1].weight.zero_()
    real, _, _ = data()
    pen = fastgp.r1_penalty(critic, real, backend=backend)
    assert pen.item() == 0.0
    assert all(torch.isfinite(p).all() for p in params_grad(pen, critic))


def test_r1_reduction_and_norms(backend):
    critic = make_critic(12)
    real, _, _ = data()
    per, norms = fastgp.r1_penalty(critic, real, gamma=4.0, reduction="none", return_norms=True, backend=backend)
    (g,) = input_grads(critic, [real])
    s = g.square().sum(dim=(1, 2, 3))
    assert_same(per, 2.0 * s, critic)
    torch.testing.assert_close(norms, s.sqrt().detach(), **F64)
    total = fastgp.r1_penalty(critic, real, gamma=4.0, reduction="sum", backend=backend)
    torch.testing.assert_close(total, 2.0 * s.sum(), **F64)


# -------------------------------------------------------------------- DRAGAN
def dragan_formula(critic, xs, seed, weight, center, noise_scale):
    """The DRAGAN authors' recipe: x_p = x + C * std(x) * U[0,1); x_hat = x + alpha * (x_p - x)."""
    g = torch.Generator().manual_seed(seed)
    alpha = torch.rand(xs[0].shape[0], generator=g, dtype=torch.float64)
    x_hat = []
    for x in xs:
        noise = torch.rand(x.shape, generator=g, dtype=torch.float64)
        xp = x + noise_scale * x.std(unbiased=False) * noise
        a = alpha.view(-1, *([1] * (x.dim() - 1)))
        x_hat.append(x + a * (xp - x))
    gs = input_grads(critic, x_hat)
    return weight * ((sq_norms(gs).sqrt() - center) ** 2).mean()


@pytest.mark.parametrize("weight,center,noise_scale", [(1.0, 1.0, 0.5), (10.0, 0.0, 0.5), (3.0, 1.0, 2.0)])
def test_dragan_fixed_generator(backend, weight, center, noise_scale):
    critic = make_critic(12)
    real, _, _ = data()
    got = fastgp.dragan_penalty(critic, real, weight=weight, center=center, noise_scale=noise_scale,
                                generator=torch.Generator().manual_seed(3), backend=backend)
    want = dragan_formula(critic, [real], 3, weight, center, noise_scale)
    assert_same(got, want, critic)


def test_dragan_multi_input(backend):
    critic = TwoInputCritic()
    x, _, _ = data()
    y = torch.randn(7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    got = fastgp.dragan_penalty(critic, (x, y), weight=10.0, generator=torch.Generator().manual_seed(4),
                                backend=backend)
    want = dragan_formula(critic, [x, y], 4, 10.0, 1.0, 0.5)
    assert_same(got, want, critic)


def test_dragan_zero_noise_is_the_two_sided_penalty_at_real(backend):
    critic = make_critic(12)
    real, _, _ = data()
    got = fastgp.dragan_penalty(critic, real, noise_scale=0.0, backend=backend)
    (g,) = input_grads(critic, [real])
    assert_same(got, ((sq_norms([g]).sqrt() - 1) ** 2).mean(), critic)


# ------------------------------------------------ multi-input and conditioning
def test_multi_input_is_the_norm_of_the_concatenation(backend):
    critic = TwoInputCritic()
    real_x, fake_x, alpha = data()
    g = torch.Generator().manual_seed(11)
    real_y, fake_y = torch.randn(7, 5, generator=g, dtype=torch.float64), torch.randn(7, 5, generator=g,
                                                                                       dtype=torch.float64)
    got = fastgp.gradient_penalty(critic, (real_x, real_y), (fake_x, fake_y), alpha=alpha, weight=10.0,
                                  backend=backend)
    gx, gy = input_grads(critic, [mix(real_x, fake_x, alpha), mix(real_y, fake_y, alpha)])
    n = torch.cat([gx.flatten(1), gy.flatten(1)], 1).norm(dim=1)
    assert_same(got, 10.0 * ((n - 1) ** 2).mean(), critic)
    r1 = fastgp.r1_penalty(critic, (real_x, real_y), backend=backend)
    gx, gy = input_grads(critic, [real_x, real_y])
    assert_same(r1, 5.0 * torch.cat([gx.flatten(1), gy.flatten(1)], 1).square().sum(1).mean(), critic)


def test_critic_args_and_kwargs_pass_through(backend):
    critic = TwoInputCritic()
    real_x, fake_x, alpha = data()
    y = torch.randn(7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 1])
    temperature = torch.linspace(0.5, 2.0, 7, dtype=torch.float64)
    got = fastgp.gradient_penalty(critic, (real_x, y), (fake_x, y), alpha=alpha, critic_args=(labels,),
                                  critic_kwargs={"temperature": temperature}, backend=backend)
    gs = input_grads(critic, [mix(real_x, fake_x, alpha), y], (labels,), {"temperature": temperature})
    assert_same(got, ((sq_norms(gs).sqrt() - 1) ** 2).mean(), critic)
    # the conditioning matters: without it the number differs
    plain = fastgp.gradient_penalty(critic, (real_x, y), (fake_x, y), alpha=alpha, backend=backend)
    assert not torch.allclose(plain, got)
    # the embedding is trained by the penalty through the critic, not through the labels
    assert params_grad(got, critic.embed)[0].abs().sum() > 0


def test_critic_args_must_be_a_tuple():
    critic = TwoInputCritic()
    x, _, _ = data()
    with pytest.raises(TypeError, match="critic_args=\\(labels,\\)"):
        fastgp.r1_penalty(critic, x, critic_args=torch.zeros(7, dtype=torch.long))
    with pytest.raises(TypeError, match="critic_kwargs"):
        fastgp.r1_penalty(critic, x, critic_kwargs=[1])


def test_multi_input_dtypes_must_match():
    x = torch.randn(4, 3)
    with pytest.raises(TypeError, match=r"real\[1\] has dtype"):
        fastgp.r1_penalty(lambda a, b: a.sum(1) + b.sum(1), (x, x.double()))


# ------------------------------------------------------------ batch fraction
@pytest.mark.parametrize("fraction,max_samples,m", [(0.5, None, 4), (None, 3, 3), (0.9, 5, 5), (1.0, None, 7)])
def test_batch_fraction(backend, fraction, max_samples, m):
    critic = TwoInputCritic()
    real, fake, alpha = data()
    y = torch.randn(7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 1])
    kw = dict(batch_fraction=fraction, max_samples=max_samples, backend=backend, critic_args=(labels,))
    per, norms = fastgp.gradient_penalty(critic, (real, y), (fake, y), alpha=alpha, reduction="none",
                                         return_norms=True, **kw)
    assert per.shape == norms.shape == (m,)
    mean = fastgp.gradient_penalty(critic, (real, y), (fake, y), alpha=alpha, **kw)
    gs = input_grads(critic, [mix(real, fake, alpha)[:m], y[:m]], (labels[:m],))
    n = sq_norms(gs).sqrt()
    assert_same(mean, ((n - 1) ** 2).mean(), critic)  # the mean over the regularized subset
    torch.testing.assert_close(norms, n.detach(), **F64)
    r1 = fastgp.r1_penalty(critic, (real, y), **kw)
    gs = input_grads(critic, [real[:m], y[:m]], (labels[:m],))
    assert_same(r1, 5.0 * sq_norms(gs).mean(), critic)


def test_batch_fraction_dragan_uses_the_subset(backend):
    critic = make_critic(12)
    real, _, _ = data()
    got = fastgp.dragan_penalty(critic, real, max_samples=2, generator=torch.Generator().manual_seed(3),
                                backend=backend)
    assert_same(got, dragan_formula(critic, [real[:2]], 3, 1.0, 1.0, 0.5), critic)


def test_batch_fraction_rounding_and_errors():
    critic = make_critic(12)
    real = torch.randn(10, 3, 2, 2, dtype=torch.float64)
    per = fastgp.r1_penalty(critic, real, batch_fraction=0.3, reduction="none")
    assert per.shape == (3,)  # 0.3 * 10 is 3.0000000000000004 in floating point
    assert fastgp.r1_penalty(critic, real, batch_fraction=0.01, reduction="none").shape == (1,)
    for bad, exc in ((0, ValueError), (1.5, ValueError), (-0.1, ValueError), (True, TypeError), ("half", TypeError)):
        with pytest.raises(exc, match="batch_fraction"):
            fastgp.r1_penalty(critic, real, batch_fraction=bad)
    for bad, exc in ((0, ValueError), (2.0, TypeError), (True, TypeError)):
        with pytest.raises(exc, match="max_samples"):
            fastgp.gradient_penalty(critic, real, real, max_samples=bad)


def test_family_argument_errors():
    critic = make_critic(12)
    real = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    with pytest.raises(TypeError, match="gamma"):
        fastgp.r1_penalty(critic, real, gamma="10")
    with pytest.raises(TypeError, match="gamma"):
        fastgp.r2_penalty(critic, real, gamma=math.inf)
    with pytest.raises(ValueError, match="noise_scale"):
        fastgp.dragan_penalty(critic, real, noise_scale=-1.0)
    with pytest.raises(ValueError, match="reduction"):
        fastgp.r1_penalty(critic, real, reduction="avg")
    with pytest.raises(ValueError, match="alpha"):
        fastgp.dragan_penalty(critic, real, alpha=torch.rand(3))
    with pytest.raises(TypeError, match="fake"):
        fastgp.r2_penalty(critic, real.long())
