"""N-best rescoring (PAPER.md §5): whole-sequence scores of N-best hypotheses, and log-linear re-ranking.

Shapes: N hypotheses in a chunk, L label length, F score names.

`rescore` adds to every `NBestEntry` the whole-sequence log-score of each named scorer
(`Scorer.score_sequence`, EOS included; for an `LMScorer` one full forward pass per chunk), in
chunks of whole utterances. A scorer reads the AM labels as they are when its tokenizer has the
AM's pieces (an LM re-vocabularised to, or trained on, the AM's labels) and otherwise the
re-tokenised words (`WordRetokenizer`, exactly what delayed fusion v2 scores at the end).

`rerank` orders each utterance's entries by the log-linear total Σ weights[name]·scores[name]
with the search's own weights (CTC 1, each LM λ, the prior −scale) and the search's own
reduction (`weighted_totals`, which `hyps.rank_nbest` uses too), so a first-pass search with the
same weights ranks its final beam the same way. Scale tuning (`tuning.py`) reads the columns.

>>> e = NBestEntry("u", 0, [3], "a", -1.0, {"ctc": -1.0, "lm": -2.0})
>>> [x.score for x in rerank([[e]], {"ctc": 1.0, "lm": 0.5})[0]]
[-2.0]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import torch

from asrllm.data.tokenizer import Tokenizer
from asrllm.search.hyps import NBestEntry, weighted_totals
from asrllm.search.lm_scorer import LMScorer
from asrllm.search.retokenize import WordRetokenizer
from asrllm.search.scorer import Scorer

LabelReader = Callable[[list[int]], list[int]]  # AM labels -> the ids a scorer scores


@dataclasses.dataclass
class RescoringCost:
    """What rescoring cost one scorer: forward calls (chunks), tokens fed (EOS included), utterance-calls."""

    calls: int = 0
    tokens: int = 0
    utterance_calls: int = 0


def label_reader(scorer: Scorer, am_tokenizer: Tokenizer) -> LabelReader:
    """How `scorer` reads AM labels: as they are if its tokenizer is the AM's (same pieces) or it has
    none (a label prior), else as its own tokens of the re-tokenised words."""
    if isinstance(scorer, LMScorer) and scorer.tokenizer.pieces != am_tokenizer.pieces:
        return WordRetokenizer(am_tokenizer, scorer.tokenizer).tokens_of_labels
    return list


def _chunks(nbest: list[list[NBestEntry]], chunk_size: int) -> list[list[int]]:
    """Utterance indices grouped so that each group holds at most chunk_size entries (at least one utterance)."""
    groups: list[list[int]] = [[]]
    size = 0
    for u, entries in enumerate(nbest):
        if groups[-1] and size + len(entries) > chunk_size:
            groups.append([])
            size = 0
        groups[-1].append(u)
        size += len(entries)
    return [g for g in groups if g]


@torch.inference_mode()
def rescore(
    nbest: list[list[NBestEntry]],
    scorers: Mapping[str, Scorer],
    readers: Mapping[str, LabelReader],
    chunk_size: int = 256,
    device: torch.device | None = None,
) -> tuple[list[list[NBestEntry]], dict[str, RescoringCost]]:
    """Every entry with scores[name] = the whole-sequence log-score of scorer `name` added (order kept).

    nbest: per utterance its entries; readers: per scorer, how it reads AM labels (`label_reader`).
    A name the entries already have is an error (rescoring twice with one name would mix models).
    """
    clash = sorted({n for u in nbest for e in u for n in scorers if n in e.scores})
    if clash:
        raise ValueError(f"rescore: the N-best entries already have scores named {clash}; pick other scorer names")
    added: list[list[dict[str, float]]] = [[{} for _ in u] for u in nbest]
    costs = {name: RescoringCost() for name in scorers}
    for group in _chunks(nbest, chunk_size):
        flat = [(u, r) for u in group for r in range(len(nbest[u]))]
        if not flat:
            continue
        for name, scorer in scorers.items():
            seqs = [readers[name](nbest[u][r].tokens) for u, r in flat]
            length = max(1, max(len(s) for s in seqs))
            tokens = torch.tensor([s + [0] * (length - len(s)) for s in seqs], dtype=torch.long, device=device)
            lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long, device=device)
            values = scorer.score_sequence(tokens, lengths).tolist()  # (N,)
            for (u, r), value in zip(flat, values):
                added[u][r][name] = value
            cost = costs[name]
            cost.calls += 1
            cost.tokens += int(lengths.sum()) + len(seqs)
            cost.utterance_calls += len(group)
    out = [[dataclasses.replace(e, scores={**e.scores, **a}) for e, a in zip(u, au)] for u, au in zip(nbest, added)]
    return out, costs


def rerank(nbest: list[list[NBestEntry]], weights: Mapping[str, float]) -> list[list[NBestEntry]]:
    """Each utterance's entries with score = Σ weights[name]·scores[name], best first, ranks renumbered.

    Every weighted name must be a score column of every entry (else a ValueError naming it); columns
    without a weight do not count. Ties keep the input order.
    """
    names = list(weights)
    w = torch.tensor([weights[n] for n in names], dtype=torch.float64)  # (F,)
    out = []
    for entries in nbest:
        missing = sorted({n for e in entries for n in names if n not in e.scores})
        if missing:
            raise ValueError(f"rerank: utterance {entries[0].utt_id!r} has no scores {missing} "
                             f"(its columns: {sorted(entries[0].scores)}); rescore with those scorers first")
        if not entries:
            out.append([])
            continue
        scores = torch.tensor([[e.scores[n] for n in names] for e in entries], dtype=torch.float64)  # (N, F)
        totals = weighted_totals(scores, w).tolist()
        order = sorted(range(len(entries)), key=lambda i: -totals[i])  # stable: ties keep the input order
        out.append([dataclasses.replace(entries[i], rank=rank, score=totals[i]) for rank, i in enumerate(order)])
    return out
