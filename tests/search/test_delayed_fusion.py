"""Delayed fusion (v1: AM labels; v2: an LM's own tokens of completed words) against independent references.

- Exhaustive beam: every schedule (every 1 / 3 frames, at the end, shortest hypothesis; v1 and v2)
  ends with exactly log P_ctc + λ·log P_lm (incl. EOS) − s·log prior for every label sequence,
  i.e. the scores of brute-force enumeration and of label-wise fusion.
- "At the end only" = CTC beam search followed by rescoring of its final beam with the same LM
  (v1: AM labels; v2: re-tokenised words), score by score.
- Batched = per utterance; an LLM through the KV cache = a full forward of each final hypothesis.
- Fewer LLM calls the rarer the trigger.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from asrllm.data.hf_tokenizer import HFTokenizer
from asrllm.data.tokenizer import CharTokenizer, TokenizerConfig
from asrllm.models.llm import LLMConfig, build_llm
from asrllm.search.fusion import DelayedFusion, LabelPrior, LabelWiseFusion
from asrllm.search.lm_scorer import LMScorer
from asrllm.search.retokenize import WordRetokenizer
from asrllm.search.time_sync import CTCTimeSyncSearch
from tests.search.test_fusion_hooks import BLANK, T, V, BigramScorer, bigram, brute_force

SCHEDULES = [("every", 1), ("every", 3), ("end", 1), ("shortest", 1)]


def exhaustive(lp: Tensor, fusion: DelayedFusion | LabelWiseFusion) -> list:
    K = sum((V - 1) ** n for n in range(T + 1))
    return CTCTimeSyncSearch(BLANK, beam=K, nbest=K, token_prune_topk=None, fusion=fusion)(lp, torch.tensor([T]))[0]


@pytest.mark.parametrize(("trigger", "every"), SCHEDULES)
def test_v1_with_exhaustive_beam_is_exact(trigger: str, every: int) -> None:
    lp = torch.randn(1, T, V, generator=torch.Generator().manual_seed(7), dtype=torch.float64).log_softmax(-1)
    table, w = bigram(8), 0.6
    prior = LabelPrior(log_prior=torch.tensor([0.0, -0.5, -1.5, -2.0], dtype=torch.float64), scale=0.4)
    nbest = exhaustive(lp[:1], DelayedFusion({"lm": BigramScorer(table)}, {"lm": w}, prior, trigger, every))
    label_wise = {tuple(e.tokens): e for e in exhaustive(lp[:1], LabelWiseFusion({"lm": BigramScorer(table)},
                                                                                  {"lm": w}, prior))}
    exact = brute_force(lp[0], table, w)
    assert len(nbest) == len(exact) == len(label_wise)
    for e in nbest:
        ctc, lm = exact[tuple(e.tokens)]
        log_prior = float(sum(prior.log_prior[t] for t in e.tokens))
        assert e.scores["ctc"] == pytest.approx(ctc, abs=1e-9)
        assert e.scores["lm"] == pytest.approx(lm, abs=1e-9)
        assert e.scores["prior"] == pytest.approx(log_prior, abs=1e-9)
        assert e.score == pytest.approx(ctc + w * lm - 0.4 * log_prior, abs=1e-9)
        assert e.scores == pytest.approx(label_wise[tuple(e.tokens)].scores, abs=1e-9)


def _char_lm(tok: CharTokenizer | HFTokenizer, seed: int = 0) -> LMScorer:
    torch.manual_seed(seed)
    lm = build_llm(LLMConfig(arch=dict(model_type="llama", hidden_size=16, intermediate_size=32,
                                       num_hidden_layers=1, num_attention_heads=2)), label_tokenizer=tok)
    return LMScorer(lm.eval())


AM = CharTokenizer(list("AB"))  # ids: 0 blank, 1 unk, 2 sos/eos, 3 ▁, 4 A, 5 B


def _am_log_probs(seed: int, lens: list[int]) -> Tensor:
    """CTC outputs over AM's 6 labels that emit words: ▁ and letters likely, <unk>/<sos> never."""
    g = torch.Generator().manual_seed(seed)
    lp = torch.randn(len(lens), max(lens), AM.vocab_size, generator=g) * 2
    lp[:, :, 1:3] = -30.0
    return lp.log_softmax(-1)


def _rescore(scorer: LMScorer, sequences: list[list[int]]) -> list[float]:
    length = max(1, max(len(s) for s in sequences))
    tokens = torch.tensor([s + [0] * (length - len(s)) for s in sequences])
    return scorer.score_sequence(tokens, torch.tensor([len(s) for s in sequences])).tolist()


def test_at_the_end_equals_rescoring_the_final_ctc_beam_v1() -> None:
    lp, lens = _am_log_probs(1, [14, 9]), torch.tensor([14, 9])
    scorer = _char_lm(AM)
    prior = LabelPrior.from_probs(torch.tensor([0.5, 0.01, 0.01, 0.1, 0.2, 0.18]), blank_id=0, scale=0.3)
    plain = CTCTimeSyncSearch(0, beam=6, nbest=6, token_prune_topk=None, fusion=None)(lp, lens)
    fusion = DelayedFusion({"lm": scorer}, {"lm": 0.7}, prior, trigger="end")
    delayed = CTCTimeSyncSearch(0, beam=6, nbest=6, token_prune_topk=None, fusion=fusion)(lp, lens)
    for p, d in zip(plain, delayed):
        by_tokens = {tuple(e.tokens): e for e in d}
        assert set(by_tokens) == {tuple(e.tokens) for e in p}  # the beam is CTC's own
        lm = _rescore(scorer, [e.tokens for e in p])
        for e, lm_score in zip(p, lm):
            got = by_tokens[tuple(e.tokens)]
            assert got.scores["ctc"] == e.scores["ctc"]
            assert got.scores["lm"] == pytest.approx(lm_score, abs=1e-4)
            assert got.scores["prior"] == pytest.approx(float(prior.log_prior[e.tokens].sum()), abs=1e-5)


