"""Frame reduction before a CTC search (speed-ups, each switchable): drop frames that repeat a confident one.

Shapes: B utterances, T frames (T' after reduction), V vocabulary.

Two frames in a row whose argmax is the same label, each with probability >= the threshold, almost
surely belong to the same CTC segment: "a a" and "a" (and "ε ε" and "ε") give the same labels, so
the second frame adds (nearly) nothing but search time. Dropping it keeps the first frame of each
such run, so a blank between two equal labels ("a ε a") is never lost:
- `blank_threshold`: runs of blank-dominated frames (blank skipping);
- `label_threshold`: runs of the same confident non-blank label (the authors' "soft collapse",
  PAPER.md §5: threshold 0.8).
The CTC greedy result is unchanged by either (it collapses repeats anyway), which the tests assert;
a beam search loses the alternative paths through the dropped frames, whose effect on WER the
benchmarks report.

>>> lp = torch.log(torch.tensor([[[.99, .01], [.99, .01], [.5, .5]]]))  # blank, blank, unsure
>>> out, lens = collapse_frames(lp, torch.tensor([3]), blank_id=0, blank_threshold=0.9)
>>> tuple(out.shape), lens.tolist()
((1, 2, 2), [2])
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def collapse_frames(
    log_probs: Tensor,
    lens: Tensor,
    blank_id: int,
    blank_threshold: float | None = None,
    label_threshold: float | None = None,
) -> tuple[Tensor, Tensor]:
    """log_probs (B, T, V), lens (B,) -> the kept frames left-aligned (B, T', V) and their count (B,).

    A frame is dropped when it and the frame before it have the same argmax label, both with
    probability >= the threshold of their kind (None: that kind is never dropped). The caller's
    tensors are not modified.
    """
    if blank_threshold is None and label_threshold is None:
        return log_probs, lens
    B, T, _ = log_probs.shape
    best_lp, best = log_probs.max(dim=2)  # (B, T)
    is_blank = best == blank_id
    never = float("inf")
    blank_min = math.log(blank_threshold) if blank_threshold is not None else never
    label_min = math.log(label_threshold) if label_threshold is not None else never
    confident = best_lp >= torch.where(is_blank, blank_min, label_min)  # (B, T)
    valid = torch.arange(T, device=lens.device) < lens[:, None]  # (B, T)
    drop = torch.zeros_like(valid)
    drop[:, 1:] = confident[:, 1:] & confident[:, :-1] & (best[:, 1:] == best[:, :-1])
    keep = valid & ~drop  # (B, T)
    new_lens = keep.sum(dim=1)  # (B,)
    out = log_probs.new_zeros(B, max(int(new_lens.max()), 1) if B else 0, log_probs.shape[2])
    b, t = keep.nonzero(as_tuple=True)
    pos = keep.long().cumsum(dim=1) - 1  # (B, T) target frame of each kept frame
    out[b, pos[b, t]] = log_probs[b, t]
    return out, new_lens
