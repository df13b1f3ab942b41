"""Regularizers of the trainer, backend agreement, mixed precision, config refusals."""

from __future__ import annotations

import json
import os

import pytest
import torch

pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

import fastgp  # noqa: E402
from fastgp.train import ConfigError, Trainer, prepare, run  # noqa: E402
from fastgp.train import regularizers  # noqa: E402
from train_helpers import tiny  # noqa: E402


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
    for g0, g1, w in zip(grads[0.0], grads[lam], weights):
        torch.testing.assert_close(g1 - g0, 2 * lam * w, rtol=1e-5, atol=1e-6)


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
def test_fused_backend_trains_like_the_reference(tmp_path, loss):
    """Convergence check: the same short toy run with the C++ ops and with the pure-PyTorch reference."""
    if "cpp" not in fastgp.available_backends("cpu"):
        pytest.skip("the C++ extension is not built")
    # the paper's lr: float rounding differences between the backends then grow slowly over the steps
    common = dict(steps=12, log_every=1, sample_every=0, ckpt_every=0, hidden=64, loss=loss, r1_every=1, lr=1e-4,
                  lr_decay="none")
    fused = _losses(run(tiny(tmp_path, name="cpp", backend="cpp", **common)))
    ref = _losses(run(tiny(tmp_path, name="torch", backend="torch", **common)))
    assert len(fused) == len(ref) == 12
    for a, b in zip(fused, ref):
        tol = 1e-5 if a["step"] == 1 else 1e-3
        for key in ("loss_d", "loss_g", "penalty", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=tol, abs=1e-6), (a["step"], key)


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
