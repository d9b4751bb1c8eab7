"""Checkpoint files: tied tensors, atomic directories, pruning, averaging, RNG round trip."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from asrllm.train.checkpoint import (
    average_checkpoints,
    best_checkpoints,
    epoch_links,
    latest_checkpoint,
    link_epoch,
    list_checkpoints,
    load_model_state,
    load_trainer_state,
    prune_checkpoints,
    rng_state,
    save_checkpoint,
    save_model_state,
    seed_everything,
    set_rng_state,
)


class TiedLM(torch.nn.Module):
    """Input embedding and output projection share one weight, as in most LMs."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(5, 3)
        self.out = torch.nn.Linear(3, 5, bias=False)
        self.out.weight = self.embed.weight
        self.register_buffer("updates", torch.tensor(0))


def test_tied_weights_are_stored_once_and_stay_tied(tmp_path: Path) -> None:
    model = TiedLM()
    save_model_state(model.state_dict(), tmp_path / "m.safetensors")
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        assert sorted(f.keys()) == ["embed.weight", "updates"]
    fresh = TiedLM()
    fresh.load_state_dict(load_model_state(tmp_path / "m.safetensors"))
    assert torch.equal(fresh.out.weight, model.embed.weight)
    assert fresh.out.weight is fresh.embed.weight


def _save(root: Path, step: int, value: float, valid_loss: float | None = None) -> Path:
    state = {"weight": torch.full((2, 2), value), "count": torch.tensor(step)}
    return save_checkpoint(root, step, state, {"step": step, "valid_loss": valid_loss})


def test_only_complete_checkpoints_are_found(tmp_path: Path) -> None:
    _save(tmp_path, 3, 1.0)
    (tmp_path / "step_00000009").mkdir()  # no DONE: a directory some crash left behind
    (tmp_path / ".tmp-step_00000010-abc").mkdir()
    assert latest_checkpoint(tmp_path) == tmp_path / "step_00000003"
    last = _save(tmp_path, 5, 2.0)
    assert not list(tmp_path.glob(".tmp-step_*"))  # cleaned by the next save
    assert latest_checkpoint(tmp_path) == last
    assert (tmp_path / "latest").resolve() == last.resolve()
    assert load_trainer_state(last) == {"step": 5, "valid_loss": None}


def test_saving_a_step_again_replaces_it(tmp_path: Path) -> None:
    _save(tmp_path, 4, 1.0)
    _save(tmp_path, 4, 2.0, valid_loss=0.5)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000004"]
    assert load_model_state(tmp_path / "step_00000004")["weight"][0, 0] == 2.0
    assert load_trainer_state(tmp_path / "step_00000004")["valid_loss"] == 0.5


def test_prune_keeps_newest_and_epoch_checkpoints(tmp_path: Path) -> None:
    for step in range(1, 9):
        path = _save(tmp_path, step, float(step))
        if step % 3 == 0:
            link_epoch(tmp_path, step // 3, path)
    prune_checkpoints(tmp_path, keep_last=2, keep_epochs=None)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000003", "step_00000006", "step_00000007", "step_00000008"]
    prune_checkpoints(tmp_path, keep_last=2, keep_epochs=1)
    assert list(epoch_links(tmp_path)) == [2]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000006", "step_00000007", "step_00000008"]


def test_average_of_two_checkpoints_is_their_mean(tmp_path: Path) -> None:
    torch.manual_seed(0)
    a, b = TiedLM(), TiedLM()
    b.updates.fill_(7)
    save_model_state(a.state_dict(), tmp_path / "a.safetensors")
    save_model_state(b.state_dict(), tmp_path / "b.safetensors")
    avg = average_checkpoints([tmp_path / "a.safetensors", tmp_path / "b.safetensors"])
    assert torch.equal(avg["embed.weight"], (a.embed.weight + b.embed.weight).detach() / 2)
    assert avg["out.weight"] is avg["embed.weight"]
    assert avg["updates"].item() == 7 and avg["updates"].dtype == torch.int64  # integers from the last


def test_best_checkpoints_by_recorded_valid_loss(tmp_path: Path) -> None:
    for step, loss in [(1, 3.0), (2, None), (3, 1.0), (4, 2.0), (5, 1.0)]:
        _save(tmp_path, step, float(step), valid_loss=loss)
    assert [p.name for p in best_checkpoints(tmp_path, 3)] == ["step_00000005", "step_00000003", "step_00000004"]


def test_rng_state_round_trip_through_weights_only_load(tmp_path: Path) -> None:
    seed_everything(3)
    torch.save(rng_state(torch.device("cpu")), tmp_path / "rng.pt")
    first = (random.random(), np.random.rand(), torch.rand(1).item(), np.random.randn(), random.gauss(0, 1))
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True), torch.device("cpu"))
    assert (random.random(), np.random.rand(), torch.rand(1).item(), np.random.randn(), random.gauss(0, 1)) == first
