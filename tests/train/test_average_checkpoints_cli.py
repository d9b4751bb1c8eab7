"""python -m asrllm.bin.average_checkpoints: --last and --best select the right checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from asrllm.bin.average_checkpoints import main
from asrllm.train.checkpoint import load_model_state, save_checkpoint


@pytest.fixture
def exp_dir(tmp_path: Path) -> Path:
    for step, loss in [(1, 4.0), (2, 1.0), (3, 3.0), (4, 2.0)]:
        save_checkpoint(tmp_path / "checkpoints", step, {"w": torch.tensor([float(step)])}, {"valid_loss": loss})
    return tmp_path


def test_last_n(exp_dir: Path) -> None:
    main(["--exp-dir", str(exp_dir), "--last", "2"])
    assert load_model_state(exp_dir / "model_avg.safetensors")["w"].item() == 3.5


def test_best_n(exp_dir: Path) -> None:
    main(["--exp-dir", str(exp_dir), "--best", "2", "--out", str(exp_dir / "best2.safetensors")])
    assert load_model_state(exp_dir / "best2.safetensors")["w"].item() == 3.0  # steps 2 and 4


def test_needs_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["--exp-dir", str(tmp_path), "--last", "2"])


def test_same_checkpoints_skip_and_other_checkpoints_redo(exp_dir: Path) -> None:
    out = exp_dir / "model_avg.safetensors"
    main(["--exp-dir", str(exp_dir), "--last", "2"])
    record = json.loads((exp_dir / "model_avg.inputs.json").read_text())["inputs"]
    assert record["checkpoints"] == ["step_00000003", "step_00000004"]
    out.write_bytes(out.read_bytes())  # same bytes, marked: a re-run that averaged again would replace the file
    inode = out.stat().st_ino
    main(["--exp-dir", str(exp_dir), "--last", "2"])
    assert out.stat().st_ino == inode  # skipped: the same checkpoints
    # training went on (or was redone): the average follows the checkpoints without --force
    save_checkpoint(exp_dir / "checkpoints", 5, {"w": torch.tensor([5.0])}, {"valid_loss": 0.5})
    main(["--exp-dir", str(exp_dir), "--last", "2"])
    assert load_model_state(out)["w"].item() == 4.5
    save_checkpoint(exp_dir / "checkpoints", 5, {"w": torch.tensor([7.0])}, {"valid_loss": 0.5})  # same name, new weights
    main(["--exp-dir", str(exp_dir), "--last", "2"])
    assert load_model_state(out)["w"].item() == 5.5
