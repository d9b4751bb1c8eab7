"""SpecAugment: identity in eval, masks inside bounds, ramp-in, determinism."""

from __future__ import annotations

import pytest
import torch

from asrllm.models.specaugment import SpecAugment, SpecAugmentConfig


def _feats() -> tuple[torch.Tensor, torch.Tensor]:
    lens = torch.tensor([100, 60, 7])
    feats = torch.randn(3, 100, 40).abs() + 1.0  # never equal to the fill value 0
    return feats, lens


def test_eval_is_identity() -> None:
    aug = SpecAugment(SpecAugmentConfig()).eval()
    feats, lens = _feats()
    assert aug(feats, lens) is feats
    assert int(aug.step) == 0


def test_time_masks_stay_inside_valid_frames_and_within_width() -> None:
    cfg = SpecAugmentConfig(num_freq_masks=0, num_time_masks=3, max_time_width=10, max_time_ratio=0.2)
    aug = SpecAugment(cfg).train()
    torch.manual_seed(0)
    for _ in range(20):
        feats, lens = _feats()
        feats[1, 60:] = 5.0  # padding
        out = aug(feats, lens)
        masked = (out == 0).all(dim=2)  # (B, T) whole frames masked
        assert ((out == 0) == masked[..., None]).all()  # time masks cover all bins
        assert (out[1, 60:] == 5.0).all()  # padding untouched
        for b, n in enumerate(lens.tolist()):
            assert masked[b].sum() <= cfg.num_time_masks * min(cfg.max_time_width, int(n * cfg.max_time_ratio))


def test_freq_masks_within_width() -> None:
    cfg = SpecAugmentConfig(num_freq_masks=2, max_freq_width=5, num_time_masks=0)
    aug = SpecAugment(cfg).train()
    torch.manual_seed(1)
    feats, lens = _feats()
    out = aug(feats, lens)
    masked_bins = (out == 0).all(dim=1)  # (B, F)
    assert ((out == 0) == masked_bins[:, None, :]).all()
    assert (masked_bins.sum(1) <= 2 * 5).all()


def test_ramp_in() -> None:
    cfg = SpecAugmentConfig(num_freq_masks=2, max_freq_width=20, num_time_masks=2, ramp_steps=4)
    aug = SpecAugment(cfg).train()
    feats, lens = _feats()
    assert torch.equal(aug(feats, lens), feats)  # step 0: strength 0
    assert int(aug.step) == 1 and aug.strength() == 0.25
    aug.step.fill_(4)
    assert aug.strength() == 1.0
    assert "step" in aug.state_dict()  # resumes with the checkpoint


def test_deterministic_given_seed() -> None:
    feats, lens = _feats()
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        outs.append(SpecAugment(SpecAugmentConfig()).train()(feats, lens))
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], feats)


def test_validation_names_option() -> None:
    with pytest.raises(ValueError, match="max_time_ratio"):
        SpecAugmentConfig(max_time_ratio=1.5)
    with pytest.raises(ValueError, match="num_time_masks"):
        SpecAugmentConfig(num_time_masks=-1)
