"""DDP with gradient penalties: 2 processes (gloo, CPU) on halves of the global batch must train exactly
what 1 process trains on the whole batch, with identical parameters on both ranks."""

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
from fastgp.train import distributed  # noqa: E402
from train_helpers import tiny  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# wgan-gp: the penalty's double backward inside one backward; ns-r1 with lazy R1: an update made of R1 alone
# (plus the 0 * D(x) term), the case where DDP hooks would otherwise not all fire.
CASES = [dict(steps=3, loss="wgan-gp", l2_d=1e-3), dict(steps=4, loss="ns-r1", r1_every=2, n_critic=2)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, cases, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    info = distributed.from_env()
    try:
        for i, over in enumerate(cases):
            cfg, _, _ = prepare(over)
            trainer = Trainer(cfg, info)
            trainer.fit()
            torch.save({"G": trainer.G.state_dict(), "D": trainer.D.state_dict()}, os.path.join(out, f"{i}_{rank}.pt"))
    finally:
        distributed.shutdown()


def test_two_processes_equal_one_process(tmp_path):
    cases = [tiny(tmp_path / "ddp", name=f"case{i}", sample_every=0, threads=1, **c) for i, c in enumerate(CASES)]
    mp.spawn(_worker, args=(2, _free_port(), cases, str(tmp_path)), nprocs=2, join=True)
    for i, c in enumerate(CASES):
        cfg, _, _ = prepare(tiny(tmp_path / "single", name=f"case{i}", sample_every=0, **c))
        single = Trainer(cfg)
        initial = {net: {k: v.clone() for k, v in getattr(single, net).state_dict().items()} for net in ("G", "D")}
        single.fit()
        r0 = torch.load(tmp_path / f"{i}_0.pt", weights_only=True)
        r1 = torch.load(tmp_path / f"{i}_1.pt", weights_only=True)
        for net in ("G", "D"):
            ref = getattr(single, net).state_dict()
            for name in ref:
                assert torch.equal(r0[net][name], r1[net][name]), (i, net, name)  # ranks agree bitwise
                torch.testing.assert_close(r0[net][name], ref[name], rtol=1e-4, atol=1e-5, msg=f"{i} {net} {name}")
            # training moved every weight: the comparison is not between two initializations
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
