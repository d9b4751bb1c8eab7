"""The FusionSchedule hooks of CTCTimeSyncSearch, with a toy bigram LM as the label scorer.

With a beam that holds every prefix, label-wise fusion (hook a) must give every label sequence
exactly log P_ctc(seq) + w·log P_lm(seq) (+ EOS from hook c), and a delayed schedule that adds the
same scores after pruning (hook b) must end with the same scores.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import Tensor

from asrllm.batched import BatchedState
from asrllm.search.fusion import FusionSchedule, LabelWiseFusion
from asrllm.search.scorer import EncoderOutput, Scorer
from asrllm.search.time_sync import CTCTimeSyncSearch

V, T, BLANK, BOS = 4, 5, 0, 0  # the bigram uses the blank id as BOS/EOS context


def bigram(seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(V, V, generator=g, dtype=torch.float64).log_softmax(-1)  # (prev, next)


def prev_label(tokens: Tensor, lengths: Tensor) -> Tensor:
    """Last label of each prefix, BOS for the empty one. tokens (N, L), lengths (N,) -> (N,)."""
    idx = (lengths - 1).clamp(min=0)[:, None]
    return torch.where(lengths > 0, tokens.gather(1, idx)[:, 0], torch.full_like(lengths, BOS))


class LabelWiseBigram(FusionSchedule):
    def __init__(self, table: Tensor, weight: float) -> None:
        super().__init__()
        self.table = table
        self.weights = {"lm": weight}

    def extend(
        self, tokens: Tensor, lengths: Tensor, cand: Tensor, state: BatchedState | None
    ) -> tuple[dict[str, Tensor], BatchedState | None]:
        return {"lm": self.table[prev_label(tokens, lengths)].gather(1, cand)}, state  # (N, S)

    def final(self, tokens: Tensor, lengths: Tensor, state: BatchedState | None) -> dict[str, Tensor]:
        return {"lm": self.table[prev_label(tokens, lengths), BOS]}  # EOS


class DelayedBigram(LabelWiseBigram):
    def extend(
        self, tokens: Tensor, lengths: Tensor, cand: Tensor, state: BatchedState | None
    ) -> tuple[dict[str, Tensor], BatchedState | None]:
        return {}, state

    def after_prune(
        self, tokens: Tensor, lengths: Tensor, is_new: Tensor, active: Tensor, alive: Tensor, frame: int,
        state: BatchedState | None,
    ) -> tuple[dict[str, Tensor], BatchedState | None]:
        new = prev_label(tokens, lengths)
        before = prev_label(tokens, (lengths - 1).clamp(min=0))
        before = torch.where(lengths > 1, before, torch.full_like(before, BOS))
        score = self.table[before, new]
        return {"lm": torch.where(is_new, score, torch.zeros_like(score))}, state


def brute_force(lp: Tensor, table: Tensor, weight: float) -> dict[tuple[int, ...], tuple[float, float]]:
    """seq -> (log P_ctc, log P_lm incl. EOS)."""
    probs: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(V), repeat=T):
        seq, prev = [], None
        for c in path:
            if c != prev and c != BLANK:
                seq.append(c)
            prev = c
        p = math.exp(sum(float(lp[t, c]) for t, c in enumerate(path)))
        probs[tuple(seq)] = probs.get(tuple(seq), 0.0) + p
    out = {}
    for seq, p in probs.items():
        ctx = (BOS, *seq, BOS)
        out[seq] = (math.log(p), sum(float(table[a, b]) for a, b in zip(ctx, ctx[1:])))
    return out


@pytest.mark.parametrize("schedule", [LabelWiseBigram, DelayedBigram])
def test_fused_scores_are_exact_with_exhaustive_beam(schedule: type[LabelWiseBigram]) -> None:
    lp = torch.randn(1, T, V, generator=torch.Generator().manual_seed(0), dtype=torch.float64).log_softmax(-1)
    table, w = bigram(1), 0.7
    K = sum((V - 1) ** n for n in range(T + 1))
    nbest = CTCTimeSyncSearch(BLANK, beam=K, nbest=K, token_prune_topk=None, fusion=schedule(table, w))(
        lp, torch.tensor([T])
    )[0]
    exact = brute_force(lp[0], table, w)
    assert len(nbest) == len(exact)
    best = max(exact, key=lambda s: exact[s][0] + w * exact[s][1])
    assert tuple(nbest[0].tokens) == best
    for e in nbest:
        ctc, lm = exact[tuple(e.tokens)]
        assert e.scores["ctc"] == pytest.approx(ctc, abs=1e-9)
        assert e.scores["lm"] == pytest.approx(lm, abs=1e-9)
        assert e.score == pytest.approx(ctc + w * lm, abs=1e-9)
    assert [e.score for e in nbest] == sorted((e.score for e in nbest), reverse=True)


def test_weight_zero_fusion_changes_no_ranking() -> None:
    lp = torch.randn(2, 30, V, generator=torch.Generator().manual_seed(2)).log_softmax(-1)
    lens = torch.tensor([30, 21])
    plain = CTCTimeSyncSearch(BLANK, beam=5, nbest=5)(lp, lens)
    fused = CTCTimeSyncSearch(BLANK, beam=5, nbest=5, fusion=LabelWiseBigram(bigram(3).float(), 0.0))(lp, lens)
    for a, b in zip(plain, fused):
        assert [e.tokens for e in a] == [e.tokens for e in b]
        assert [e.score for e in a] == [e.score for e in b]


@pytest.mark.parametrize("hook", ["extend", "after_prune", "final"])
def test_a_score_name_without_weight_is_an_error_in_every_hook(hook: str) -> None:
    """A schedule that returns a misspelt scorer name must fail, not count 0 (in any hook)."""
    table = bigram(0)

    class Misspelt(LabelWiseBigram):
        def extend(self, tokens, lengths, cand, state):  # type: ignore[no-untyped-def]
            scores, state = super().extend(tokens, lengths, cand, state)
            return ({"lmm": scores["lm"]} if hook == "extend" else scores), state

        def after_prune(self, tokens, lengths, is_new, active, alive, frame, state):  # type: ignore[no-untyped-def]
            zeros = torch.zeros(tokens.shape[0], dtype=torch.float64)
            return ({"lmm": zeros} if hook == "after_prune" else {}), state

        def final(self, tokens, lengths, state):  # type: ignore[no-untyped-def]
            return {"lmm": super().final(tokens, lengths, state)["lm"]} if hook == "final" else {}

    lp = torch.randn(1, T, V, dtype=torch.float64).log_softmax(-1)
    search = CTCTimeSyncSearch(blank_id=BLANK, beam=4, fusion=Misspelt(table, 0.5))
    with pytest.raises(ValueError, match=r"fusion scores \['lmm'\] have no weight \(known scorers: lm\)"):
        search(lp, torch.tensor([T]))


class BigramScorer(Scorer):
    """The bigram table as a full-vocabulary `Scorer` (BOS/EOS context = the blank id)."""

    def __init__(self, table: Tensor) -> None:
        self.table = table

    def vocab_size(self) -> int:
        return V

    def init_state(self, batch_size: int, beam: int, enc: EncoderOutput | None) -> None:
        return None

    def score(self, tokens: Tensor, lengths: Tensor, state: BatchedState | None) -> tuple[Tensor, None]:
        return self.table[prev_label(tokens, lengths)], None  # (N, V)

    def final_score(self, tokens: Tensor, lengths: Tensor, state: BatchedState | None) -> Tensor:
        return self.table[prev_label(tokens, lengths), BOS]


def test_label_wise_schedule_over_a_named_scorer_is_exact() -> None:
    """LabelWiseFusion (the schedule build.py wires) over a `Scorer`: exhaustive beam = brute force."""
    lp = torch.randn(1, T, V, generator=torch.Generator().manual_seed(2), dtype=torch.float64).log_softmax(-1)
    table, w = bigram(3), 0.6
    K = sum((V - 1) ** n for n in range(T + 1))
    fusion = LabelWiseFusion({"lm": BigramScorer(table)}, {"lm": w})
    nbest = CTCTimeSyncSearch(BLANK, beam=K, nbest=K, token_prune_topk=None, fusion=fusion)(lp, torch.tensor([T]))[0]
    exact = brute_force(lp[0], table, w)
    assert len(nbest) == len(exact)
    assert tuple(nbest[0].tokens) == max(exact, key=lambda s: exact[s][0] + w * exact[s][1])
    for e in nbest:
        ctc, lm = exact[tuple(e.tokens)]
        assert e.scores["lm"] == pytest.approx(lm, abs=1e-9) and e.score == pytest.approx(ctc + w * lm, abs=1e-9)


def test_label_wise_weight_zero_is_plain_ctc_and_batched_equals_single() -> None:
    g = torch.Generator().manual_seed(4)
    lp = torch.randn(3, 8, V, generator=g, dtype=torch.float64).log_softmax(-1)
    lens = torch.tensor([8, 5, 7])
    plain = CTCTimeSyncSearch(BLANK, beam=3, nbest=3)(lp, lens)
    zero = LabelWiseFusion({"lm": BigramScorer(bigram(5))}, {"lm": 0.0})
    fused0 = CTCTimeSyncSearch(BLANK, beam=3, nbest=3, fusion=zero)(lp, lens)
    assert [[(e.tokens, e.scores["ctc"]) for e in u] for u in plain] == [[(e.tokens, e.scores["ctc"]) for e in u] for u in fused0]
    fusion = LabelWiseFusion({"lm": BigramScorer(bigram(5))}, {"lm": 0.8})
    batched = CTCTimeSyncSearch(BLANK, beam=3, nbest=3, fusion=fusion)(lp, lens)
    for b in range(3):
        single = CTCTimeSyncSearch(BLANK, beam=3, nbest=3, fusion=fusion)(lp[b : b + 1, : int(lens[b])], lens[b : b + 1])[0]
        assert [e.tokens for e in single] == [e.tokens for e in batched[b]]
        assert [e.score for e in single] == pytest.approx([e.score for e in batched[b]], abs=1e-9)


def test_label_wise_llm_scores_equal_a_full_forward_of_each_hypothesis() -> None:
    """With an LLM (LMScorer, KV cache advanced lazily, reordered after every pruning, prefixes
    recombined), each final hypothesis' accumulated LM score equals log p(labels, EOS) of a full
    forward pass over its labels: recombined prefixes carry the state of the prefix built directly."""
    from asrllm.data.tokenizer import CharTokenizer
    from asrllm.models.llm import LLMConfig, build_llm
    from asrllm.search.lm_scorer import LMScorer

    torch.manual_seed(0)
    tok = CharTokenizer(list("AB"))
    lm = build_llm(LLMConfig(arch=dict(model_type="llama", hidden_size=16, intermediate_size=32,
                                       num_hidden_layers=1, num_attention_heads=2)), label_tokenizer=tok).eval()
    scorer = LMScorer(lm)
    vocab = scorer.vocab_size()
    lp = torch.randn(2, 9, vocab, generator=torch.Generator().manual_seed(6)).log_softmax(-1)
    lens = torch.tensor([9, 6])
    fusion = LabelWiseFusion({"lm": scorer}, {"lm": 0.5})
    out = CTCTimeSyncSearch(tok.blank_id, beam=4, nbest=4, token_prune_topk=None, fusion=fusion)(lp, lens)
    entries = [e for u in out for e in u]
    length = max(len(e.tokens) for e in entries)
    tokens = torch.tensor([e.tokens + [0] * (length - len(e.tokens)) for e in entries])
    direct = scorer.score_sequence(tokens, torch.tensor([len(e.tokens) for e in entries]))
    assert [e.scores["lm"] for e in entries] == pytest.approx(direct.tolist(), abs=1e-4)
