"""Regularizers of the trainer, backend agreement, mixed precision, config refusals."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

import fastgp  # noqa: E402
from fastgp.train import ConfigError, Trainer, prepare, run  # noqa: E402
from fastgp.train import regularizers  # noqa: E402
from fastgp.train.trainer import Batch  # noqa: E402
from train_helpers import EPS32, gamma, term_magnitude, tiny  # noqa: E402


def test_l2_weights_gradient_is_two_lambda_w():
    torch.manual_seed(0)
    params = [torch.randn(5, 3, requires_grad=True), torch.randn(3, requires_grad=True),
              torch.zeros(4, requires_grad=True)]
    lam = 0.37
    reg = regularizers.l2_weights(params, lam)
    expected = lam * sum(float((p.detach() ** 2).sum()) for p in params)
    assert reg.item() == pytest.approx(expected, rel=1e-6)
    grads = torch.autograd.grad(reg, params)
    for p, g in zip(params, grads):
        torch.testing.assert_close(g, 2 * lam * p.detach())  # zero weights included: no NaN at ||W|| = 0
    assert regularizers.l2_weights(params, 0.0) is None


@pytest.mark.parametrize("net,key", [("D", "l2_d"), ("G", "l2_g")])
def test_l2_in_the_trainer_adds_two_lambda_w_to_the_loss_gradient(tmp_path, net, key):
    lam = 0.05
    grads = {}
    for value in (0.0, lam):
        cfg, _, _ = prepare(tiny(tmp_path, name=f"{key}{value}", **{key: value}))
        trainer = Trainer(cfg)
        module = trainer.D if net == "D" else trainer.G
        if net == "D":
            loss, _ = trainer.critic_loss(step=3, k=1)
        else:
            trainer.D.requires_grad_(False)
            loss, _ = trainer.generator_loss(step=3)
        grads[value] = torch.autograd.grad(loss, list(module.parameters()))
        weights = [p.detach() for p in module.parameters()]
    eps = torch.finfo(torch.float32).eps
    for g0, g1, w in zip(grads[0.0], grads[lam], weights):
        # One more term accumulated into each gradient: g1 = g0 + 2 lam W rounded once at |g1|, 2 lam W itself
        # rounded through ||W||, and the difference g1 - g0 rounded at its own size.
        bound = eps * (g1.abs() + 4 * (2 * lam * w).abs() + (g1 - g0).abs())
        assert ((g1 - g0) - 2 * lam * w).abs().le(bound).all()


def test_r1_matches_an_independent_formula():
    torch.manual_seed(0)
    critic = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    real = torch.randn(6, 3)
    penalty, norms = regularizers.r1(critic, real, gamma=4.0, gain=3.0, backend="torch")
    x = real.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    expected = 3.0 * 4.0 / 2 * g.pow(2).sum(1).mean()
    torch.testing.assert_close(penalty, expected)
    torch.testing.assert_close(norms, g.detach().norm(dim=1))
    # the penalty trains the critic: its parameter gradient matches the independent formula's
    params = list(critic.parameters())  # the last bias does not reach grad_x D: its gradient is None in both
    gp = torch.autograd.grad(penalty, params, allow_unused=True)
    ge = torch.autograd.grad(expected, params, allow_unused=True)
    assert [a is None for a in gp] == [b is None for b in ge] == [False, False, False, True]
    for a, b in zip(gp[:3], ge[:3]):
        torch.testing.assert_close(a, b)


def test_lazy_adam_correction():
    lr, betas = regularizers.lazy_adam(2e-3, (0.0, 0.99), 16)
    assert lr == pytest.approx(2e-3 * 16 / 17)
    assert betas == pytest.approx((0.0, 0.99 ** (16 / 17)))
    assert regularizers.lazy_adam(1e-4, (0.5, 0.9), 1) == (1e-4, (0.5, 0.9))


def test_lazy_r1_sets_the_critic_optimizer(tmp_path):
    cfg, _, _ = prepare(tiny(tmp_path, loss="ns-r1", r1_every=4, lr=1e-3, beta2=0.99))
    trainer = Trainer(cfg)
    group = trainer.opt_d.param_groups[0]
    assert group["lr"] == pytest.approx(1e-3 * 4 / 5) and group["betas"][1] == pytest.approx(0.99 ** 0.8)
    assert trainer.opt_g.param_groups[0]["lr"] == 1e-3


def _losses(summary):
    with open(os.path.join(summary["run_dir"], "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["kind"] == "train"]


@pytest.mark.parametrize("loss", ["wgan-gp", "ns-r1"])
def test_fused_backend_updates_like_the_reference(tmp_path, loss):
    """At each state of a short toy run, the C++ penalty gives the critic update of the pure-PyTorch reference,
    to the float32 rounding of the penalty arithmetic.

    Both backends start every comparison from the same parameters and batch. Whole trajectories are not compared:
    Adam divides each gradient component by its running RMS, so a component that is the rounding-level remainder
    of cancelling terms takes a step of up to lr (1 - beta1) / sqrt(1 - beta2) in a direction the rounding picks,
    and two correct backends drift apart by that much per update on any CPU whose rounding differs.
    """
    if "cpp" not in fastgp.available_backends("cpu"):
        pytest.skip("the C++ extension is not built")
    common = dict(steps=12, sample_every=0, ckpt_every=0, hidden=64, loss=loss, r1_every=1, lr=1e-4, lr_decay="none")
    ref = Trainer(prepare(tiny(tmp_path, name="torch", backend="torch", **common))[0])
    fused = Trainer(prepare(tiny(tmp_path, name="cpp", backend="cpp", **common))[0])
    cfg, batch = ref.cfg, ref.cfg.batch_size
    d = ref.data.shape[0]  # row length of the input gradient
    rel_norm = 2 * gamma(d + 2)  # the two backends' norms: each within gamma_{d+2} (squares, sum, sqrt) of exact
    center, weight = (1.0, cfg.gp_weight) if loss == "wgan-gp" else (0.0, cfg.r1_gamma / 2)
    for step in range(cfg.steps):
        fused.G.load_state_dict(ref.G.state_dict())
        fused.D.load_state_dict(ref.D.state_dict())
        (total_r, stats_r), (total_f, stats_f) = ref.critic_loss(step, 0), fused.critic_loss(step, 0)
        grads_r = torch.autograd.grad(total_r, list(ref.D.parameters()))
        grads_f = torch.autograd.grad(total_f, list(fused.D.parameters()))
        # The adversarial part does not involve fastgp: same ops on the same numbers in one process, same bits.
        assert torch.equal(stats_r["loss_d"], stats_f["loss_d"]), step

        # Per-sample penalties and norms of this critic update, from the reference, and the magnitude of their
        # parameter gradients: the terms whose sum over the batch the critic's gradient is.
        real = ref.real_batch(step, 0)
        with torch.no_grad():
            fake = ref.G(ref.noise(step, 0))
        if loss == "wgan-gp":
            terms, norms = fastgp.gradient_penalty(ref.D, real, fake, weight=weight, center=center,
                                                   alpha=ref.alpha(step, 0), reduction="none", return_norms=True,
                                                   backend="torch")
        else:
            terms, norms = fastgp.r1_penalty(ref.D, real, gamma=cfg.r1_gamma, reduction="none", return_norms=True,
                                             backend="torch")
        norms = norms.double()
        # The magnitude of the terms the critic's gradient sums: per-sample score gradients (the adversarial part
        # is (+-1 or a sigmoid) * grad D(x_i) / B) and per-sample penalty gradients.
        scores = ref.D(torch.cat([real, fake]))
        magnitude = term_magnitude(ref.D.parameters(), [t / batch for t in torch.cat([scores, terms])])
        # mean norm: the norms' difference plus each mean's rounding
        tol = rel_norm * norms.mean() + 2 * gamma(batch) * norms.mean()
        assert abs(float(stats_f["grad_norm"]) - float(stats_r["grad_norm"])) <= tol, (step, "grad_norm")
        # penalty w/B sum (n_i - c)^2: the cancelling terms are n_i and c, so the error scales with |n_i - c| n_i
        penalty = float(stats_r["penalty"])
        tol = weight / batch * float((2 * (norms - center).abs() * rel_norm * norms).sum()) + 2 * gamma(batch) * penalty
        assert abs(float(stats_f["penalty"]) - penalty) <= tol, (step, "penalty")
        # Critic gradient: the backends differ in the per-sample cotangent w phi'(n_i)/n_i g_i / B, whose relative
        # error follows the norm's through (n_i - c) and n_i; the double backward then rounds both results on its
        # own (sums over the batch and a hidden layer). A normwise bound: intermediate terms of one sample's
        # gradient may cancel each other, which no componentwise magnitude computed from outside can see.
        cot = float((rel_norm * (norms / (norms - center).abs().clamp_min(1e-30) + 1)).max()) + 4 * EPS32
        rel = cot + 2 * gamma(batch + cfg.hidden)
        for k, (a, b, m) in enumerate(zip(grads_f, grads_r, magnitude)):
            assert float((a.double() - b.double()).abs().max()) <= rel * float(m.max()), (step, k)
        ref.train_step(step)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_runs(tmp_path, amp):
    summary = run(tiny(tmp_path, amp=amp, steps=3, log_every=1, sample_every=0))
    records = _losses(summary)
    assert all(torch.isfinite(torch.tensor([r["loss_d"], r["loss_g"]])).all() for r in records)
    ckpt = torch.load(os.path.join(summary["run_dir"], "checkpoints", "last.pt"), weights_only=True)
    assert (ckpt["scaler_d"] is not None) == (amp == "fp16")


def test_batchnorm_critic_with_penalty_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="BatchNorm makes each critic score depend on the whole batch"):
        prepare(tiny(tmp_path, d_norm="batch"))
    with pytest.raises(ConfigError, match="BatchNorm"):
        prepare(tiny(tmp_path, data="digits", d_norm="batch", loss="ns-r1"))
    cfg, _, _ = prepare(tiny(tmp_path, d_norm="batch", loss="ns-r1", r1_gamma=0.0))  # no penalty: allowed
    assert cfg.d_norm == "batch"


def test_unavailable_backend_and_device_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="--backend triton: fastgp backend 'triton' is unavailable on cpu"):
        run(tiny(tmp_path, backend="triton", device="cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device='cuda' but torch sees no CUDA device"):
            run(tiny(tmp_path, device="cuda"))


def _median_distance_to_the_data(trainer):
    """Median distance of the generated ring samples to their nearest mode, in the ring's units (radius 1)."""
    x = trainer.data.to_native(trainer.generate(trainer.fixed_noise)).double()
    return float(torch.cdist(x, trainer.data.centers).min(dim=1).values.median())


