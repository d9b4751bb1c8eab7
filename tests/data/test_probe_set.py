"""The hallucination probe set (asrllm.data.synth.probe, asrllm.bin.make_probe_set): what each kind
of utterance holds, its reference, that long ones outlast the training set, and the stage rule."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from asrllm.bin import make_probe_set
from asrllm.config import ConfigError
from asrllm.data.datadir import Utterance, read_categories, read_datadir, write_datadir
from asrllm.data.synth.probe import (
    NOISE_REFERENCE,
    ProbeConfig,
    plan_probe_set,
    render_probe_set,
    truncated_text,
)
from asrllm.data.synth.speech import SynthSpeechConfig, design_speakers
from asrllm.eval.normalizer import DEFAULT_NORMALIZER, get_normalizer
from asrllm.testing.dummies import make_datadir

needs_tts = pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None,
                               reason="needs espeak-ng and sox (tools/apt-packages.txt)")
TEXTS = ["THE LORD IS MY SHEPHERD I SHALL NOT WANT", "A FOOL AND HIS MONEY ARE SOON PARTED",
         "WORDS OF ONE KIND AND ANOTHER", "HE MAKETH ME TO LIE DOWN IN GREEN PASTURES"]


def test_truncation_keeps_a_proper_prefix() -> None:
    for text in TEXTS:
        cut = truncated_text(text, 0.5)
        assert text.startswith(cut + " ") and 0 < len(cut.split()) < len(text.split())
    assert get_normalizer(DEFAULT_NORMALIZER)(NOISE_REFERENCE) == ""  # noise: out of WER, counted as silence


@needs_tts
def test_probe_set_cli(tmp_path: Path) -> None:
    test_dir = tmp_path / "data/test"
    train = make_datadir(tmp_path / "data/train", 3, seed=0, min_duration=1.0, max_duration=2.0)
    longest = max(u.duration for u in train)
    write_datadir(test_dir, [Utterance(f"t{i}", train[0].audio, 1.0, t, "s") for i, t in enumerate(TEXTS)])
    (tmp_path / "corpus.yaml").write_text("seed: 3\n")
    (tmp_path / "probe.yaml").write_text("num_noise: 2\nnum_truncated: 2\nnum_long: 1\n")
    args = ["--corpus-config", str(tmp_path / "corpus.yaml"), "--config", str(tmp_path / "probe.yaml"),
            "--test-data", str(test_dir), "--train-data", str(tmp_path / "data/train"),
            "--out-dir", str(tmp_path / "data/probe")]
    assert make_probe_set.main(args) == 0
    utts = {u.id: u for u in read_datadir(tmp_path / "data/probe")}
    assert sorted(utts) == ["probe-long-0000", "probe-noise-0000", "probe-noise-0001", "probe-trunc-0000",
                            "probe-trunc-0001"]
    assert utts["probe-noise-0000"].text == NOISE_REFERENCE and 1.0 <= utts["probe-noise-0000"].duration <= 6.0
    assert utts["probe-trunc-0001"].text == truncated_text(TEXTS[1], 0.5)
    assert read_categories(tmp_path / "data/probe", utts) == {u: u.split("-")[1] for u in utts}  # scored per kind
    long = utts["probe-long-0000"]
    assert long.duration > longest and long.text.startswith(TEXTS[2])  # the sentences after the truncated ones
    stamp = {p: p.stat().st_mtime_ns for p in (tmp_path / "data/probe").rglob("*") if p.is_file()}
    assert make_probe_set.main(args) == 0  # the same inputs: skipped
    assert stamp == {p: p.stat().st_mtime_ns for p in (tmp_path / "data/probe").rglob("*") if p.is_file()}
    (tmp_path / "probe.yaml").write_text("num_noise: 1\nnum_truncated: 2\nnum_long: 1\n")
    assert make_probe_set.main(args) == 1  # other inputs without --force
    assert make_probe_set.main([*args, "--force"]) == 0
    assert len(read_datadir(tmp_path / "data/probe")) == 4
    assert len(list((tmp_path / "data/probe/audio").glob("*.flac"))) == 4


def test_id_prefix_names_noise_only_training_data(tmp_path: Path) -> None:
    speech = SynthSpeechConfig()
    speakers = design_speakers(speech, 0)["test"]
    cfg = ProbeConfig(num_noise=2, num_truncated=0, num_long=0, seed=1, id_prefix="train")
    plans = plan_probe_set(cfg, speech, speakers, TEXTS, 1.0)
    assert [p.utt_id for p in plans] == ["train-noise-0000", "train-noise-0001"]
    utts = render_probe_set(plans, speech, tmp_path)  # noise needs no TTS
    assert {u.speaker for u in utts} == {"train-noise"} and all(u.text == NOISE_REFERENCE for u in utts)
    default = plan_probe_set(ProbeConfig(num_noise=2, num_truncated=0, num_long=0, seed=1), speech, speakers, TEXTS, 1.0)
    assert [p.degradation for p in default] == [p.degradation for p in plans]  # the prefix changes names only
    with pytest.raises(ConfigError, match="id_prefix"):
        ProbeConfig(id_prefix="a-b")
