"""CTCTimeSyncSearch against brute-force oracles (STYLE.md R13).

The oracle enumerates all V^T frame paths, collapses each (repeats, then blanks) and sums the
path probabilities per label sequence: the exact CTC probability of every sequence.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from asrllm.search.fusion import LabelPrior, NoFusion
from asrllm.search.greedy import ctc_greedy
from asrllm.search.time_sync import CTCTimeSyncSearch


def random_log_probs(B: int, T: int, V: int, seed: int, sharpness: float = 2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, T, V, generator=g, dtype=torch.float64) * sharpness).log_softmax(-1)


def collapse(path: tuple[int, ...], blank_id: int) -> tuple[int, ...]:
    out, prev = [], None
    for c in path:
        if c != prev and c != blank_id:
            out.append(c)
        prev = c
    return tuple(out)


def oracle(log_probs: torch.Tensor, blank_id: int) -> dict[tuple[int, ...], float]:
    """log P(sequence) for every label sequence, by enumerating all V^T paths. log_probs: (T, V)."""
    T, V = log_probs.shape
    lp = log_probs.tolist()
    probs: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(V), repeat=T):
        seq = collapse(path, blank_id)
        probs[seq] = probs.get(seq, 0.0) + math.exp(sum(lp[t][c] for t, c in enumerate(path)))
    return {seq: math.log(p) for seq, p in probs.items()}


def num_prefixes(V: int, T: int) -> int:
    return sum((V - 1) ** n for n in range(T + 1))


@pytest.mark.parametrize("V,T,blank_id,seed", [(3, 5, 0, 0), (4, 6, 0, 1), (4, 6, 3, 2), (4, 5, 1, 3), (2, 6, 1, 4)])
def test_exhaustive_beam_equals_brute_force(V: int, T: int, blank_id: int, seed: int) -> None:
    lp = random_log_probs(1, T, V, seed)
    exact = sorted(oracle(lp[0], blank_id).items(), key=lambda kv: -kv[1])
    K = num_prefixes(V, T)
    search = CTCTimeSyncSearch(blank_id, beam=K, nbest=K, token_prune_topk=None)
    nbest = search(lp, torch.tensor([T]))[0]
    # Every label sequence is found once, with its exact probability: recombination is complete.
    assert len(nbest) == len(exact), (len(nbest), len(exact))
    assert {tuple(e.tokens) for e in nbest} == {seq for seq, _ in exact}
    assert math.isclose(sum(math.exp(e.score) for e in nbest), 1.0, rel_tol=1e-9)
    assert tuple(nbest[0].tokens) == exact[0][0]
    for entry, (seq, logp) in zip(nbest[:5], exact[:5]):
        assert tuple(entry.tokens) == seq
        assert entry.score == pytest.approx(logp, abs=1e-9)
        assert entry.scores == {"ctc": entry.score}


def test_float32_and_token_pruning_keep_best() -> None:
    lp = random_log_probs(1, 6, 4, seed=5)
    exact = max(oracle(lp[0], 0).items(), key=lambda kv: kv[1])
    for topk in (None, 2, 3):
        best = CTCTimeSyncSearch(0, beam=num_prefixes(4, 6), token_prune_topk=topk)(lp.float(), torch.tensor([6]))[0][0]
        if topk is None:
            assert tuple(best.tokens) == exact[0]
            assert best.score == pytest.approx(exact[1], abs=1e-5)
        else:  # pruned search only drops paths: a lower bound of the exact probability
            assert best.score <= oracle(lp[0], 0)[tuple(best.tokens)] + 1e-5


@pytest.mark.parametrize("K,topk", [(1, 4), (4, None), (8, 5), (16, 3)])
def test_batch_equals_single_utterances(K: int, topk: int | None) -> None:
    B, T, V = 5, 30, 12
    lp = random_log_probs(B, T, V, seed=7)
    lens = torch.tensor([30, 17, 1, 25, 0])
    padded = lp.clone()
    for b in range(B):  # garbage in padded frames must not matter
        padded[b, lens[b] :] = random_log_probs(1, T - int(lens[b]), V, seed=100 + b)[0]
    search = CTCTimeSyncSearch(blank_id=2, beam=K, nbest=K, token_prune_topk=topk)
    batched = search(padded.float(), lens, [f"u{b}" for b in range(B)])
    for b in range(B):
        single = search(lp[b : b + 1, : lens[b]].float(), lens[b : b + 1], [f"u{b}"])[0]
        assert [e.tokens for e in batched[b]] == [e.tokens for e in single]
        assert [e.score for e in batched[b]] == pytest.approx([e.score for e in single], abs=1e-5)
        assert all(e.utt_id == f"u{b}" for e in batched[b])
    assert batched[4][0].tokens == [] and batched[4][0].score == 0.0  # zero frames: the empty prefix


def test_scores_are_lower_bounds_and_exhaustive_beats_greedy() -> None:
    B, T, V = 4, 6, 4
    lp = random_log_probs(B, T, V, seed=11)
    lens = torch.full((B,), T)
    greedy = ctc_greedy(lp, lens, blank_id=0)
    best_path = lp.max(dim=-1).values.sum(dim=-1)  # (B,): the greedy alignment's log-prob
    exhaustive = CTCTimeSyncSearch(0, beam=num_prefixes(V, T), token_prune_topk=None)(lp, lens)
    small = CTCTimeSyncSearch(0, beam=2, nbest=2, token_prune_topk=2)(lp, lens)
    for b in range(B):
        exact = oracle(lp[b], 0)
        greedy_seq = exact[tuple(greedy[b])]
        # P(best sequence) >= P(greedy sequence) >= P(greedy path)
        assert exhaustive[b][0].score >= greedy_seq - 1e-9 >= best_path[b].item() - 2e-9
        # ctc_loss agrees with the oracle on the greedy sequence
        target = torch.tensor([greedy[b]], dtype=torch.long)
        nll = F.ctc_loss(lp[b : b + 1].transpose(0, 1), target, lens[b : b + 1], torch.tensor([len(greedy[b])]),
                         blank=0, reduction="sum", zero_infinity=False)
        assert -nll.item() == pytest.approx(greedy_seq, abs=1e-9)
        for e in small[b]:  # pruning drops paths: never more than the exact probability
            assert e.score <= exact[tuple(e.tokens)] + 1e-9


def test_beam_one_on_peaky_input_equals_greedy() -> None:
    g = torch.Generator().manual_seed(3)
    B, T, V = 3, 40, 8
    best = torch.randint(0, V, (B, T), generator=g)
    logits = torch.randn(B, T, V, generator=g) + 8.0 * F.one_hot(best, V)
    lp = logits.log_softmax(-1)
    lens = torch.tensor([40, 33, 12])
    beam1 = CTCTimeSyncSearch(blank_id=0, beam=1)(lp, lens)
    assert [r[0].tokens for r in beam1] == ctc_greedy(lp, lens, blank_id=0)


def test_prior_scale_zero_changes_nothing_and_large_prior_removes_label() -> None:
    B, T, V = 3, 20, 6
    lp = random_log_probs(B, T, V, seed=13, sharpness=1.0).float()
    lens = torch.tensor([20, 15, 9])
    log_prior = torch.log_softmax(torch.randn(V, generator=torch.Generator().manual_seed(1)), 0)
    plain = CTCTimeSyncSearch(0, beam=6, nbest=6)(lp, lens)
    zero = CTCTimeSyncSearch(0, beam=6, nbest=6, fusion=NoFusion(LabelPrior(log_prior, scale=0.0)))(lp, lens)
    for a, b in zip(plain, zero):
        assert [e.tokens for e in a] == [e.tokens for e in b]
        assert [e.score for e in a] == [e.score for e in b]
    # The prior score is recorded unweighted; total = ctc - scale * prior.
    scaled = CTCTimeSyncSearch(0, beam=6, nbest=6, fusion=NoFusion(LabelPrior(log_prior, scale=0.5)))(lp, lens)
    for entries in scaled:
        for e in entries:
            assert e.scores["prior"] == pytest.approx(float(log_prior[e.tokens].sum()), abs=1e-4)
            assert e.score == pytest.approx(e.scores["ctc"] - 0.5 * e.scores["prior"], abs=1e-4)
    # A label whose prior is huge is penalised out of every hypothesis.
    frequent = int(torch.bincount(lp.argmax(-1).flatten(), minlength=V)[1:].argmax()) + 1
    assert any(frequent in e.tokens for entries in plain for e in entries)
    big = torch.zeros(V)
    big[frequent] = 100.0
    removed = CTCTimeSyncSearch(0, beam=6, nbest=6, fusion=NoFusion(LabelPrior(big, scale=1.0)))(lp, lens)
    assert all(frequent not in e.tokens for entries in removed for e in entries)


def test_thresholds_and_inputs_untouched() -> None:
    lp = random_log_probs(2, 25, 10, seed=17).float()
    lens = torch.tensor([25, 20])
    before = lp.clone()
    ref = CTCTimeSyncSearch(0, beam=4)(lp, lens)
    loose = CTCTimeSyncSearch(0, beam=4, token_min_logp=-1e9, beam_threshold=1e9)(lp, lens)
    assert [r[0].tokens for r in ref] == [r[0].tokens for r in loose]
    tight = CTCTimeSyncSearch(0, beam=4, nbest=4, beam_threshold=1e-3)(lp, lens)
    assert all(len(r) >= 1 for r in tight)
    assert torch.equal(lp, before)


def test_errors_name_the_problem() -> None:
    lp = random_log_probs(1, 3, 4, seed=0).float()
    with pytest.raises(ValueError, match="blank_id=4"):
        CTCTimeSyncSearch(blank_id=4)(lp, torch.tensor([3]))
    with pytest.raises(ValueError, match="lens"):
        CTCTimeSyncSearch(blank_id=0)(lp, torch.tensor([4]))
    with pytest.raises(ValueError, match="2 utterance ids"):
        CTCTimeSyncSearch(blank_id=0)(lp, torch.tensor([3]), ["a", "b"])