@pytest.mark.parametrize("loss", ["rpgan-r1r2", "dragan"])
def test_new_losses_train_on_the_ring(tmp_path, loss):
    """A short toy run trains: the generator's samples, born near the origin (about 1 from every mode of the
    unit ring), move toward the modes, and every penalty on the way is finite and positive."""
    cfg, _, _ = prepare(tiny(tmp_path, loss=loss, steps=300, sample_every=0, ckpt_every=0))
    trainer = Trainer(cfg)
    before = _median_distance_to_the_data(trainer)
    penalties = []
    for step in range(cfg.steps):
        penalties.append(float(trainer.train_step(step)["penalty"]))
    after = _median_distance_to_the_data(trainer)
    assert before > 0.7 and after < 0.7 * before, (before, after)
    assert all(math.isfinite(p) and p > 0 for p in penalties)


def test_rpgan_r1r2_pairs_the_samples_and_regularizes_both_sides(tmp_path):
    cfg, _, _ = prepare(tiny(tmp_path, loss="rpgan-r1r2", r1_gamma=2.0))
    assert (cfg.n_critic, cfg.r1_every) == (1, 1)  # R3GAN: one critic step, R1 and R2 at every step
    trainer = Trainer(cfg)
    batch = trainer.batch(0, 0)
    total, stats = trainer.critic_loss(0, 0, batch)
    with torch.no_grad():
        fake = trainer.G(batch.z)
    d_real, d_fake = trainer.D(batch.real), trainer.D(fake)
    r1 = fastgp.r1_penalty(trainer.D, batch.real, gamma=2.0, backend="torch")
    r2 = fastgp.r2_penalty(trainer.D, fake, gamma=2.0, backend="torch")
    expected = torch.nn.functional.softplus(d_fake - d_real).mean() + r1 + r2  # pairs (real_i, fake_i)
    torch.testing.assert_close(total, expected)
    torch.testing.assert_close(stats["r1"] + stats["r2"], stats["penalty"])
    g_batch = trainer.batch(0, cfg.n_critic)  # the generator pairs its samples with the same real ones
    assert torch.equal(g_batch.real, batch.real)
    loss_g, _ = trainer.generator_loss(0, g_batch)
    d_fake_g = trainer.D(trainer.G(g_batch.z))
    torch.testing.assert_close(loss_g, torch.nn.functional.softplus(d_real - d_fake_g).mean())


