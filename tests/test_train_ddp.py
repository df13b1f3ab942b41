"""DDP with gradient penalties: 2 processes (gloo, CPU) on halves of the global batch must compute the gradients
1 process computes on the whole batch, and keep identical parameters on both ranks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

from fastgp.train import Trainer, prepare  # noqa: E402
import fastgp  # noqa: E402
from fastgp.train import distributed, regularizers  # noqa: E402
from train_helpers import EPS32, gamma, term_magnitude, tiny  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# wgan-gp: the penalty's double backward inside one backward; ns-r1 with lazy R1: an update made of R1 alone
# (plus the 0 * D(x) term), the case where DDP hooks would otherwise not all fire.
CASES = [dict(steps=3, loss="wgan-gp", l2_d=1e-3), dict(steps=4, loss="ns-r1", r1_every=2, n_critic=2)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _first_gradients(trainer, lazy_r1: bool):
    """Gradients of the first update of each kind from the initial state, through the (DDP-wrapped) networks:
    DDP all-reduces them in its hooks during backward()."""
    out = {}
    kinds = [("critic", trainer.D, lambda: trainer.critic_loss(0, 0)[0]),
             ("generator", trainer.G, lambda: trainer.generator_loss(0)[0])]
    if lazy_r1:
        kinds.append(("r1", trainer.D, lambda: trainer.lazy_loss(0, 0)[0]))
    for name, net, loss in kinds:
        for p in list(trainer.G.parameters()) + list(trainer.D.parameters()):
            p.grad = None
        loss().backward()
        out[name] = [p.grad.clone() for p in net.parameters()]
    return out


def _worker(rank, world, port, cases, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    info = distributed.from_env()
    try:
        for i, over in enumerate(cases):
            cfg, _, _ = prepare(over)
            trainer = Trainer(cfg, info)
            grads = _first_gradients(trainer, over["loss"] == "ns-r1")
            trainer.fit()
            torch.save({"G": trainer.G.state_dict(), "D": trainer.D.state_dict(), "grads": grads},
                       os.path.join(out, f"{i}_{rank}.pt"))
    finally:
        distributed.shutdown()


def _magnitudes(trainer, lazy_r1: bool):
    """Per-parameter size of the per-sample terms each first gradient sums (see term_magnitude)."""
    cfg, b = trainer.cfg, trainer.batch(0, 0)
    with torch.no_grad():
        fake = trainer.G(b.z)
    batch = cfg.batch_size
    scores = trainer.D(torch.cat([b.real, fake]))  # adversarial terms: (+-1 or a sigmoid) * grad D(x_i) / B
    terms = list(scores / batch)
    if cfg.loss == "wgan-gp":
        pen = fastgp.gradient_penalty(trainer.D, b.real, fake, weight=cfg.gp_weight, alpha=b.alpha, reduction="none",
                                      backend="torch")
        terms += list(pen / batch)
    if cfg.l2_d:
        terms.append(regularizers.l2_weights(trainer.D.parameters(), cfg.l2_d))
    out = {"critic": term_magnitude(trainer.D.parameters(), terms)}
    gen = trainer.D(trainer.G(trainer.batch(0, cfg.n_critic).z))
    out["generator"] = term_magnitude(trainer.G.parameters(), list(gen / batch))
    if lazy_r1:
        r1 = fastgp.r1_penalty(trainer.D, b.real, gamma=cfg.r1_every * cfg.r1_gamma, reduction="none",
                               backend="torch")
        out["r1"] = term_magnitude(trainer.D.parameters(), list(r1 / batch))
    return out


def test_two_processes_equal_one_process(tmp_path):
    """The all-reduced gradients of each kind of update equal one process's on the whole batch (to the rounding
    of summing the batch in two halves), and the ranks stay bitwise identical through training.

    Whole trajectories are not compared with one process: Adam turns a rounding-level gradient component into a
    step of up to lr (1 - beta1) / sqrt(1 - beta2), so correct runs that round differently drift apart by that much
    per update."""
    cases = [tiny(tmp_path / "ddp", name=f"case{i}", sample_every=0, threads=1, **c) for i, c in enumerate(CASES)]
    mp.spawn(_worker, args=(2, _free_port(), cases, str(tmp_path)), nprocs=2, join=True)
    for i, c in enumerate(CASES):
        lazy_r1 = c["loss"] == "ns-r1"
        cfg, _, _ = prepare(tiny(tmp_path / "single", name=f"case{i}", sample_every=0, **c))
        single = Trainer(cfg)
        initial = {net: {k: v.clone() for k, v in getattr(single, net).state_dict().items()} for net in ("G", "D")}
        expected = _first_gradients(single, lazy_r1)
        magnitude = _magnitudes(single, lazy_r1)
        r0 = torch.load(tmp_path / f"{i}_0.pt", weights_only=True)
        r1 = torch.load(tmp_path / f"{i}_1.pt", weights_only=True)
        # each half-batch sum and the single sum round within gamma_n of the terms' magnitude (n: the batch plus a
        # hidden layer, the longest sums of a backward), and averaging the two ranks rounds once more
        rel = 2 * gamma(cfg.batch_size + cfg.hidden) + 2 * EPS32
        for kind, grads in expected.items():
            for k, (a, b, m) in enumerate(zip(r0["grads"][kind], grads, magnitude[kind])):
                assert torch.equal(a, r1["grads"][kind][k]), (i, kind, k)  # the all-reduce gives both ranks the same
                assert float((a.double() - b.double()).abs().max()) <= rel * float(m.max()), (i, kind, k)
        single.fit()
        for net in ("G", "D"):
            for name in r0[net]:
                assert torch.equal(r0[net][name], r1[net][name]), (i, net, name)  # ranks agree bitwise
            # training moved every weight: the runs did train
            ref = r0[net]
            assert all(not torch.equal(initial[net][n], ref[n]) for n in ref if n.endswith("weight")), (i, net)


def test_torchrun_cli(tmp_path):
    """The documented command: torchrun --nproc_per_node=2 -m fastgp.train ..."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "fastgp.train", "--steps", "2", "--hidden", "16", "--depth", "1",
           "--batch-size", "32", "--eval-samples", "200", "--log-every", "1", "--no-progress",
           "--out-dir", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("modes captured") == 1  # rank 0 alone reports and writes
    assert "on cpu x2" in proc.stdout
    assert os.path.isfile(tmp_path / "ring-wgan-gp" / "checkpoints" / "last.pt")
