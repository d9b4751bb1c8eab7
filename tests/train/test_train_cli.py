"""The training CLI end to end with the real CTC model, loader and tokenizer (not toys).

- A run stopped after step k and resumed ends with parameters equal to an uninterrupted run
  (SpecAugment's ramp counter, the loader position and the RNG all come back).
- Bad configs fail with an error that names the key, before anything is written.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from asrllm.bin import train
from asrllm.models.trained import read_train_log
from asrllm.testing.dummies import make_char_tokenizer, make_datadir
from asrllm.config import load_yaml
from asrllm.train.checkpoint import MODEL_FILE, checkpoint_step, latest_checkpoint, list_checkpoints, load_model_state
from asrllm.train.plot import read_log

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


def snapshot(exp_dir: Path) -> dict[str, tuple[int, bytes]]:
    """{file: (mtime_ns, bytes)} but the lock; the loaders' reports of left-out utterances are
    rewritten (with the same bytes) by every run, so only their bytes count."""
    return {
        str(p.relative_to(exp_dir)): (0 if p.name.startswith("filtered_utts.") else p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(exp_dir.rglob("*")) if p.is_file() and p.name != ".lock"
    }


def checkpoint_steps(exp_dir: Path) -> list[int]:
    return [checkpoint_step(p) for p in list_checkpoints(exp_dir / "checkpoints")]


def test_rerun_rule_same_skips_other_config_stops_force_retrains(setup: Path, caplog: pytest.LogCaptureFixture) -> None:
    exp = setup / "exp/rule"
    assert run_train(setup, "exp/rule", "trainer.max_epochs=1") == 0
    record = json.loads((exp / "train_inputs.json").read_text())["inputs"]
    assert record["config.model.encoder.num_layers"] == 2 and record["train_data"].startswith("sha256:")
    assert "config.trainer.max_epochs" in record  # the LR schedule is planned over the run: its length counts
    assert "config.trainer.progress_bar" not in record and "config.data.num_workers" not in record
    first_weights, first_steps, before = final_params(exp), checkpoint_steps(exp), snapshot(exp)

    # the same inputs: a finished run, nothing is written
    assert run_train(setup, "exp/rule", "trainer.max_epochs=1") == 0
    assert snapshot(exp) == before

    # another architecture without --force: one line naming the key, nothing touched
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert run_train(setup, "exp/rule", "trainer.max_epochs=1", "model.encoder.num_layers=1") == 1
    assert "config.model.encoder.num_layers (2 -> 1)" in caplog.text and "--force" in caplog.text
    assert snapshot(exp) == before
    # so is a longer run while the schedule's length follows the run length
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert run_train(setup, "exp/rule", "trainer.max_epochs=2") == 1
    assert "config.trainer.max_epochs (1 -> 2)" in caplog.text
    assert snapshot(exp) == before

    # --force: the old outputs go, the new model is trained from step 0
    (exp / "model_avg.safetensors").write_bytes(b"stale")
    assert run_train(setup, "exp/rule", "trainer.max_epochs=1", "model.encoder.num_layers=1", "--force") == 0
    assert load_yaml(exp / "config.yaml")["model"]["encoder"]["num_layers"] == 1
    assert not (exp / "model_avg.safetensors").exists()
    assert checkpoint_steps(exp)[-1] == first_steps[-1]  # one epoch again, not resumed
    events = [json.loads(line) for line in (exp / "train_log.jsonl").read_text().splitlines() if '"event"' in line]
    assert [(e["event"], e["step"]) for e in events] == [("start", 0), ("end", checkpoint_steps(exp)[-1])]
    assert events[0]["command"].startswith("python -m asrllm.bin.train --config ") and "--force" in events[0]["command"]
    command, seconds = read_train_log(exp)
    assert command == events[0]["command"] and seconds == pytest.approx(events[1]["time"] - events[0]["time"], abs=0.1)
    new_weights = final_params(exp)
    assert not any(k.startswith("encoder.blocks.1.") for k in new_weights)
    assert {k for k in first_weights if k.startswith("encoder.blocks.1.")}
    steps = [r["step"] for r in read_log(exp / "train_log.jsonl") if r["split"] == "train"]
    assert steps == list(range(1, steps[-1] + 1))  # one run from step 0, each step once
    assert json.loads((exp / "train_inputs.json").read_text())["inputs"]["config.model.encoder.num_layers"] == 1


def test_run_length_changes_resume_when_the_schedule_is_pinned(setup: Path) -> None:
    assert run_train(setup, "exp/full", "optim.total_steps=15") == 0  # made by the first test; else made here
    exp = setup / "exp/longer"
    assert run_train(setup, "exp/longer", "optim.total_steps=15", "trainer.max_epochs=1") == 0
    first = checkpoint_steps(exp)
    assert run_train(setup, "exp/longer", "optim.total_steps=15", "trainer.max_epochs=3") == 0  # resumes
    assert checkpoint_steps(exp)[-1] == checkpoint_steps(setup / "exp/full")[-1] > first[-1]
    assert load_yaml(exp / "config.yaml")["trainer"]["max_epochs"] == 3
    full, longer = final_params(setup / "exp/full"), final_params(exp)
    assert all(torch.equal(full[k], longer[k]) for k in full)  # = the uninterrupted 3-epoch run
    steps = [r["step"] for r in read_log(exp / "train_log.jsonl") if r["split"] == "train"]
    assert steps == list(range(1, steps[-1] + 1))


def test_checkpoints_without_a_record_are_not_resumed(setup: Path, caplog: pytest.LogCaptureFixture) -> None:
    exp = setup / "exp/norecord"
    assert run_train(setup, "exp/norecord", "trainer.max_steps=2") == 0
    (exp / "train_inputs.json").unlink()  # as an exp dir trained before records existed
    with caplog.at_level(logging.ERROR):
        assert run_train(setup, "exp/norecord", "trainer.max_steps=2") == 1
    assert "has checkpoints but no record of what they were trained from" in caplog.text
    assert run_train(setup, "exp/norecord", "trainer.max_steps=2", "--force") == 0
    assert (exp / "train_inputs.json").is_file()


def test_init_from_a_trained_model_with_a_new_output_layer(setup: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Fine-tuning a trained CTC model's encoder under a new head for another vocabulary (a
    SentencePiece AM from the character AM): the encoder starts as the trained one's, the head
    fresh; the init file is part of the record; a head that does not fit is named."""
    from asrllm.models.conformer import ConformerConfig
    from asrllm.models.ctc_model import CTCModel, CTCModelConfig
    from asrllm.train.checkpoint import init_from_model, save_model_state

    encoder = ConformerConfig(num_layers=1, d_model=16, num_heads=2, ff_dim=32)
    torch.manual_seed(0)
    trained = CTCModel(CTCModelConfig(vocab_size=12, encoder=encoder))
    save_model_state(trained.state_dict(), setup / "trained.safetensors")
    torch.manual_seed(1)
    new = CTCModel(CTCModelConfig(vocab_size=40, encoder=encoder))
    head_before = {n: p.clone() for n, p in new.state_dict().items() if n.startswith("heads.")}
    with pytest.raises(ValueError, match=r"other shapes: heads\.\d+\.proj\.bias \(12,\) vs \(40,\).*init\.exclude"):
        init_from_model(new, setup / "trained.safetensors", [])
    copied, excluded = init_from_model(new, setup / "trained.safetensors", ["heads.*"])
    assert excluded == len(head_before) and copied == len(new.state_dict()) - excluded
    for name, value in new.state_dict().items():
        expected = head_before[name] if name in head_before else trained.state_dict()[name]
        assert torch.equal(value, expected), name

    init = ("init.from_model=" + str(setup / "exp/full/model_init.safetensors"), "init.exclude=[heads.*]")
    full = final_params(setup / "exp/full") if (setup / "exp/full/checkpoints").exists() else None
    if full is None:
        assert run_train(setup, "exp/full", "optim.total_steps=15") == 0
        full = final_params(setup / "exp/full")
    save_model_state(full, setup / "exp/full/model_init.safetensors")
    with caplog.at_level(logging.INFO):
        assert run_train(setup, "exp/init", "trainer.max_epochs=1", *init) == 0
    assert "initialised" in caplog.text and "left as built" in caplog.text
    record = json.loads((setup / "exp/init/train_inputs.json").read_text())["inputs"]
    assert record["config.init.from_model@content"].startswith("sha256:")
    assert not any(k.startswith("config.init.") for k in json.loads(
        (setup / "exp/full/train_inputs.json").read_text())["inputs"])  # random init: no init keys
    save_model_state({k: v + 1 for k, v in full.items()}, setup / "exp/full/model_init.safetensors")
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert run_train(setup, "exp/init", "trainer.max_epochs=1", *init) == 1
    assert "config.init.from_model@content" in caplog.text
