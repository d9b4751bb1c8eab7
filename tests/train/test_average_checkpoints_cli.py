"""python -m asrllm.bin.average_checkpoints: --last and --best select the right checkpoints."""

from __future__ import annotations

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
