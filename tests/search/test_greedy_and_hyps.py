"""ctc_greedy on hand-built tensors (icefall test_ctc_greedy_search style), NBestEntry JSONL, BatchedState."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import Tensor

from asrllm.search import BatchedState, CTCGreedySearch, NBestEntry, ctc_greedy, read_nbest_jsonl, write_nbest_jsonl


def one_hot_log_probs(paths: list[list[int]], V: int) -> Tensor:
    """(B, T, V) log-probs whose argmax follows `paths` (equal lengths)."""
    probs = torch.full((len(paths), len(paths[0]), V), 0.01)
    for b, path in enumerate(paths):
        for t, c in enumerate(path):
            probs[b, t, c] = 1.0
    return (probs / probs.sum(-1, keepdim=True)).log()


def test_ctc_greedy_hand_built() -> None:
    lp = one_hot_log_probs([[0, 1, 1, 0, 2, 2, 3], [3, 3, 0, 3, 1, 0, 0]], V=8)
    assert ctc_greedy(lp, torch.tensor([7, 7]), blank_id=0) == [[1, 2, 3], [3, 3, 1]]
    # padded frames are ignored; a different blank id changes what collapses
    assert ctc_greedy(lp, torch.tensor([3, 0]), blank_id=0) == [[1], []]
    assert ctc_greedy(lp, torch.tensor([7, 7]), blank_id=3) == [[0, 1, 0, 2], [0, 1, 0]]


def test_greedy_search_entries() -> None:
    lp = one_hot_log_probs([[0, 1, 1, 0, 2, 2, 3]], V=4)
    lp[0, 6:] = float("-inf")  # padding may hold anything
    (entry,) = CTCGreedySearch(blank_id=0, detokenize=lambda ids: "".join("_abc"[i] for i in ids))(
        lp, torch.tensor([6]), ["u"]
    )[0]
    assert (entry.utt_id, entry.tokens, entry.text, entry.rank) == ("u", [1, 2], "ab", 0)
    assert entry.score == pytest.approx(float(lp[0, :6].max(-1).values.sum()))


def test_nbest_jsonl_round_trip(tmp_path: Path) -> None:
    entries = [
        NBestEntry("a", 0, [1, 2], "hé llo", -1.25, {"ctc": -1.0, "prior": -0.5}),
        NBestEntry("a", 1, [], "", -3.0, {"ctc": -3.0}),
    ]
    write_nbest_jsonl(tmp_path / "nbest.jsonl", entries)
    assert read_nbest_jsonl(tmp_path / "nbest.jsonl") == entries
    (tmp_path / "bad.jsonl").write_text('{"utt_id": "a", "rank": 0}\n{"oops": 1}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        read_nbest_jsonl(tmp_path / "bad.jsonl")


@dataclasses.dataclass
class _State(BatchedState):
    x: Tensor  # (N, 2)
    layers: list[Tensor]  # per layer (N, 3)
    step: int


def test_scorer_state_select() -> None:
    s = _State(torch.arange(6).view(3, 2), [torch.arange(9).view(3, 3)], step=4)
    out = s.select(torch.tensor([2, 0]))
    assert out.x.tolist() == [[4, 5], [0, 1]]
    assert out.layers[0].tolist() == [[6, 7, 8], [0, 1, 2]]
    assert out.step == 4 and s.x.shape == (3, 2)  # the input state is untouched
