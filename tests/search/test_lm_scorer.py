"""LMScorer: token-by-token scoring through the Scorer protocol == the adapter's full forward."""

from __future__ import annotations

import pytest
import torch

from asrllm.data.tokenizer import CharTokenizer
from asrllm.models.llm import CausalLM, LLMConfig, build_llm
from asrllm.search.lm_scorer import LMScorer, LMScorerState
from asrllm.search.scorer import Scorer

TOL = 1e-4


@pytest.fixture(scope="module")
def lm() -> CausalLM:
    torch.manual_seed(0)
    cfg = LLMConfig(arch=dict(model_type="qwen2", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2))
    return build_llm(cfg, label_tokenizer=CharTokenizer(list("ABCDEFGHIJ"))).eval()


def full_log_probs(lm: CausalLM, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(N, L + 1, V): log p(· | BOS + tokens[:j]) for every j, by one full forward pass."""
    n = tokens.shape[0]
    bos = torch.full((n, 1), lm.bos_id)
    with torch.no_grad():
        return lm.forward_logits(torch.cat([bos, tokens], 1), lengths + 1).float().log_softmax(-1)


def test_token_by_token_equals_full_forward(lm: CausalLM) -> None:
    scorer = LMScorer(lm)
    assert isinstance(scorer, Scorer) and scorer.vocab_size() == 14
    gen = torch.Generator().manual_seed(1)
    B, K, L = 2, 3, 6
    tokens = torch.randint(3, 14, (B * K, L), generator=gen)  # (N, L)
    ref = full_log_probs(lm, tokens, torch.full((B * K,), L))  # (N, L + 1, V)
    state = scorer.init_state(B, K, enc=None)
    for t in range(L + 1):
        lengths = torch.full((B * K,), t)
        logp, state = scorer.score(tokens[:, :t], lengths, state)  # (N, V) after t labels
        assert (logp - ref[:, t]).abs().max() < TOL, t
    final = scorer.final_score(tokens, torch.full((B * K,), L), state)
    assert torch.allclose(final, ref[:, L, lm.eos_id], atol=TOL)


def test_several_pending_labels_and_reordering(lm: CausalLM) -> None:
    """Delayed-fusion use: prefixes grow by 0..3 labels between calls; pruning reorders and duplicates."""
    scorer = LMScorer(lm)
    gen = torch.Generator().manual_seed(2)
    n, L = 4, 8
    tokens = torch.randint(3, 14, (n, L), generator=gen)  # (N, L) the hypotheses' full label sequences
    state = scorer.init_state(1, n, None)
    lengths = torch.zeros(n, dtype=torch.long)
    for grow, src in [([1, 0, 3, 2], [0, 1, 2, 3]), ([2, 2, 0, 1], [2, 2, 0, 3]), ([1, 0, 2, 0], [3, 1, 1, 0])]:
        lengths = lengths + torch.tensor(grow)
        logp, state = scorer.score(tokens, lengths, state)
        ref = full_log_probs(lm, tokens, lengths)  # (N, L + 1, V)
        assert (logp - ref[torch.arange(n), lengths]).abs().max() < TOL
        assert state.fed.tolist() == lengths.tolist()
        src_t = torch.tensor(src)
        state = scorer.select_state(state, src_t)
        tokens, lengths = tokens[src_t], lengths[src_t]
    assert isinstance(state, LMScorerState)
    final = scorer.final_score(tokens, lengths + 1, state)  # one label not yet fed
    ref = full_log_probs(lm, tokens, lengths + 1)
    assert torch.allclose(final, ref[torch.arange(n), lengths + 1, lm.eos_id], atol=TOL)


def test_dropping_hypotheses(lm: CausalLM) -> None:
    scorer = LMScorer(lm)
    tokens = torch.tensor([[4, 5], [6, 7], [8, 9]])
    state = scorer.init_state(1, 3, None)
    _, state = scorer.score(tokens, torch.tensor([2, 1, 2]), state)
    state = scorer.select_state(state, torch.tensor([2]))
    logp, _ = scorer.score(tokens[[2]], torch.tensor([2]), state)
    assert torch.allclose(logp[0], full_log_probs(lm, tokens[[2]], torch.tensor([2]))[0, 2], atol=TOL)


def test_temperature(lm: CausalLM) -> None:
    tokens = torch.tensor([[4, 5]])
    plain, _ = LMScorer(lm).score(tokens, torch.tensor([2]), LMScorer(lm).init_state(1, 1, None))
    hot = LMScorer(lm, temperature=2.0)
    warm, _ = hot.score(tokens, torch.tensor([2]), hot.init_state(1, 1, None))
    assert torch.allclose(warm, (plain / 2).log_softmax(-1), atol=1e-6)
    assert torch.allclose(warm.exp().sum(-1), torch.ones(1))
    with pytest.raises(ValueError, match="temperature"):
        LMScorer(lm, temperature=0.0)


def test_prefix_shorter_than_state_is_an_error(lm: CausalLM) -> None:
    scorer = LMScorer(lm)
    state = scorer.init_state(1, 1, None)
    _, state = scorer.score(torch.tensor([[4, 5]]), torch.tensor([2]), state)
    with pytest.raises(AssertionError, match="shorter"):
        scorer.score(torch.tensor([[4]]), torch.tensor([1]), state)


@pytest.mark.parametrize("temperature", [1.0, 1.7])
def test_score_sequence_one_pass_equals_incremental(lm: CausalLM, temperature: float) -> None:
    """The whole-sequence score (rescoring) = the protocol's position-by-position default, which
    feeds the KV cache incrementally: a full forward pass against the incremental path."""
    scorer = LMScorer(lm, temperature=temperature)
    tokens = torch.tensor([[4, 5, 6, 7], [8, 9, 0, 0], [0, 0, 0, 0]])
    lengths = torch.tensor([4, 2, 0])
    one_pass = scorer.score_sequence(tokens, lengths)
    incremental = Scorer.score_sequence(scorer, tokens, lengths)
    assert one_pass.shape == (3,) and torch.allclose(one_pass, incremental, atol=TOL)
    if temperature == 1.0:  # and = the sum of the full forward's label and EOS log-probs
        assert torch.allclose(one_pass, lm.token_log_probs(tokens, lengths).double().sum(1), atol=TOL)
