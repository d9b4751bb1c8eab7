"""The switchable speed-ups of the fused CTC search (issue 8, capability 7) against their references.

- Frame collapse (blank runs, the authors' soft collapse): CTC greedy output is unchanged; the
  beam search on collapsed frames equals the beam search on the kept frames written out by hand;
  thresholds off = the original search; a blank between equal labels is never dropped.
- LM distribution caching: the same scores with and without.
"""

from __future__ import annotations

import pytest
import torch

from asrllm.search import SearchConfig, build_search
from asrllm.search.frames import collapse_frames
from asrllm.search.greedy import ctc_greedy
from asrllm.search.time_sync import CTCTimeSyncSearch


def peaky(seed: int, B: int = 3, T: int = 40, V: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """CTC-like outputs: mostly confident blanks, runs of confident labels, some uncertain frames."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g)
    best = torch.randint(0, V, (B, T), generator=g)
    best = torch.where(torch.rand(B, T, generator=g) < 0.6, 0, best)
    best = torch.repeat_interleave(best[:, ::2], 2, dim=1)[:, :T]  # runs of two
    logits.scatter_add_(2, best[..., None], torch.rand(B, T, 1, generator=g) * 12)
    return logits.log_softmax(-1), torch.tensor([T, T - 7, T - 15][:B])


@pytest.mark.parametrize(("blank", "label"), [(0.95, None), (None, 0.8), (0.95, 0.8)])
def test_greedy_output_is_unchanged_and_frames_are_dropped(blank: float | None, label: float | None) -> None:
    lp, lens = peaky(0)
    out, new_lens = collapse_frames(lp, lens, 0, blank, label)
    assert bool((new_lens < lens).all()), "the test data must have frames to drop"
    assert ctc_greedy(out, new_lens, 0) == ctc_greedy(lp, lens, 0)


def test_beam_search_on_collapsed_frames_equals_search_on_the_kept_frames() -> None:
    lp, lens = peaky(1)
    search = CTCTimeSyncSearch(0, beam=6, nbest=4, blank_collapse=0.95, soft_collapse=0.8)
    plain = CTCTimeSyncSearch(0, beam=6, nbest=4)
    got = search(lp, lens)
    for b in range(lp.shape[0]):
        kept = [lp[b, 0]]  # the reference, frame by frame: keep t unless it repeats a confident t-1
        for t in range(1, int(lens[b])):
            p_prev, a_prev = lp[b, t - 1].exp().max(dim=0)
            p, a = lp[b, t].exp().max(dim=0)
            threshold = 0.95 if int(a) == 0 else 0.8
            if not (int(a) == int(a_prev) and float(p) >= threshold and float(p_prev) >= threshold):
                kept.append(lp[b, t])
        ref = plain(torch.stack(kept)[None], torch.tensor([len(kept)]))[0]
        assert [(e.tokens, e.score) for e in got[b]] == [(e.tokens, e.score) for e in ref]
    off = CTCTimeSyncSearch(0, beam=6, nbest=4, blank_collapse=None, soft_collapse=None)(lp, lens)
    assert [[(e.tokens, e.score) for e in u] for u in off] == [[(e.tokens, e.score) for e in u] for u in plain(lp, lens)]


def test_a_blank_between_equal_labels_is_kept() -> None:
    p = torch.tensor([[0.01, 0.98, 0.01], [0.98, 0.01, 0.01], [0.01, 0.98, 0.01], [0.98, 0.01, 0.01]])  # a ε a ε
    out, lens = collapse_frames(p.log()[None], torch.tensor([4]), 0, 0.5, 0.5)
    assert int(lens[0]) == 4 and ctc_greedy(out, lens, 0) == [[1, 1]]


def test_config_wiring_and_validation() -> None:
    search = build_search(SearchConfig(blank_collapse=0.999, soft_collapse=0.8), blank_id=0)
    assert search.blank_collapse == 0.999 and search.soft_collapse == 0.8
    with pytest.raises(ValueError, match=r"soft_collapse=1.5 is a probability threshold in \(0, 1\]"):
        SearchConfig(soft_collapse=1.5)


def test_lm_distribution_caching_changes_no_score() -> None:
    from asrllm.data.tokenizer import CharTokenizer
    from asrllm.models.llm import LLMConfig, build_llm
    from asrllm.search.fusion import DelayedFusion, LabelWiseFusion
    from asrllm.search.lm_scorer import LMScorer

    torch.manual_seed(0)
    tok = CharTokenizer(list("AB"))
    lm = build_llm(LLMConfig(arch=dict(model_type="llama", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                       num_attention_heads=2)), label_tokenizer=tok).eval()
    lp = (torch.randn(2, 20, tok.vocab_size, generator=torch.Generator().manual_seed(1)) * 2).log_softmax(-1)
    lens = torch.tensor([20, 14])
    for make in (lambda s: LabelWiseFusion({"lm": s}, {"lm": 0.6}),
                 lambda s: DelayedFusion({"lm": s}, {"lm": 0.6}, None, "every", 3)):
        results = []
        for cache in (True, False):
            fusion = make(LMScorer(lm, temperature=1.3, cache_distributions=cache))
            out = CTCTimeSyncSearch(tok.blank_id, beam=4, nbest=4, token_prune_topk=None, fusion=fusion)(lp, lens)
            results.append([[(e.tokens, round(e.score, 5)) for e in u] for u in out])
        assert results[0] == results[1]
