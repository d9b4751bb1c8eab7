"""The label prior of a trained CTC model: its mean softmax output over all frames of a data set.

Prior correction (hybrid-style "divide by the prior", PAPER.md §5) subtracts scale·log p(label)
from the CTC score of every emitted label. The prior is estimated once per trained AM:

    p(v) = (1 / T_total) · Σ_utterances Σ_{t < T_u} softmax(CTC logits)_t(v)

over the valid frames of every utterance (padding frames never count), then, where the search
uses it (`asrllm.search.fusion.LabelPrior.from_probs`), with the blank removed and renormalised.
The file keeps the raw mean with the blank, so that other uses (a blank penalty) need no second pass.

File: safetensors with `probs` (V,) float64 and metadata `num_frames`, `num_utts`.
Shapes: B utterances, T frames, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from asrllm.config import apply_umask

PRIOR_KEY = "probs"


@torch.inference_mode()
def estimate_ctc_prior(model: torch.nn.Module, batches: Iterable[tuple[Tensor, Tensor]]) -> tuple[Tensor, int]:
    """Mean CTC posterior (V,) float64 over every valid frame of `batches` (audio (B, S), lens (B,)),
    and the number of frames; `model` has `log_probs(audio, lens)` (a CTC model in eval mode)."""
    total: Tensor | None = None
    frames = 0
    for audio, audio_lens in batches:
        log_probs, lens = model.log_probs(audio, audio_lens)  # (B, T, V), (B,)
        valid = torch.arange(log_probs.shape[1], device=lens.device)[None, :] < lens[:, None]  # (B, T)
        summed = (log_probs.double().exp() * valid[..., None]).sum(dim=(0, 1))  # (V,)
        total = summed if total is None else total + summed
        frames += int(lens.sum())
    if total is None or frames == 0:
        raise ValueError("estimate_ctc_prior: the data has no frames")
    return total / frames, frames


def save_prior(path: str | Path, probs: Tensor, num_frames: int, num_utts: int) -> None:
    """Write the prior file (the caller writes it to a temp name and renames, or records it after)."""
    assert probs.ndim == 1, probs.shape
    save_file({PRIOR_KEY: probs.double().contiguous()}, str(path),
              metadata={"num_frames": str(num_frames), "num_utts": str(num_utts)})
    apply_umask(path)


def load_prior(path: str | Path) -> Tensor:
    """The (V,) float64 mean posterior of a prior file; a missing or foreign file is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no prior file (estimate it first: python -m asrllm.bin.estimate_prior)")
    with safe_open(str(path), framework="pt") as f:
        if PRIOR_KEY not in f.keys():
            raise ValueError(f"{path}: not a prior file (no {PRIOR_KEY!r} tensor)")
        return f.get_tensor(PRIOR_KEY)
