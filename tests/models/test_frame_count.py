"""`CTCModel.num_output_frames` equals the frames a real forward pass produces, for many lengths and
both subsamplings; utterances too short for one frame decode to an empty hypothesis with a warning."""

from __future__ import annotations

import logging

import pytest
import torch

from asrllm.models.conformer import ConformerConfig
from asrllm.models.ctc_model import CTCModel, CTCModelConfig
from asrllm.search import SearchConfig, build_search

WIN, HOP = 400, 160  # LogMelConfig defaults


def _model(subsampling: str) -> CTCModel:
    enc = ConformerConfig(num_layers=1, d_model=16, num_heads=2, ff_dim=16, conv_kernel=3, subsampling=subsampling)
    return CTCModel(CTCModelConfig(vocab_size=5, encoder=enc)).eval()


def _lengths() -> list[int]:
    """Sample counts around every frame and subsampling boundary up to ~26 frames, plus a few long ones."""
    near = {WIN + k * HOP + d for k in range(26) for d in (-1, 0, 1)}
    return sorted({*near, 1, 2, WIN - 1, 16000, 16001, 23457})


@pytest.mark.parametrize("subsampling", ["conv4", "conv6"])
def test_num_output_frames_matches_forward_alone_and_in_a_batch(subsampling: str) -> None:
    model = _model(subsampling)
    lengths = _lengths()
    predicted = model.num_output_frames(torch.tensor(lengths)).tolist()
    for s, t in zip(lengths, predicted, strict=True):
        lp, lens = model.log_probs(torch.randn(1, s), torch.tensor([s]))  # alone: T is the tensor's size
        assert lp.shape[1] == t == lens.item(), (subsampling, s, lp.shape, t)
    _, lens = model.log_probs(torch.randn(len(lengths), max(lengths)), torch.tensor(lengths))
    assert lens.tolist() == predicted
    assert predicted[0] == 0 and predicted[lengths.index(WIN)] == 1  # shorter than one window: no frame


def test_too_short_decodes_to_empty_hypothesis_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    model = _model("conv4")
    search = build_search(SearchConfig(method="ctc_greedy", beam=1), blank_id=0, detokenize=lambda ids: str(ids))
    beam = build_search(SearchConfig(method="ctc_time_sync", beam=4, nbest=2), blank_id=0,
                        detokenize=lambda ids: str(ids))
    for lengths, ids in (([320], ["short"]), ([320, 8000], ["short", "long"])):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            lp, lens = model.log_probs(torch.randn(len(lengths), max(lengths)), torch.tensor(lengths), utt_ids=ids)
        assert lens[0] == 0 and lp.dtype == torch.float32
        assert "utterance 'short': 0.020 s (320 samples) is too short for one encoder frame" in caplog.text
        assert "'long'" not in caplog.text
        for s in (search, beam):
            hyps = s(lp, lens, utt_ids=ids)
            assert hyps[0][0].utt_id == "short" and hyps[0][0].tokens == [] and hyps[0][0].text == "[]"
