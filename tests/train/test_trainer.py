"""Trainer: outputs, loss normalisation under accumulation, exact resume, optimizer groups."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from train_toys import ToyLoader, ToyRegressor, toy_data

from asrllm.config import load_yaml
from asrllm.train.checkpoint import list_checkpoints, load_model_state, load_trainer_state
from asrllm.train.config import OptimConfig, TrainerConfig
from asrllm.train.plot import read_log
from asrllm.train.trainer import Trainer, build_optimizer

BASE = TrainerConfig(max_epochs=3, device="cpu", amp="none", log_every_steps=2, tensorboard=False, plot=False, progress_bar=False)
OPTIM = OptimConfig(lr=0.05, warmup_steps=3, grad_clip=0.5, weight_decay=0.1)


def train(exp_dir: Path, loader: ToyLoader, dropout: float = 0.0, optim: OptimConfig = OPTIM, **overrides: object) -> ToyRegressor:
    torch.manual_seed(0)
    model = ToyRegressor(dropout=dropout)
    x, y = toy_data(n=16, seed=1)
    valid = ToyLoader(x, y, batch_size=8)
    Trainer(model, loader, valid, dataclasses.replace(BASE, **overrides), optim, exp_dir).fit()
    return model


def assert_params_equal(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_fit_writes_checkpoints_logs_plot_and_config(tmp_path: Path) -> None:
    x, y = toy_data()
    torch.manual_seed(0)
    cfg = dataclasses.replace(BASE, tensorboard=True, plot=True, save_every_steps=4, keep_last=2)
    trainer = Trainer(ToyRegressor(), ToyLoader(x, y, 8), ToyLoader(x, y, 16), cfg, OPTIM, tmp_path, config_to_save=cfg)
    trainer.fit()

    ckpts = tmp_path / "checkpoints"
    # 6 steps per epoch, 18 in all: step saves at 4, 8, 12, 16 and epoch ends at 6, 12, 18
    assert [p.name for p in list_checkpoints(ckpts)] == ["step_00000006", "step_00000012", "step_00000016", "step_00000018"]
    assert {p.name: p.readlink().name for p in ckpts.glob("epoch_*")} == {
        "epoch_1": "step_00000006", "epoch_2": "step_00000012", "epoch_3": "step_00000018"}
    assert (ckpts / "latest").readlink().name == "step_00000018"
    assert sorted(p.name for p in (ckpts / "step_00000018").iterdir()) == ["DONE", "model.safetensors", "trainer_state.pt"]
    assert not list(ckpts.glob(".tmp*"))

    state = load_trainer_state(ckpts / "latest")  # weights_only=True inside
    assert (state["step"], state["epoch"], state["batches_done"], state["world_size"]) == (18, 3, 6, 1)
    assert state["valid_loss"] == state["best_valid_loss"] or state["best_valid_loss"] < state["valid_loss"]
    assert len(state["rng"]) == 1 and set(state["rng"][0]) == {"python", "numpy", "torch", "cuda"}
    for name, tensor in load_model_state(ckpts / "latest").items():
        assert torch.equal(tensor, trainer.module.state_dict()[name]), name

    records = read_log(tmp_path / "train_log.jsonl")
    train_recs = [r for r in records if r["split"] == "train"]
    valid_recs = [r for r in records if r["split"] == "valid"]
    assert [r["step"] for r in train_recs] == list(range(2, 19, 2))
    assert [r["step"] for r in valid_recs] == [6, 12, 18]
    assert {"loss", "lr", "grad_norm", "items_per_s", "abs_y"} <= set(train_recs[0])
    assert train_recs[-1]["loss"] < train_recs[0]["loss"]
    assert (tmp_path / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert load_yaml(tmp_path / "config.yaml")["save_every_steps"] == 4


def test_accumulation_with_uneven_micro_batches_equals_whole_batches(tmp_path: Path) -> None:
    x, y = toy_data()
    whole = train(tmp_path / "whole", ToyLoader(x, y, 8), accum_grad=1)
    # each global batch of 8 arrives as micro-batches of 3 and 5: a per-micro-batch mean would differ
    accum = train(tmp_path / "accum", ToyLoader(x, y, 8, split=[3, 5]), accum_grad=2)
    for (name, a), b in zip(whole.state_dict().items(), accum.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)


@pytest.mark.parametrize("accum_grad", [1, 2])
def test_resume_after_max_steps_is_bit_exact(tmp_path: Path, accum_grad: int) -> None:
    x, y = toy_data()
    loader = lambda: ToyLoader(x, y, 8, split=[3, 5])  # noqa: E731
    full = train(tmp_path / "full", loader(), dropout=0.3, accum_grad=accum_grad)
    planned = 3 * 12 // accum_grad
    # stop in the middle of epoch 2, then continue in a new process-like Trainer
    optim = dataclasses.replace(OPTIM, total_steps=planned)  # the full run's schedule length
    stopped = train(tmp_path / "split", loader(), dropout=0.3, optim=optim, accum_grad=accum_grad, max_steps=planned // 2 + 1)
    assert load_trainer_state(tmp_path / "split/checkpoints/latest")["batches_done"] not in (0, 12)
    resumed = train(tmp_path / "split", loader(), dropout=0.3, accum_grad=accum_grad)
    assert not all(torch.equal(a, b) for a, b in zip(stopped.parameters(), resumed.parameters()))
    assert_params_equal(full, resumed)


def test_resume_after_crash_uses_last_complete_checkpoint(tmp_path: Path) -> None:
    x, y = toy_data()
    full = train(tmp_path / "full", ToyLoader(x, y, 8), dropout=0.3, save_every_steps=4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(tmp_path / "crash", ToyLoader(x, y, 8, crash_after=9), dropout=0.3, save_every_steps=4)
    assert [p.name for p in list_checkpoints(tmp_path / "crash/checkpoints")][-1] == "step_00000008"
    resumed = train(tmp_path / "crash", ToyLoader(x, y, 8), dropout=0.3, save_every_steps=4)
    assert_params_equal(full, resumed)
    # the log keeps one record per step: those of the crashed run after step 8 are superseded
    steps = [r["step"] for r in read_log(tmp_path / "crash/train_log.jsonl") if r["split"] == "train"]
    assert steps == sorted(set(steps))


def test_resume_of_a_finished_run_changes_nothing(tmp_path: Path) -> None:
    x, y = toy_data()
    first = train(tmp_path, ToyLoader(x, y, 8))
    second = train(tmp_path, ToyLoader(x, y, 8))
    assert_params_equal(first, second)
    assert list_checkpoints(tmp_path / "checkpoints")[-1].name == "step_00000018"


def test_fresh_run_refuses_existing_checkpoints(tmp_path: Path) -> None:
    x, y = toy_data()
    train(tmp_path, ToyLoader(x, y, 8), max_steps=2)
    with pytest.raises(ValueError, match="trainer.resume"):
        train(tmp_path, ToyLoader(x, y, 8), resume=False)


def test_max_steps_only_validates_and_saves_at_the_end(tmp_path: Path) -> None:
    x, y = toy_data()
    train(tmp_path, ToyLoader(x, y, 8), max_epochs=None, max_steps=8, valid_every_steps=3, log_every_steps=100)
    records = read_log(tmp_path / "train_log.jsonl")
    assert [r["step"] for r in records if r["split"] == "valid"] == [3, 6, 8]
    assert [r["step"] for r in records if r["split"] == "train"] == [8]  # the remainder is logged at the end
    state = load_trainer_state(tmp_path / "checkpoints/latest")
    assert (state["step"], state["epoch"], state["batches_done"]) == (8, 2, 2)
    assert state["valid_loss"] is not None


def test_bf16_autocast_on_cpu_trains(tmp_path: Path) -> None:
    x, y = toy_data()
    train(tmp_path, ToyLoader(x, y, 8), amp="bf16", max_epochs=1)
    losses = [r["loss"] for r in read_log(tmp_path / "train_log.jsonl") if r["split"] == "train"]
    assert all(torch.isfinite(torch.tensor(losses)))


def test_weight_decay_skips_biases_and_norms() -> None:
    model = ToyRegressor()
    groups = build_optimizer(model, OptimConfig(weight_decay=0.1)).param_groups
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert all(p.ndim == 2 for p in groups[0]["params"]) and all(p.ndim == 1 for p in groups[1]["params"])
    (everything,) = build_optimizer(model, OptimConfig(weight_decay=0.1, decay_bias_and_norm=True)).param_groups
    assert len(everything["params"]) == len(list(model.parameters()))


def test_log_lines_are_json(tmp_path: Path) -> None:
    x, y = toy_data()
    train(tmp_path, ToyLoader(x, y, 8), max_epochs=1)
    lines = (tmp_path / "train_log.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert {k: v for k, v in records[0].items() if k != "time"} == {"event": "start", "step": 0, "command": None}
    assert records[-1]["event"] == "end" and all(isinstance(r["time"], float) for r in records)
