"""The EMA generator: StyleGAN2-ADA's schedule, BatchNorm buffers, samples drawn from it, checkpoints."""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

from fastgp.train import Trainer, prepare, run  # noqa: E402
from fastgp.train.ema import GeneratorEMA  # noqa: E402
from train_helpers import EPS32, tiny  # noqa: E402


def test_defaults_follow_the_data():
    image, _, _ = prepare({"data": "digits", "batch_size": 64})
    toy, _, _ = prepare({})
    assert image.g_ema is True and toy.g_ema is False
    assert image.ema_kimg == 64 * 10 / 32 and image.ema_rampup == 0.05  # StyleGAN2-ADA's auto config


def test_half_life_and_ramp_up():
    ema = GeneratorEMA(torch.nn.Linear(2, 2), batch_size=100, kimg=1.0, rampup=0.05)
    assert ema.beta(0) == 0.0  # the first update copies the generator
    # the half-life is min(1000 images, 5% of the images seen so far): 500 images after 10000 ...
    assert ema.beta(10_000) == pytest.approx(0.5 ** (100 / 500))
    assert ema.beta(10 ** 9) == pytest.approx(0.5 ** (100 / 1000))  # ... capped at kimg
    # a whole half-life of steps halves the weight of the old average
    no_ramp = GeneratorEMA(torch.nn.Linear(2, 2), batch_size=100, kimg=1.0, rampup=0.0)
    assert no_ramp.beta(0) ** 10 == pytest.approx(0.5)


def test_ema_is_the_average_of_the_trained_weights(tmp_path):
    """The trainer's EMA equals an independent float64 recursion over the generator weights after each step."""
    cfg, _, _ = prepare(tiny(tmp_path, data="digits", batch_size=32, z_dim=8, steps=6, ema_kimg=0.1))
    trainer = Trainer(cfg)
    expected = None
    for step in range(cfg.steps):
        trainer.train_step(step)
        weights = [p.detach().double().clone() for p in trainer.G.parameters()]
        half_life = min(cfg.ema_kimg * 1000, step * cfg.batch_size * cfg.ema_rampup)
        beta = 0.5 ** (cfg.batch_size / max(half_life, 1e-8))
        expected = weights if expected is None else [beta * e + (1 - beta) * w for e, w in zip(expected, weights)]
        assert step == 0 or 0 < beta < 1
    moved = False
    for got, want, w in zip(trainer.ema.module.parameters(), expected, trainer.G.parameters()):
        # one float32 lerp per step, each rounding at the scale of the weights
        tol = 4 * EPS32 * cfg.steps * float(want.abs().max())
        assert float((got.double() - want).abs().max()) <= tol
        moved = moved or not torch.equal(got, w.detach())
    assert moved  # the average is not the current generator
    for name, buf in trainer.G.named_buffers():  # BatchNorm statistics are copied, not averaged
        assert torch.equal(dict(trainer.ema.module.named_buffers())[name], buf), name
    assert any("running_mean" in n for n, _ in trainer.G.named_buffers())


@pytest.mark.parametrize("g_ema", [True, False])
def test_samples_come_from_the_sampling_generator(tmp_path, g_ema):
    cfg, _, _ = prepare(tiny(tmp_path, data="digits", batch_size=32, z_dim=8, steps=3, g_ema=g_ema))
    trainer = Trainer(cfg)
    for step in range(cfg.steps):
        trainer.train_step(step)
    net = trainer.sampling_generator()
    assert (net is trainer.ema.module) if g_ema else (net is trainer.G and trainer.ema is None)
    z = torch.randn(5, cfg.z_dim)
    net.eval()
    with torch.no_grad():
        expected = net(z)
    assert torch.equal(trainer.generate(z), expected)
    if g_ema:
        trainer.G.eval()
        with torch.no_grad():
            assert not torch.equal(trainer.G(z), expected)


def test_every_checkpoint_holds_the_ema_and_old_ones_start_it_from_the_generator(tmp_path, capsys):
    first = run(tiny(tmp_path, data="digits", batch_size=32, z_dim=8, steps=2, ckpt_every=1, keep_ckpts=5))
    folder = os.path.join(first["run_dir"], "checkpoints")
    for name in sorted(os.listdir(folder)):
        assert torch.load(os.path.join(folder, name), weights_only=True)["generator_ema"] is not None, name
    last = os.path.join(folder, "last.pt")
    state = torch.load(last, weights_only=True)
    del state["generator_ema"]  # a checkpoint of an older trainer
    torch.save(state, last)
    capsys.readouterr()
    cfg, ckpt, path = prepare(tiny(tmp_path, data="digits", batch_size=32, z_dim=8, steps=3, resume="last"))
    trainer = Trainer(cfg, ckpt=ckpt, ckpt_path=path)
    assert "holds no EMA generator; the EMA starts from its generator's weights" in capsys.readouterr().err
    for a, b in zip(trainer.ema.module.state_dict().values(), trainer.G.state_dict().values()):
        assert torch.equal(a, b)
