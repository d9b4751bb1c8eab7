"""The padded mini-batch that every model kind trains and decodes on.

Shapes: B utterances, S audio samples, L labels.
"""

from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass
class Batch:
    """A collated batch. Padding values are meaningless: always use the lengths."""

    ids: list[str]  # utterance ids, in batch order
    audio: torch.Tensor  # (B, S) float32, 16 kHz mono, zero-padded
    audio_lens: torch.Tensor  # (B,) int64 samples
    targets: torch.Tensor  # (B, L) int64 token ids, padded with 0
    target_lens: torch.Tensor  # (B,) int64
    texts: list[str]  # reference transcripts, in batch order

    def to(self, device: torch.device | str) -> Batch:
        """A copy with every tensor on `device` (non-blocking where the source is pinned)."""
        return dataclasses.replace(
            self,
            audio=self.audio.to(device, non_blocking=True),
            audio_lens=self.audio_lens.to(device, non_blocking=True),
            targets=self.targets.to(device, non_blocking=True),
            target_lens=self.target_lens.to(device, non_blocking=True),
        )

    def __len__(self) -> int:
        return len(self.ids)
