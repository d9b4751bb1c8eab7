"""Self-speculative decoding (asrllm.search.speculative): CTC greedy drafts verified by the model.

References: the plain greedy search (beam 1), whose output the drafted search must reproduce
exactly whatever the drafts are; the scorer protocol's position-by-position default of
`label_distributions` against `LMScorer`'s one-call version; torch's CTC loss for the joint score."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from asrllm.search import SearchConfig, build_search
from asrllm.search.ctc_prefix import CTCPrefixScorer
from asrllm.search.label_sync import LabelSyncSearch
from asrllm.search.model_scorers import SpeechLLMScorer, encoder_output
from asrllm.search.scorer import Scorer
from asrllm.search.speculative import CTCDraftSearch
from asrllm.testing.dummies import dummy_batch
from tests.search.test_label_sync import char_dir, make_model  # noqa: F401 (char_dir is a fixture)

BLANK = 0  # the char tokenizer's


def peaked(labels: list[int], frames: int, V: int) -> torch.Tensor:
    """(frames, V) CTC log-probs whose greedy path is `labels` (each on one frame, blanks around)."""
    path = [BLANK] * frames
    for i, label in enumerate(labels):
        path[2 * i + 1] = label
    logits = torch.full((frames, V), -4.0)
    logits[torch.arange(frames), torch.tensor(path)] = 4.0
    return logits.log_softmax(-1)


def setup(char_dir):  # noqa: F811 (the fixture's value)
    model = make_model(char_dir, seed=1)
    batch = dummy_batch(3, max_samples=3200, seed=5)
    enc = encoder_output(model, batch.audio, batch.audio_lens)
    greedy = LabelSyncSearch({"speech_llm": SpeechLLMScorer(model)}, {"speech_llm": 1.0}, eos_id=model.eos_id,
                             beam=1, max_length=5, max_length_ratio=None)
    plain = greedy(enc, batch.ids)
    V, frames = model.llm.vocab_size, 14
    # utterance 0: its greedy hypothesis; 1: that without its last label (every label agrees, but the
    # model does not end there); 2: its greedy hypothesis holds a blank-id label (an untrained
    # model), which no CTC path can draft: it is drafted without it and rejected
    drafts = [plain[0][0].tokens, plain[1][0].tokens[:-1], [label for label in plain[2][0].tokens if label != BLANK]]
    assert drafts[1] != plain[1][0].tokens and drafts[2] != plain[2][0].tokens
    ctc = torch.stack([peaked(d, frames, V) for d in drafts])
    enc = dataclasses.replace(enc, ctc_log_probs=ctc, ctc_lens=torch.tensor([frames, frames, 11]))
    return model, batch, enc, greedy, plain


def test_drafts_reproduce_greedy_search_exactly(char_dir):  # noqa: F811
    model, batch, enc, greedy, plain = setup(char_dir)
    for threshold, drafted, accepted in ((0.0, 3, 1), (1.0, 0, 0)):
        search = CTCDraftSearch(greedy, BLANK, threshold)
        out = search(enc, batch.ids)
        assert [e[0].tokens for e in out] == [e[0].tokens for e in plain]
        assert [e[0].score for e in out] == pytest.approx([e[0].score for e in plain], abs=1e-5)
        assert [e[0].utt_id for e in out] == batch.ids
        assert (search.stats.utterances, search.stats.drafted, search.stats.accepted) == (3, drafted, accepted)


def test_joint_scores_of_an_accepted_draft(char_dir):  # noqa: F811
    model, batch, enc, _, plain = setup(char_dir)
    joint = LabelSyncSearch({"speech_llm": SpeechLLMScorer(model), "ctc": CTCPrefixScorer(model.llm.vocab_size, BLANK,
                                                                                           model.eos_id)},
                            {"speech_llm": 0.6, "ctc": 0.4}, eos_id=model.eos_id, beam=2, max_length=5,
                            max_length_ratio=None, length_norm=1.0)
    out = CTCDraftSearch(joint, BLANK, 0.0)(enc, batch.ids)
    draft = plain[0][0]
    assert out[0][0].tokens == draft.tokens
    T = int(enc.ctc_lens[0])
    ctc = -F.ctc_loss(enc.ctc_log_probs[0, :T, None].double(), torch.tensor([draft.tokens]), torch.tensor([T]),
                      torch.tensor([len(draft.tokens)]), blank=BLANK, reduction="sum").item()
    assert out[0][0].scores == pytest.approx({"speech_llm": draft.score, "ctc": ctc}, abs=1e-5)
    total = 0.6 * draft.score + 0.4 * ctc
    assert out[0][0].score == pytest.approx(total / (len(draft.tokens) + 1), abs=1e-5)


def test_one_call_label_distributions_equal_the_position_by_position_default(char_dir):  # noqa: F811
    model, batch, enc, _, _ = setup(char_dir)
    scorer = SpeechLLMScorer(model)
    tokens, lengths = torch.tensor([[4, 5, 3], [5, 0, 0], [3, 4, 0]]), torch.tensor([3, 1, 2])
    fast = scorer.label_distributions(tokens, lengths, scorer.init_state(3, 1, enc))
    slow = Scorer.label_distributions(scorer, tokens, lengths, scorer.init_state(3, 1, enc))
    inside = torch.arange(4) <= lengths[:, None]
    assert fast.shape == (3, 4, model.llm.vocab_size)
    assert torch.allclose(fast[inside], slow[inside], atol=1e-5)


def test_config_wiring_and_errors(char_dir):  # noqa: F811
    model, batch, enc, greedy, plain = setup(char_dir)
    cfg = SearchConfig(method="label_sync", beam=1, max_length=5, max_length_ratio=None, ctc_draft=0.0)
    built = build_search(cfg, blank_id=BLANK, model_scorers={"speech_llm": SpeechLLMScorer(model)}, eos_id=model.eos_id)
    assert isinstance(built, CTCDraftSearch) and built.threshold == 0.0
    assert [e[0].tokens for e in built(enc, batch.ids)] == [e[0].tokens for e in plain]
    with pytest.raises(ValueError, match="no CTC head"):
        build_search(cfg, blank_id=-1, model_scorers={"speech_llm": SpeechLLMScorer(model)}, eos_id=model.eos_id)
    with pytest.raises(ValueError, match="ctc_draft"):
        SearchConfig(method="label_sync", beam=2, nbest=2, ctc_draft=0.5)
    with pytest.raises(ValueError, match="ctc_draft"):
        SearchConfig(method="ctc_time_sync", ctc_draft=0.5)
    with pytest.raises(ValueError, match="threshold"):
        CTCDraftSearch(greedy, BLANK, math.inf)
