"""CTC label prior: batched estimation = an independent per-utterance computation, and the CLI's
file, record and re-run rule."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from asrllm.bin.estimate_prior import main as estimate_main
from asrllm.data.audio import read_audio
from asrllm.data.datadir import read_datadir
from asrllm.data.loader import inference_batches
from asrllm.models.ctc_prior import estimate_ctc_prior, load_prior
from asrllm.models.trained import load_trained_model
from asrllm.search.fusion import LabelPrior
from asrllm.testing.dummies import make_ctc_exp_dir, make_datadir


@pytest.fixture()
def setup(tmp_path: Path) -> Path:
    make_datadir(tmp_path / "data/dev", 5, seed=0, min_duration=0.3, max_duration=1.2)
    make_ctc_exp_dir(tmp_path / "exp", seed=0)
    return tmp_path


def test_batched_estimate_equals_per_utterance_mean(setup: Path) -> None:
    model = load_trained_model(setup / "exp", "average", torch.device("cpu"))
    utts = read_datadir(setup / "data/dev")
    batched, frames = estimate_ctc_prior(model, ((b.audio, b.audio_lens) for b in inference_batches(utts, 100.0)))
    # oracle: each utterance alone (no padding at all), posteriors summed frame by frame
    total, count = torch.zeros_like(batched), 0
    for u in utts:
        audio = torch.from_numpy(read_audio(u.audio, u.id))[None]
        lp, lens = model.log_probs(audio, torch.tensor([audio.shape[1]]))
        total += lp[0, : int(lens[0])].double().exp().sum(0)
        count += int(lens[0])
    assert frames == count and torch.allclose(batched, total / count, atol=1e-6)
    assert batched.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_cli_file_record_and_rerun(setup: Path, caplog: pytest.LogCaptureFixture) -> None:
    args = ["--model-dir", str(setup / "exp"), "--data", str(setup / "data/dev")]
    assert estimate_main(args) == 0
    probs = load_prior(setup / "exp/prior.safetensors")
    prior = LabelPrior.from_probs(probs.float(), blank_id=0, scale=0.5)  # what decoding uses
    assert prior.log_prior[1:].exp().sum().item() == pytest.approx(1.0, abs=1e-5)
    mtime = (setup / "exp/prior.safetensors").stat().st_mtime_ns
    assert estimate_main(args) == 0 and (setup / "exp/prior.safetensors").stat().st_mtime_ns == mtime
    make_ctc_exp_dir(setup / "exp", seed=1)  # retrained
    caplog.set_level(logging.ERROR)
    assert estimate_main(args) == 1 and "differs in: model.weights" in caplog.text
    assert estimate_main([*args, "--force"]) == 0
    assert not torch.equal(load_prior(setup / "exp/prior.safetensors"), probs)
    with pytest.raises(FileNotFoundError, match="estimate it first"):
        load_prior(setup / "exp/none.safetensors")
