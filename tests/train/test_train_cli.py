"""The training CLI end to end with the real CTC model, loader and tokenizer (not toys).

- A run stopped after step k and resumed ends with parameters equal to an uninterrupted run
  (SpecAugment's ramp counter, the loader position and the RNG all come back).
- Bad configs fail with an error that names the key, before anything is written.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from asrllm.bin import train
from asrllm.testing.dummies import make_char_tokenizer, make_datadir
from asrllm.train.checkpoint import MODEL_FILE, latest_checkpoint, load_model_state

CONFIG = """
model_kind: ctc
model:
  specaugment: {num_time_masks: 2, max_time_width: 5, num_freq_masks: 1, max_freq_width: 5, ramp_steps: 4}
  encoder: {num_layers: 2, d_model: 16, num_heads: 2, ff_dim: 32, conv_kernel: 3, dropout: 0.1}
data: {max_batch_seconds: 7.0, num_buckets: 2, seed: 3}
trainer: {max_epochs: 3, log_every_steps: 1, progress_bar: false, tensorboard: false, plot: false, seed: 1}
optim: {lr: 1.0e-3, warmup_steps: 2}
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    make_datadir(root / "data/train", 10, seed=0, min_duration=2.0, max_duration=3.0)
    make_datadir(root / "data/dev", 2, seed=1, min_duration=2.0, max_duration=3.0)
    make_char_tokenizer(root / "data/train", root / "data/token/char")
    (root / "train.yaml").write_text(CONFIG)
    return root


def run_train(root: Path, exp: str, *overrides: str) -> int:
    return train.main([
        "--config", str(root / "train.yaml"), "--train-data", str(root / "data/train"),
        "--valid-data", str(root / "data/dev"), "--tokenizer", str(root / "data/token/char"),
        "--exp-dir", str(root / exp), *overrides,
    ])


def final_params(exp_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = latest_checkpoint(exp_dir / "checkpoints")
    assert ckpt is not None
    return load_model_state(ckpt / MODEL_FILE)


def test_resumed_run_equals_uninterrupted_run(setup: Path) -> None:
    # The LR schedule's length is pinned, so that the stopped run plans the same schedule.
    assert run_train(setup, "exp/full", "optim.total_steps=15") == 0
    assert run_train(setup, "exp/resumed", "optim.total_steps=15", "trainer.max_steps=5") == 0  # stops mid-epoch
    assert run_train(setup, "exp/resumed", "optim.total_steps=15") == 0  # continues to the end of epoch 3
    full, resumed = final_params(setup / "exp/full"), final_params(setup / "exp/resumed")
    steps_full = latest_checkpoint(setup / "exp/full/checkpoints")
    assert steps_full is not None and steps_full.name == latest_checkpoint(setup / "exp/resumed/checkpoints").name
    assert full.keys() == resumed.keys()
    for name in full:
        assert torch.equal(full[name], resumed[name]), name
    assert (setup / "exp/full/config.yaml").is_file() and (setup / "exp/full/tokenizer/tokenizer.yaml").is_file()


def test_unknown_key_is_named_and_nothing_is_written(setup: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        assert run_train(setup, "exp/bad", "optim.lrr=0.1") == 1
    assert "unknown key 'lrr'" in caplog.text
    assert not (setup / "exp/bad").exists()
    with caplog.at_level(logging.ERROR):
        assert run_train(setup, "exp/bad", "model_kind=rnnt") == 1
    assert "model_kind: unknown 'rnnt'" in caplog.text