@pytest.mark.parametrize("loss", ["wgan-gp", "rpgan-r1r2"])
def test_gp_batch_fraction_regularizes_the_first_samples(tmp_path, loss):
    cfg, _, _ = prepare(tiny(tmp_path, loss=loss, gp_batch_fraction=0.25))
    trainer = Trainer(cfg)
    batch = trainer.batch(0, 0)
    _, stats = trainer.critic_loss(0, 0, batch)
    m = 16  # ceil(0.25 * 64)
    head = Batch(*(None if t is None else t[:m] for t in (batch.real, batch.z, batch.alpha, batch.labels)))
    with torch.no_grad():
        fake = trainer.G(head.z)
    if loss == "wgan-gp":
        expected = fastgp.gradient_penalty(trainer.D, head.real, fake, weight=cfg.gp_weight, alpha=head.alpha,
                                           backend="torch")
    else:
        expected = fastgp.r1_penalty(trainer.D, head.real, gamma=cfg.r1_gamma, backend="torch") + \
            fastgp.r2_penalty(trainer.D, fake, gamma=cfg.r1_gamma, backend="torch")
    torch.testing.assert_close(stats["penalty"], expected.detach())


def test_spectral_norm_critic_with_the_penalty(tmp_path):
    """--d-sn wraps every critic layer; the penalty's double backward runs through the parametrization and
    gives the parameter gradient of an independent autograd formula."""
    cfg, _, _ = prepare(tiny(tmp_path, d_sn=True, gp_weight=1.0))
    trainer = Trainer(cfg)
    layers = [m for m in trainer.D.modules() if isinstance(m, torch.nn.Linear)]
    assert layers and all(torch.nn.utils.parametrize.is_parametrized(m, "weight") for m in layers)
    with torch.no_grad():
        for m in layers:  # raw weights far from norm 1, so that norm 1 below is the normalization's doing
            m.parametrizations.weight.original.mul_(10)
    for _ in range(100):  # power iterations (one per forward in training mode)
        trainer.D(torch.randn(8, 2))
    trainer.D.eval()  # u, v frozen: both computations below see the same normalized weights
    with torch.no_grad():
        for m in layers:
            assert float(torch.linalg.matrix_norm(m.parametrizations.weight.original, ord=2)) > 3
            assert float(torch.linalg.matrix_norm(m.weight, ord=2)) == pytest.approx(1.0, rel=0.05)
    real, fake, alpha = torch.randn(32, 2), torch.randn(32, 2), torch.rand(32)
    params = list(trainer.D.parameters())
    penalty = fastgp.gradient_penalty(trainer.D, real, fake, alpha=alpha, weight=1.0)
    x = (alpha[:, None] * real + (1 - alpha[:, None]) * fake).requires_grad_(True)
    (g,) = torch.autograd.grad(trainer.D(x).sum(), x, create_graph=True)
    expected = ((g.norm(dim=1) - 1) ** 2).mean()
    torch.testing.assert_close(penalty, expected)
    got = torch.autograd.grad(penalty, params, allow_unused=True)
    want = torch.autograd.grad(expected, params, allow_unused=True)
    assert any(g is not None for g in got)
    for a, b in zip(got, want):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)
    trainer.D.train()
    for step in range(3):  # and it trains
        stats = trainer.train_step(step)
        assert math.isfinite(float(stats["penalty"]))
