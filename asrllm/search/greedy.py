"""CTC greedy (best-path) decoding: the fast baseline and a test oracle.

Shapes: B utterances, T frames, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from asrllm.search.hyps import NBestEntry, rank_nbest


def ctc_greedy(log_probs: Tensor, lens: Tensor, blank_id: int) -> list[list[int]]:
    """Best path per utterance, repeats collapsed, then blanks removed.

    log_probs: (B, T, V); lens: (B,) valid frames; frames at t >= lens[b] are ignored.
    blank_id comes from the tokenizer; it is never assumed.

    >>> lp = torch.log(torch.tensor([[[.1, .9, 0], [.1, .9, 0], [.9, .1, 0], [.1, .9, 0], [0, 0, 1]]]))
    >>> ctc_greedy(lp, torch.tensor([4]), blank_id=0)
    [[1, 1]]
    """
    assert log_probs.ndim == 3, log_probs.shape
    _, T, _ = log_probs.shape
    best = log_probs.argmax(dim=-1)  # (B, T)
    prev = F.pad(best, (1, 0), value=blank_id)[:, :T]  # (B, T): label of the previous frame
    valid = torch.arange(T, device=best.device)[None, :] < lens.to(best.device)[:, None]  # (B, T)
    keep = valid & (best != blank_id) & (best != prev)  # (B, T)
    return [row[mask].tolist() for row, mask in zip(best, keep)]


class CTCGreedySearch:
    """Greedy CTC decoding behind the same call as `CTCTimeSyncSearch`: one entry per utterance.

    Its score is the best path's log-prob (one alignment), recorded as scores["ctc"]; a beam search
    reports the sequence's log-prob summed over alignments, which is at least as large.

    >>> lp = torch.log(torch.tensor([[[.2, .8], [.9, .1]]]))
    >>> CTCGreedySearch(blank_id=0)(lp, torch.tensor([2]), ["u1"])[0][0].tokens
    [1]
    """

    def __init__(self, blank_id: int, detokenize: Callable[[list[int]], str] | None = None) -> None:
        self.blank_id = blank_id
        self.detokenize = detokenize

    @torch.inference_mode()
    def __call__(self, log_probs: Tensor, lens: Tensor, utt_ids: list[str] | None = None) -> list[list[NBestEntry]]:
        """log_probs (B, T, V), lens (B,) -> per utterance a list with the one greedy entry."""
        B, T, _ = log_probs.shape
        ids = utt_ids if utt_ids is not None else [str(b) for b in range(B)]
        if len(ids) != B:
            raise ValueError(f"CTCGreedySearch: {len(ids)} utterance ids for a batch of {B}")
        hyps = ctc_greedy(log_probs, lens, self.blank_id)
        valid = torch.arange(T, device=log_probs.device)[None, :] < lens.to(log_probs.device)[:, None]  # (B, T)
        best = log_probs.max(dim=-1).values  # (B, T)
        path = torch.where(valid, best, torch.zeros_like(best)).sum(dim=1)  # (B,)
        lengths = torch.tensor([len(h) for h in hyps], dtype=torch.long)  # (B,)
        tokens = torch.zeros(B, max([len(h) for h in hyps], default=0), dtype=torch.long)  # (B, L)
        for b, h in enumerate(hyps):
            tokens[b, : len(h)] = torch.tensor(h, dtype=torch.long)
        one = torch.ones(1, dtype=path.dtype)
        return rank_nbest(tokens, lengths, path.cpu()[:, None], ["ctc"], one, ids, 1, self.detokenize)
