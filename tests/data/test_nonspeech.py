"""Noise-only training utterances (`data.nonspeech`): their transcript trains on an empty label
sequence. Each model's loss on such an utterance against an independent reference: CTC = the blank
path's log-probability, a speech LLM = log p(EOS | prompt, speech), an AED = its decoder's EOS
after SOS; batched = one utterance at a time; training records unchanged while the option is off."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from asrllm.data.batch import Batch
from asrllm.data.datadir import Utterance, read_datadir, write_datadir
from asrllm.data.loader import AudioData, AudioDataConfig, encode_text
from asrllm.models.aed import AED, AEDConfig, TransformerDecoderConfig
from asrllm.models.conformer import ConformerConfig
from asrllm.models.ctc_model import CTCModel, CTCModelConfig
from asrllm.models.llm import LLMConfig
from asrllm.models.speech_llm import PromptConfig, SpeechLLM, SpeechLLMConfig
from asrllm.testing.dummies import dummy_batch, make_char_tokenizer, make_datadir
from asrllm.train.experiment import TrainExperimentConfig, training_inputs

ENCODER = ConformerConfig(num_layers=1, d_model=16, num_heads=2, ff_dim=32)
NOISE = "<noise>"


def with_empty_target(batch: Batch, b: int) -> Batch:
    """`batch` with utterance b's transcript emptied (as `nonspeech` encodes it)."""
    lens = batch.target_lens.clone()
    lens[b] = 0
    targets = batch.targets.masked_fill(torch.arange(batch.targets.shape[1]) >= lens[:, None], 0)
    return Batch(batch.ids, batch.audio, batch.audio_lens, targets, lens, batch.texts)


def one(batch: Batch, b: int) -> Batch:
    S, L = int(batch.audio_lens[b]), int(batch.target_lens[b])
    return Batch(batch.ids[b : b + 1], batch.audio[b : b + 1, :S], batch.audio_lens[b : b + 1],
                 batch.targets[b : b + 1, :L], batch.target_lens[b : b + 1], batch.texts[b : b + 1])


def batched_equals_single(model, batch: Batch) -> list[float]:
    """The per-utterance losses, asserting that their sum is the batch's loss."""
    with torch.no_grad():
        total = model(batch)[0].item()
        singles = [model(one(batch, b))[0].item() for b in range(len(batch))]
    assert total == pytest.approx(sum(singles), rel=1e-4, abs=1e-4)
    return singles


def test_loader_gives_nonspeech_transcripts_no_labels(tmp_path: Path) -> None:
    utts = make_datadir_utts(tmp_path)
    tok = make_char_tokenizer(tmp_path / "data", tmp_path / "tok")
    assert encode_text(tok, "n", NOISE, (NOISE,)) == [] and encode_text(tok, "n", NOISE) != []
    model = CTCModel(CTCModelConfig(vocab_size=tok.vocab_size, encoder=ENCODER)).eval()
    data = AudioData(str(tmp_path / "tok"))
    cfg = AudioDataConfig(max_batch_seconds=100.0, nonspeech=(NOISE,), unknown_chars="error")  # "<" is no label
    lens = {u: n for batch in data.loader(utts, model, cfg, train=False, rank=0, world_size=1).epoch_batches(0)
            for u, n in zip(batch.ids, batch.target_lens.tolist())}
    assert lens["noise-0"] == 0 and all(n > 0 for u, n in lens.items() if u != "noise-0")
    with pytest.raises(ValueError, match="unknown|vocabulary|<unk>"):  # without the option, "<noise>" is text
        data.loader(utts, model, AudioDataConfig(unknown_chars="error"), train=False, rank=0, world_size=1)


def make_datadir_utts(tmp_path: Path) -> list[Utterance]:
    utts = make_datadir(tmp_path / "data", 3, seed=0, min_duration=0.5, max_duration=1.0)
    noise = Utterance("noise-0", utts[0].audio, utts[0].duration, NOISE, "n")
    write_datadir(tmp_path / "data_noise", [*utts, noise])
    return read_datadir(tmp_path / "data_noise")


def test_ctc_loss_of_no_labels_is_the_blank_path() -> None:
    torch.manual_seed(0)
    model = CTCModel(CTCModelConfig(vocab_size=8, encoder=ENCODER)).eval()
    batch = with_empty_target(dummy_batch(3, vocab_size=8, max_samples=4000, seed=1), 1)
    losses = batched_equals_single(model, batch)
    with torch.no_grad():
        log_probs, lens = model.log_probs(batch.audio[1:2, : batch.audio_lens[1]], batch.audio_lens[1:2])
    assert losses[1] == pytest.approx(-log_probs[0, : int(lens[0]), model.cfg.blank_id].sum().item(), rel=1e-5)


def test_speech_llm_loss_of_no_labels_is_eos_after_the_prompt(tmp_path: Path) -> None:
    make_datadir(tmp_path / "data", 3, seed=0)
    make_char_tokenizer(tmp_path / "data", tmp_path / "tok")
    arch = dict(model_type="llama", hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=1)
    torch.manual_seed(0)
    model = SpeechLLM(SpeechLLMConfig(llm=LLMConfig(arch=arch), label_unit="am_tokenizer",
                                      am_tokenizer=str(tmp_path / "tok"), encoder=ENCODER,
                                      prompt=PromptConfig("A ", " B"), aux_ctc_weight=0.0)).eval()
    V = model.llm.vocab_size
    batch = with_empty_target(dummy_batch(3, vocab_size=V, max_samples=4000, seed=2), 0)
    losses = batched_equals_single(model, batch)
    with torch.no_grad():  # the KV-cached scoring path: the distribution of the first label
        speech, speech_lens, _, _ = model.encode(batch.audio[:1, : batch.audio_lens[0]], batch.audio_lens[:1])
        first = model.llm.next_log_probs(model.context(speech, speech_lens))[0]  # (V,)
    assert losses[0] == pytest.approx(-first[model.eos_id].item(), rel=1e-4)


def test_aed_loss_of_no_labels_is_finite_and_batched_equals_single() -> None:
    torch.manual_seed(0)
    model = AED(AEDConfig(vocab_size=8, encoder=ENCODER, ctc_weight=0.3,
                          decoder=TransformerDecoderConfig(num_layers=1, d_model=16, num_heads=2, ff_dim=32,
                                                           dropout=0.0))).eval()
    batch = with_empty_target(dummy_batch(3, vocab_size=8, max_samples=4000, seed=3), 2)
    losses = batched_equals_single(model, batch)
    assert all(torch.isfinite(torch.tensor(losses)))


def test_training_records_hold_nonspeech_only_when_set(tmp_path: Path) -> None:
    make_datadir(tmp_path / "data", 2, seed=0)
    off = training_inputs(TrainExperimentConfig("ctc", {}, data={"nonspeech": ()}), tmp_path / "data", None, None)
    on = training_inputs(TrainExperimentConfig("ctc", {}, data={"nonspeech": (NOISE,)}), tmp_path / "data", None, None)
    assert "config.data.nonspeech" not in off and list(on["config.data.nonspeech"]) == [NOISE]
