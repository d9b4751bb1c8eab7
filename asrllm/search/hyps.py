"""Search output: `NBestEntry` (one hypothesis of one utterance), its JSONL form (STYLE.md R11),
and `rank_nbest`, the one path from a search's final hypotheses to N-best lists.

Shapes: B utterances, K hypotheses per utterance, N = B·K, L label capacity, F scorer names.

N-best lists are written one JSON object per line, best first within an utterance, so that
rescoring and scale tuning can read them back without the model.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from asrllm import config
from asrllm.config import atomic_write_text


@dataclasses.dataclass(frozen=True)
class NBestEntry:
    """One hypothesis: labels, text, total score and the unweighted score of every scorer.

    `score` = sum over scorers of weight·scores[name] (CTC weight 1), the quantity the search ranked by.

    >>> e = NBestEntry("utt1", rank=0, tokens=[5, 3], text="hi", score=-1.5, scores={"ctc": -1.5})
    >>> NBestEntry.from_dict(e.to_dict()) == e
    True
    """

    utt_id: str  # utterance id
    rank: int  # 0 = best of its utterance
    tokens: list[int]  # label ids, blanks and repeats removed
    text: str  # detokenised labels ("" when the search had no detokeniser)
    score: float  # total log-score used for ranking
    scores: dict[str, float] = dataclasses.field(default_factory=dict)  # name -> unweighted log-score

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NBestEntry:
        """Strict: unknown or missing keys and wrong types raise `ConfigError` (a ValueError) naming them."""
        return config.from_dict(cls, data, "NBestEntry")


def weighted_totals(scores: Tensor, weights: Tensor) -> Tensor:
    """The log-linear combination of every search and of rescoring: scores (N, F) unweighted score
    columns, weights (F,) (CTC 1, each LM its λ, the prior -scale) -> (N,) totals."""
    return scores @ weights


def rank_nbest(
    tokens: Tensor,
    lengths: Tensor,
    scores: Tensor,
    names: list[str],
    weights: Tensor,
    utt_ids: list[str],
    nbest: int,
    detokenize: Callable[[list[int]], str] | None = None,
) -> list[list[NBestEntry]]:
    """Per utterance its `nbest` best hypotheses, best first, as `NBestEntry` lists.

    tokens (N, L), lengths (N,): the final label sequences, N = B·K, hypothesis n of utterance n // K;
    scores (N, F): the unweighted score of each scorer `names[f]`; weights (F,): their weights. The
    total (ranking) score is scores @ weights; hypotheses with total -inf (dead slots) are left out,
    so a list can be shorter than `nbest`.
    """
    B = len(utt_ids)
    K = tokens.shape[0] // max(B, 1)
    assert tokens.shape[0] == B * K and 1 <= nbest <= K, (tokens.shape, B, nbest)
    total = weighted_totals(scores, weights).view(B, K)  # (B, K)
    best, order = total.topk(nbest, dim=1)  # (B, nbest)
    src = (order + torch.arange(B, device=order.device)[:, None] * K).view(-1)  # (B·nbest,)
    best_l, scores_l = best.view(-1).tolist(), scores.index_select(0, src).tolist()
    tokens_l, lengths_l = tokens.index_select(0, src).tolist(), lengths.index_select(0, src).tolist()
    out: list[list[NBestEntry]] = []
    for b in range(B):
        entries = []
        for r in range(nbest):
            i = b * nbest + r
            if best_l[i] == float("-inf"):
                break
            labels = tokens_l[i][: lengths_l[i]]
            text = detokenize(labels) if detokenize else ""
            entries.append(NBestEntry(utt_ids[b], r, labels, text, best_l[i], dict(zip(names, scores_l[i]))))
        out.append(entries)
    return out


def group_by_utterance(entries: Iterable[NBestEntry]) -> list[list[NBestEntry]]:
    """Entries (any order) -> per utterance, sorted by id, its entries in rank order."""
    by_utt: dict[str, list[NBestEntry]] = {}
    for e in entries:
        by_utt.setdefault(e.utt_id, []).append(e)
    return [sorted(by_utt[u], key=lambda e: e.rank) for u in sorted(by_utt)]


def write_nbest_jsonl(path: str | Path, entries: Iterable[NBestEntry]) -> None:
    """Write entries, one JSON object per line, atomically."""
    text = "".join(json.dumps(e.to_dict(), ensure_ascii=False) + "\n" for e in entries)
    atomic_write_text(path, text)


def read_nbest_jsonl(path: str | Path) -> list[NBestEntry]:
    """Read entries written by `write_nbest_jsonl`; errors name file and line."""
    entries = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                entries.append(NBestEntry.from_dict(json.loads(line)))
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{lineno}: bad N-best entry: {e}") from None
    return entries
