"""LogMel against an independent numpy implementation; ragged batches; options."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from asrllm.models.frontend import LogMel, LogMelConfig, mel_filterbank

SR, WIN, HOP, NFFT, NMELS = 16000, 400, 160, 512, 80


def np_mel_filterbank(n_mels: int, n_fft: int, sr: int, f_min: float, f_max: float) -> np.ndarray:
    """HTK triangles written out independently: (n_fft // 2 + 1, n_mels)."""

    def mel(f: np.ndarray | float) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    edges = hz(np.linspace(mel(f_min), mel(f_max), n_mels + 2))
    freqs = np.arange(n_fft // 2 + 1) * sr / n_fft
    fb = np.zeros((n_fft // 2 + 1, n_mels))
    for m in range(n_mels):
        lo, c, hi = edges[m], edges[m + 1], edges[m + 2]
        for k, f in enumerate(freqs):
            if lo < f <= c:
                fb[k, m] = (f - lo) / (c - lo)
            elif c < f < hi:
                fb[k, m] = (hi - f) / (hi - c)
    return fb


def np_log_mel(x: np.ndarray, normalize: bool) -> np.ndarray:
    """numpy framing + rfft + filterbank + log: (T, F) for one utterance."""
    num = 1 + (len(x) - WIN) // HOP if len(x) >= WIN else 0
    n = np.arange(WIN)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / WIN)  # periodic Hann
    frames = np.stack([x[t * HOP : t * HOP + WIN] for t in range(num)]).astype(np.float64) * window
    power = np.abs(np.fft.rfft(frames, n=NFFT, axis=-1)) ** 2  # (T, NFFT//2+1)
    feats = np.log(power @ np_mel_filterbank(NMELS, NFFT, SR, 0.0, SR / 2) + 1e-6)
    if normalize:
        feats = (feats - feats.mean(0)) / np.sqrt(feats.var(0) + 1e-5)
    return feats


def test_filterbank_matches_numpy() -> None:
    ours = mel_filterbank(NMELS, NFFT, SR, 0.0, SR / 2).numpy()
    assert ours.shape == (NFFT // 2 + 1, NMELS)
    np.testing.assert_allclose(ours, np_mel_filterbank(NMELS, NFFT, SR, 0.0, SR / 2), atol=1e-10)
    assert (ours >= 0).all() and ours.max() <= 1.0


@pytest.mark.parametrize("normalize", ["none", "utterance"])
def test_log_mel_matches_numpy(normalize: str) -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(7 * HOP + WIN + 37) * 0.1).astype(np.float32)
    fe = LogMel(LogMelConfig(normalize=normalize))  # type: ignore[arg-type]
    feats, lens = fe(torch.from_numpy(x)[None], torch.tensor([len(x)]))
    ref = np_log_mel(x.astype(np.float64), normalize == "utterance")
    assert lens.tolist() == [8] and feats.shape == (1, 8, NMELS)
    np.testing.assert_allclose(feats[0].numpy(), ref, rtol=1e-4, atol=1e-4 if normalize == "utterance" else 1e-5)


def test_frame_count_formula() -> None:
    cfg = LogMelConfig()
    samples = torch.tensor([0, 399, 400, 559, 560, 16000, 16159])
    expected = [0, 0, 1, 1, 2, 98, 99]
    assert cfg.num_frames(samples).tolist() == expected
    assert [1 + (s - WIN) // HOP if s >= WIN else 0 for s in samples.tolist()] == expected


def test_ragged_batch_equals_single_utterances() -> None:
    torch.manual_seed(0)
    sizes = [4000, 1234, 2500, 399]
    fe = LogMel(LogMelConfig())
    audio = torch.randn(len(sizes), max(sizes)) * 0.1
    audio[1, sizes[1] :] = float("nan")  # padding values are arbitrary (Batch contract)
    feats, lens = fe(audio, torch.tensor(sizes))
    for b, size in enumerate(sizes):
        single, single_len = fe(audio[b : b + 1, :size], torch.tensor([size]))
        assert lens[b] == single_len[0]
        torch.testing.assert_close(feats[b, : lens[b]], single[0], rtol=1e-5, atol=1e-5)
        assert (feats[b, lens[b] :] == 0).all()  # padded frames zeroed


def test_config_validation_names_option() -> None:
    with pytest.raises(ValueError, match="n_fft"):
        LogMelConfig(n_fft=256)
    with pytest.raises(ValueError, match="f_max"):
        LogMelConfig(f_max=9000.0)
    assert dataclasses.replace(LogMelConfig(), n_mels=40).n_mels == 40
