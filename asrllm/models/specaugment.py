"""SpecAugment time and frequency masking (Park et al., 2019), ramped in over the first steps.

Shapes: B utterances, T frames, F feature bins, M masks.

The paper's AM "ramps SpecAugment in" over the first training steps. The module counts its own
training calls in a persistent buffer `step` (saved with the model weights, so resume is exact;
with gradient accumulation it counts micro-batches). At step s the strength is
r = min(1, s / ramp_steps), and r multiplies both the number of masks (rounded) and their maximum
widths, so training starts on clean features and reaches full masking after `ramp_steps`.

Time masks lie inside each utterance's valid frames and never change the lengths. Masked values
are set to `fill_value` (0 = the mean of normalised features). Randomness comes from the global
torch RNG, so a seeded run is reproducible. In eval mode the module is the identity.

>>> aug = SpecAugment(SpecAugmentConfig()).eval()
>>> x = torch.randn(2, 50, 80)
>>> bool(torch.equal(aug(x, torch.tensor([50, 30])), x))
True
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn


@dataclasses.dataclass(frozen=True)
class SpecAugmentConfig:
    num_freq_masks: int = 2  # frequency masks per utterance at full strength
    max_freq_width: int = 15  # widest frequency mask, bins
    num_time_masks: int = 4  # time masks per utterance at full strength
    max_time_width: int = 20  # widest time mask, frames
    max_time_ratio: float = 0.1  # a time mask is also at most this fraction of the utterance
    ramp_steps: int = 0  # training steps to reach full strength linearly; 0 = full from the start
    fill_value: float = 0.0  # value written into masked cells

    def __post_init__(self) -> None:
        for name in ("num_freq_masks", "max_freq_width", "num_time_masks", "max_time_width", "ramp_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.max_time_ratio <= 1.0:
            raise ValueError(f"max_time_ratio must be in [0, 1], got {self.max_time_ratio}")


def _random_masks(num: int, max_width: torch.Tensor, size: torch.Tensor, total: int) -> torch.Tensor:
    """`num` random intervals per row, each of width U{0..max_width} inside [0, size): (B, total) bool."""
    B = size.shape[0]
    width = (torch.rand(B, num, device=size.device) * (max_width[:, None] + 1)).long()  # (B, M)
    width = torch.minimum(width, size[:, None])
    start = (torch.rand(B, num, device=size.device) * (size[:, None] - width + 1)).long()  # (B, M)
    pos = torch.arange(total, device=size.device)[None, None, :]  # (1, 1, total)
    inside = (pos >= start[..., None]) & (pos < (start + width)[..., None])  # (B, M, total)
    return inside.any(dim=1)  # (B, total)


class SpecAugment(nn.Module):
    """Feats (B, T, F) + lengths (B,) -> masked feats (B, T, F) in train mode; identity in eval."""

    step: torch.Tensor

    def __init__(self, cfg: SpecAugmentConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("step", torch.zeros((), dtype=torch.long))  # training calls so far

    def strength(self) -> float:
        """Ramp factor r in [0, 1] for the current step."""
        if self.cfg.ramp_steps == 0:
            return 1.0
        return min(1.0, int(self.step) / self.cfg.ramp_steps)

    def forward(self, feats: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return feats
        cfg, r = self.cfg, self.strength()
        self.step += 1
        B, T, F = feats.shape
        mask = feats.new_zeros(B, T, F, dtype=torch.bool)
        num_f = round(r * cfg.num_freq_masks)
        if num_f:
            max_f = torch.full((B,), int(r * cfg.max_freq_width), device=feats.device)
            mask |= _random_masks(num_f, max_f, torch.full_like(max_f, F), F)[:, None, :]
        num_t = round(r * cfg.num_time_masks)
        if num_t:
            by_ratio = (lens.float() * cfg.max_time_ratio).long()  # (B,)
            max_t = (torch.clamp(by_ratio, max=cfg.max_time_width).float() * r).long()
            mask |= _random_masks(num_t, max_t, lens, T)[:, :, None]
        return feats.masked_fill(mask, cfg.fill_value)
