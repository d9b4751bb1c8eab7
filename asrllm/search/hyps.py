"""Search output: `NBestEntry` (one hypothesis of one utterance) and its JSONL form (STYLE.md R11).

N-best lists are written one JSON object per line, best first within an utterance, so that
rescoring and scale tuning can read them back without the model.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

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