@pytest.fixture(scope="module")
def own_tokens(tmp_path_factory: pytest.TempPathFactory) -> HFTokenizer:
    """An LLM's own tokenizer: byte-level BPE over words of A and B (merges across letters)."""
    d = tmp_path_factory.mktemp("bpe")
    g = torch.Generator().manual_seed(0)
    words = ["".join("AB"[int(i)] for i in torch.randint(0, 2, (int(n),), generator=g))
             for n in torch.randint(1, 5, (400,), generator=g)]
    (d / "text").write_text("\n".join(" ".join(words[i : i + 5]) for i in range(0, 400, 5)) + "\n")
    return HFTokenizer.train(TokenizerConfig(kind="hf", vocab_size=280), d / "text", d)


def test_at_the_end_equals_rescoring_the_final_ctc_beam_v2(own_tokens: HFTokenizer) -> None:
    lp, lens = _am_log_probs(2, [16, 11, 13]), torch.tensor([16, 11, 13])
    scorer = _char_lm(own_tokens)
    retok = WordRetokenizer(AM, own_tokens)
    plain = CTCTimeSyncSearch(0, beam=5, nbest=5, token_prune_topk=None)(lp, lens)
    fusion = DelayedFusion({"lm": scorer}, {"lm": 0.5}, None, trigger="end", retokenizers={"lm": retok})
    delayed = CTCTimeSyncSearch(0, beam=5, nbest=5, token_prune_topk=None, fusion=fusion)(lp, lens)
    merged = 0
    for p, d in zip(plain, delayed):
        by_tokens = {tuple(e.tokens): e for e in d}
        assert set(by_tokens) == {tuple(e.tokens) for e in p}
        own = [retok.tokens_of_labels(e.tokens) for e in p]
        merged += sum(len(o) < len(e.tokens) - e.tokens.count(3) for o, e in zip(own, p))  # BPE merged letters
        for e, lm_score in zip(p, _rescore(scorer, own)):
            assert by_tokens[tuple(e.tokens)].scores["lm"] == pytest.approx(lm_score, abs=1e-4)
    assert merged > 0, "the test must exercise LM tokens that are not the AM labels"


@pytest.mark.parametrize(("trigger", "every"), [("every", 1), ("every", 4), ("shortest", 1)])
def test_v2_scores_equal_a_full_forward_and_batched_equals_single(own_tokens: HFTokenizer, trigger: str,
                                                                 every: int) -> None:
    """With pruning: each final hypothesis' LM score is log p(own tokens, EOS) of a full forward
    (recombined prefixes carry consistent LM tokens and caches), and the batch is per utterance."""
    lens = [18, 12, 15]
    lp = _am_log_probs(3, lens)
    scorer = _char_lm(own_tokens, seed=1)
    retok = WordRetokenizer(AM, own_tokens)
    prior = LabelPrior.from_probs(torch.tensor([0.5, 0.01, 0.01, 0.1, 0.2, 0.18]), blank_id=0, scale=0.2)

    def search() -> CTCTimeSyncSearch:
        fusion = DelayedFusion({"lm": scorer}, {"lm": 0.8}, prior, trigger, every, retokenizers={"lm": retok})  # type: ignore[arg-type]
        return CTCTimeSyncSearch(0, beam=4, nbest=4, token_prune_topk=None, fusion=fusion)

    batched = search()(lp, torch.tensor(lens))
    for b, entries in enumerate(batched):
        lm = _rescore(scorer, [retok.tokens_of_labels(e.tokens) for e in entries])
        assert [e.scores["lm"] for e in entries] == pytest.approx(lm, abs=1e-4)
        single = search()(lp[b : b + 1, : lens[b]], torch.tensor(lens[b : b + 1]))[0]
        assert [e.tokens for e in single] == [e.tokens for e in entries]
        assert [e.score for e in single] == pytest.approx([e.score for e in entries], abs=1e-4)


def test_rarer_triggers_make_fewer_llm_calls(own_tokens: HFTokenizer) -> None:
    lens = [40, 33]
    lp = _am_log_probs(4, lens)
    scorer = _char_lm(AM, seed=2)
    calls = {}
    for name, fusion in {
        "label_wise": LabelWiseFusion({"lm": scorer}, {"lm": 0.5}),
        "every1": DelayedFusion({"lm": scorer}, {"lm": 0.5}, None, "every", 1),
        "every10": DelayedFusion({"lm": scorer}, {"lm": 0.5}, None, "every", 10),
        "end": DelayedFusion({"lm": scorer}, {"lm": 0.5}, None, "end"),
    }.items():
        scorer.stats.reset()
        CTCTimeSyncSearch(0, beam=4, token_prune_topk=None, fusion=fusion)(lp, torch.tensor(lens))
        calls[name] = scorer.stats.calls
    assert calls["end"] == 1  # the final catch-up (EOS is read from the cached hidden state)
    assert calls["every10"] <= 5 and calls["every10"] < calls["every1"] <= calls["label_wise"] + 1, calls
