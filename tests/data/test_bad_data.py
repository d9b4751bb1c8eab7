"""Bad data is caught before it costs a run (issue 7 §4), and every message names the utterance:
truncated or corrupt audio, utt2dur that disagrees with the audio, utterances too short for the
encoder or with more labels than CTC frames, characters outside the tokenizer, too-long utterances."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import asrllm.data.audio as audio_mod
from asrllm.bin import train
from asrllm.bin.validate_data import main as validate_main
from asrllm.data.audio import AudioError, decoded_durations, read_audio
from asrllm.data.checks import ctc_min_frames, select_trainable, unknown_characters
from asrllm.data.datadir import DataError, Utterance, read_datadir, write_datadir
from asrllm.data.loader import AudioData, AudioDataConfig, BatchLoader
from asrllm.data.sampler import BucketingSampler
from asrllm.data.tokenizer import TokenizerConfig, train_tokenizer
from asrllm.models.conformer import ConformerConfig
from asrllm.models.ctc_model import CTCModel, CTCModelConfig
from asrllm.testing.dummies import make_char_tokenizer, make_datadir, sine_audio, truncate_file, write_audio

SR = 16000


def _tiny_ctc(vocab_size: int) -> CTCModel:
    enc = ConformerConfig(num_layers=1, d_model=16, num_heads=2, ff_dim=16, conv_kernel=3)
    return CTCModel(CTCModelConfig(vocab_size=vocab_size, encoder=enc))


# --- audio: a truncated FLAC keeps its header --------------------------------------------------


def test_truncated_flac_header_lies_and_read_says_so(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "u1.flac", sine_audio(2.0, noise=0.1))
    truncate_file(path, 0.5)
    assert sf.info(str(path)).frames == 2 * SR  # the header still promises the full length
    with pytest.raises(AudioError, match=r"utterance 'u1': .*u1.flac: unreadable audio \(truncated or corrupt\?\)"):
        read_audio(path, "u1")
    [err] = decoded_durations([("u1", path)], num_workers=2)
    assert isinstance(err, AudioError) and err.utt_id == "u1"


def test_fewer_samples_than_the_header_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """libsndfile may also return short instead of failing; soundfile passes that on silently."""
    path = write_audio(tmp_path / "u2.wav", sine_audio(1.0))

    class ShortRead(sf.SoundFile):
        def read(self, *args: object, **kwargs: object) -> np.ndarray:
            return super().read(*args, **kwargs)[:-100]

    monkeypatch.setattr(audio_mod.sf, "SoundFile", ShortRead)
    with pytest.raises(AudioError, match=r"'u2': .*truncated: the header says 16000 samples \(1.000 s\), "
                                         r"only 15900 \(0.994 s\) could be decoded"):
        read_audio(path, "u2")


# --- data dir validation: decode everything, compare utt2dur -----------------------------------


@pytest.fixture()
def datadir(tmp_path: Path) -> tuple[Path, list[Utterance]]:
    utts = make_datadir(tmp_path / "d", 6, seed=2)
    return tmp_path / "d", utts


def test_validation_reports_truncated_audio_and_wrong_utt2dur_together(datadir: tuple[Path, list[Utterance]]) -> None:
    d, utts = datadir
    truncate_file(write_audio(utts[1].audio, sine_audio(3.0, noise=0.1)).with_suffix(".wav"), 0.5)
    flac = write_audio(Path(utts[1].audio).with_suffix(".flac"), sine_audio(3.0, noise=0.1))
    truncate_file(flac, 0.5)
    listed_3s = dataclasses.replace(utts[4], duration=3.0)  # audio is shorter than 1 s
    write_datadir(d, [*utts[:1], dataclasses.replace(utts[1], audio=str(flac)), *utts[2:4], listed_3s, *utts[5:]])
    read_datadir(d)  # the text files alone are fine
    with pytest.raises(DataError) as e:
        read_datadir(d, validate_audio=True, num_workers=2)
    msg = str(e.value)
    assert "2 problem(s) found by decoding every audio file" in msg, msg
    assert f"wav.scp:2: utterance '{utts[1].id}': {flac}: unreadable audio (truncated or corrupt?)" in msg, msg
    assert (f"utt2dur:5: utterance '{utts[4].id}': utt2dur says 3.000 s, but {utts[4].audio} decodes to "
            f"{utts[4].duration:.3f} s") in msg, msg
    assert "remove the utterances (their lines in wav.scp, text, utt2spk and utt2dur)" in msg


def test_utt2dur_tolerance(datadir: tuple[Path, list[Utterance]]) -> None:
    d, utts = datadir
    near = [dataclasses.replace(u, duration=u.duration + 0.009) for u in utts]  # within 10 ms
    write_datadir(d, near)
    assert read_datadir(d, validate_audio=True, num_workers=1) == near
    write_datadir(d, [*near[:-1], dataclasses.replace(utts[-1], duration=utts[-1].duration + 0.02)])
    with pytest.raises(DataError, match=f"utt2dur:6: utterance '{utts[-1].id}'"):
        read_datadir(d, validate_audio=True, num_workers=0)


def test_validate_data_cli(datadir: tuple[Path, list[Utterance]], tmp_path: Path,
                           caplog: pytest.LogCaptureFixture) -> None:
    d, utts = datadir
    assert validate_main(["--data", str(d), "--num-workers", "2"]) == 0
    tok_dir = tmp_path / "tok"
    make_char_tokenizer(d, tok_dir)
    assert validate_main(["--data", str(d), "--tokenizer", str(tok_dir)]) == 0
    write_datadir(d, [dataclasses.replace(utts[0], text="ÜBER ALLES"), *utts[1:]])
    assert validate_main(["--data", str(d), "--tokenizer", str(tok_dir)]) == 1
    assert f"'Ü' (U+00DC) in 1 (e.g. '{utts[0].id}')" in caplog.text
    Path(utts[2].audio).unlink()
    caplog.clear()
    assert validate_main(["--data", str(d)]) == 1
    assert f"utterance '{utts[2].id}'" in caplog.text and "does not exist" in caplog.text


def test_audio_that_breaks_after_validation_names_utterance_and_the_way_out(
        datadir: tuple[Path, list[Utterance]], tmp_path: Path) -> None:
    d, utts = datadir
    tok = make_char_tokenizer(d, tmp_path / "tok")
    flac = write_audio(tmp_path / "late.flac", sine_audio(1.0, noise=0.1))
    broken = [dataclasses.replace(utts[0], audio=str(truncate_file(flac, 0.5))), *utts[1:]]
    loader = BatchLoader(broken, tok, BucketingSampler([u.duration for u in broken], 100.0))
    with pytest.raises(AudioError) as e:
        list(loader.epoch_batches(0))
    msg = str(e.value)
    assert msg.startswith(f"utterance '{utts[0].id}': {flac}: unreadable audio"), msg
    assert f"Remove utterance '{utts[0].id}' from its data dir (its lines in wav.scp, text, utt2spk and utt2dur)" in msg
    assert "python -m asrllm.bin.validate_data" in msg


# --- filtering before training: too short, too many labels, too long ---------------------------


def test_ctc_min_frames() -> None:
    assert ctc_min_frames([]) == 0
    assert ctc_min_frames([3, 4, 5]) == 3
    assert ctc_min_frames([3, 3, 3]) == 5  # a blank between each repeated pair


def test_select_trainable_reasons() -> None:
    model = _tiny_ctc(8)
    u = Utterance("x", "/x.wav", 1.0, "A", "s")
    utts = [dataclasses.replace(u, id="ok"), dataclasses.replace(u, id="short", duration=0.02),
            dataclasses.replace(u, id="dense", duration=0.1), dataclasses.replace(u, id="long", duration=40.0)]
    targets = [[3, 4], [3], [3] * 4, [3]]  # 0.1 s: 8 log-mel frames -> 2 encoder frames < 7 needed
    kept, dropped = select_trainable(utts, targets, model.num_output_frames, max_duration=30.0)
    assert kept == [0]
    assert [(f.id, f.reason) for f in dropped] == [("short", "too_short"), ("dense", "too_many_labels"),
                                                  ("long", "too_long")]
    assert dropped[0].detail == "0.020 s (320 samples) gives 0 encoder frames"
    assert dropped[1].detail == "4 labels need 7 CTC frames, 0.100 s gives 2 encoder frames"
    assert dropped[2].detail == "40.000 s > max_duration=30.0 s"


@pytest.fixture()
def am_corpus(tmp_path: Path) -> tuple[Path, Path, list[Utterance]]:
    """A data dir with one utterance of 0.02 s, one of 0.15 s with a long transcript, one of 3 s."""
    d = tmp_path / "data"
    utts = make_datadir(d, 8, seed=3, min_duration=2.0, max_duration=2.4)
    extra = [
        Utterance("tiny", str(write_audio(d / "audio/tiny.wav", sine_audio(0.02))), 0.02, "A", "s"),
        Utterance("dense", str(write_audio(d / "audio/dense.wav", sine_audio(0.15))), 0.15, "THE QUICK BROWN", "s"),
        Utterance("long", str(write_audio(d / "audio/long.wav", sine_audio(3.0))), 3.0, "A DOG", "s"),
    ]
    write_datadir(d, [*utts, *extra])
    make_char_tokenizer(d, tmp_path / "tok")
    return d, tmp_path / "tok", sorted([*utts, *extra], key=lambda u: u.id)


def test_audio_data_filters_with_count_and_file(am_corpus: tuple[Path, Path, list[Utterance]], tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    d, tok_dir, utts = am_corpus
    data = AudioData(str(tok_dir))
    model = _tiny_ctc(data.tokenizer.vocab_size)
    cfg = AudioDataConfig(max_batch_seconds=5.0, num_buckets=2, max_duration=2.5)
    with caplog.at_level(logging.WARNING):
        loader = data.loader(data.read(str(d)), model, cfg, True, 0, 1, report_dir=tmp_path)
    assert ("training data: leaving out 3 of 11 utterances: 1 too many labels (e.g. 'dense'); 1 too long "
            "(e.g. 'long'); 1 too short (e.g. 'tiny')") in caplog.text
    lines = (tmp_path / "filtered_utts.train.txt").read_text().splitlines()
    assert [line.split()[:2] for line in lines] == [["dense", "too_many_labels"], ["long", "too_long"],
                                                   ["tiny", "too_short"]]
    seen = [i for b in loader.epoch_batches(0) for i in b.ids]
    assert sorted(seen) == sorted(u.id for u in utts if u.id not in ("tiny", "dense", "long"))
    for batch in loader.epoch_batches(0):  # every utterance left has a finite, positive CTC loss
        loss, count, _ = model(batch)
        assert torch.isfinite(loss) and loss > 0 and count == len(batch)
    valid = data.loader(data.read(str(d)), model, cfg, False, 0, 1, report_dir=tmp_path)  # no max_duration
    assert "long" in {i for b in valid.epoch_batches(0) for i in b.ids}
    assert [x.split()[0] for x in (tmp_path / "filtered_utts.valid.txt").read_text().splitlines()] == ["dense", "tiny"]


def test_tiny_utterance_alone_in_a_batch_trains(am_corpus: tuple[Path, Path, list[Utterance]], tmp_path: Path) -> None:
    """Without the filter, 'tiny' alone in a batch failed with a kernel-size error naming no utterance."""
    d, tok_dir, _ = am_corpus
    (tmp_path / "train.yaml").write_text(
        "model_kind: ctc\n"
        "model: {encoder: {num_layers: 1, d_model: 16, num_heads: 2, ff_dim: 16, conv_kernel: 3}}\n"
        "data: {max_batch_seconds: 3.0, num_buckets: 1}\n"
        "trainer: {max_epochs: 1, progress_bar: false, tensorboard: false, plot: false}\n"
    )
    exp = tmp_path / "exp"
    assert train.main(["--config", str(tmp_path / "train.yaml"), "--train-data", str(d), "--tokenizer",
                       str(tok_dir), "--exp-dir", str(exp)]) == 0
    assert "tiny too_short" in (exp / "filtered_utts.train.txt").read_text()


# --- characters outside the tokenizer ---------------------------------------------------------


def test_unknown_characters_warn_or_error(am_corpus: tuple[Path, Path, list[Utterance]], tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    d, tok_dir, utts = am_corpus
    utts = [u for u in utts if u.id.startswith("dummy")]  # sorted: dummy-0000, ...
    write_datadir(d, [dataclasses.replace(utts[0], text="ÉTÉ À SEA"), dataclasses.replace(utts[1], text="NAÏVE É"),
                      *utts[2:]])
    data = AudioData(str(tok_dir))
    model = _tiny_ctc(data.tokenizer.vocab_size)
    with caplog.at_level(logging.WARNING):
        data.loader(data.read(str(d)), model, AudioDataConfig(), True, 0, 1)
    expected = (f"training data: 2 of 8 utterances contain 3 character(s) outside the tokenizer's vocabulary, "
                f"which become <unk>: 'É' (U+00C9) in 2 (e.g. '{utts[0].id}', '{utts[1].id}'); "
                f"'À' (U+00C0) in 1 (e.g. '{utts[0].id}'); 'Ï' (U+00CF) in 1 (e.g. '{utts[1].id}')")
    assert expected in caplog.text and "data.unknown_chars=error makes this an error" in caplog.text
    with pytest.raises(DataError, match="validation data: 2 of 8 utterances contain 3 character"):
        data.loader(data.read(str(d)), model, AudioDataConfig(unknown_chars="error"), False, 0, 1)


def test_unknown_characters_sentencepiece(tmp_path: Path) -> None:
    (tmp_path / "text").write_text("".join(f"{w} HELLO WORLD\n" for w in ("ABC", "DEF", "GHI", "JKL")) * 20)
    tok = train_tokenizer(TokenizerConfig(kind="sentencepiece", vocab_size=30), tmp_path / "text", tmp_path / "spm")
    found = unknown_characters(tok, [("a", "HELLO WORLD"), ("b", "HELLO ZÖ"), ("c", "Z")])
    assert found.utts == {"b": ["Z", "Ö"], "c": ["Z"]} and found.counts == {"Z": 2, "Ö": 1}


def test_too_long_message_names_ids(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        BucketingSampler([1.0, 50.0, 2.0, 60.0], 100.0, num_buckets=1, max_duration=30.0,
                         ids=["a", "b", "c", "d"])
    assert "leaving out 2 of 4 items longer than max_duration=30: 'b' (50), 'd' (60)" in caplog.text


def test_train_tokenizer_reports_characters_left_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "text").write_text("HELLO WORLD\n" * 400 + "HELLO QÜ\n", encoding="utf-8")
    cfg = TokenizerConfig(kind="sentencepiece", vocab_size=20, character_coverage=0.999, hard_vocab_limit=False)
    with caplog.at_level(logging.WARNING):
        train_tokenizer(cfg, tmp_path / "text", tmp_path / "spm")
    assert f"{tmp_path / 'text'}: 1 of 401 lines contain" in caplog.text
    assert "'text:401'" in caplog.text and "(U+00DC)" in caplog.text
