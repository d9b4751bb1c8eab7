"""Two CPU processes (gloo, torchrun-style environment) train like one process on the whole batches."""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.distributed
import torch.multiprocessing as mp
from train_toys import ToyLoader, ToyRegressor, toy_data

from asrllm.train.checkpoint import load_model_state, load_trainer_state
from asrllm.train.config import OptimConfig, TrainerConfig
from asrllm.train.trainer import Trainer

CFG = TrainerConfig(
    max_epochs=3, device="cpu", amp="none", num_threads=1, log_every_steps=1,
    tensorboard=False, plot=False, progress_bar=False,
)
OPTIM = OptimConfig(lr=0.05, warmup_steps=2, grad_clip=0.5, weight_decay=0.1, total_steps=9)
# each global batch of 16 is cut into 4 micro-batches; rank r gets parts r and r + 2
SPLIT = [3, 5, 4, 4]


def run(exp_dir: Path, loader: ToyLoader, valid: ToyLoader, **overrides: object) -> None:
    torch.manual_seed(0)
    Trainer(ToyRegressor(), loader, valid, dataclasses.replace(CFG, **overrides), OPTIM, exp_dir).fit()


def _worker(rank: int, port: int, exp_dir: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
    x, y = toy_data()
    xv, yv = toy_data(n=16, seed=1)
    loader = lambda: ToyLoader(x, y, 16, split=SPLIT, rank=rank, world_size=2)  # noqa: E731
    valid = ToyLoader(xv, yv, 16, split=[7, 9], rank=rank, world_size=2)
    try:
        run(exp_dir, loader(), valid, accum_grad=2, max_steps=4)  # stops mid-epoch 2 ...
        run(exp_dir, loader(), valid, accum_grad=2)  # ... and resumes there
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_with_accumulation_match_one_process(tmp_path: Path) -> None:
    context = mp.spawn(_worker, args=(_free_port(), tmp_path / "ddp"), nprocs=2, join=False)
    deadline = time.monotonic() + 120
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("DDP workers did not finish in 120 s")

    x, y = toy_data()
    xv, yv = toy_data(n=16, seed=1)
    run(tmp_path / "one", ToyLoader(x, y, 16), ToyLoader(xv, yv, 16))

    ddp, one = tmp_path / "ddp/checkpoints/latest", tmp_path / "one/checkpoints/latest"
    ddp_state, one_state = load_trainer_state(ddp), load_trainer_state(one)
    assert (ddp_state["step"], ddp_state["world_size"], len(ddp_state["rng"])) == (9, 2, 2)
    assert ddp_state["valid_loss"] == pytest.approx(one_state["valid_loss"], rel=1e-6)
    one_params = load_model_state(one)
    for name, tensor in load_model_state(ddp).items():
        torch.testing.assert_close(tensor, one_params[name], rtol=0, atol=1e-6, msg=name)
