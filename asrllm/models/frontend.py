"""Log-mel features computed inside the model, so that raw 16 kHz audio is the model input.

Shapes: B utterances, S audio samples, T frames, F mel bins.

Framing (center=False): frame t covers samples [t·hop, t·hop + win), so an utterance of S samples
has T = 1 + (S - win) // hop frames (0 if S < win), the same formula for every utterance of a
ragged batch; frames never read padding, so a batch gives exactly the per-utterance features.
`torch.stft` places a win-long window in the middle of an n_fft-long frame; we pad the audio by
(n_fft - win) / 2 on both sides so that the window, not the FFT frame, starts at t·hop.

Mel scale: HTK, mel(f) = 2595·log10(1 + f/700), triangular filters with unit peak and no area
normalisation, weights interpolated in Hz between mel-spaced edges. This is what
`torchaudio.functional.melscale_fbanks(..., norm=None, mel_scale="htk")` and Kaldi compute
(Slaney's variant differs below 1 kHz and normalises areas).

>>> fe = LogMel(LogMelConfig())
>>> feats, lens = fe(torch.zeros(2, 16000), torch.tensor([16000, 8000]))
>>> tuple(feats.shape), lens.tolist()
((2, 98, 80), [98, 48])
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import nn

HTK_MEL_SCALE = 2595.0  # HTK: mel(f) = 2595·log10(1 + f / 700)
HTK_MEL_BREAK_HZ = 700.0


@dataclasses.dataclass(frozen=True)
class LogMelConfig:
    sample_rate: int = 16000  # Hz; the audio loader guarantees 16 kHz mono
    n_mels: int = 80  # mel bins F
    win_length: int = 400  # samples per analysis window (25 ms at 16 kHz)
    hop_length: int = 160  # samples between frames (10 ms at 16 kHz)
    n_fft: int = 512  # FFT size (>= win_length); n_fft // 2 + 1 frequency bins
    f_min: float = 0.0  # lowest mel filter edge, Hz
    f_max: float | None = None  # highest mel filter edge, Hz; None = Nyquist
    log_floor: float = 1e-6  # features are log(mel power + log_floor)
    normalize: Literal["none", "utterance"] = "utterance"  # per-utterance mean/var over valid frames
    norm_eps: float = 1e-5  # added to the variance before the square root

    def __post_init__(self) -> None:
        if self.n_fft < self.win_length:
            raise ValueError(f"n_fft ({self.n_fft}) must be >= win_length ({self.win_length})")
        if (self.n_fft - self.win_length) % 2:
            raise ValueError(f"n_fft - win_length must be even, got {self.n_fft} - {self.win_length}")
        if self.hop_length <= 0 or self.win_length <= 0 or self.n_mels <= 0:
            raise ValueError("hop_length, win_length and n_mels must be positive")
        nyquist = self.sample_rate / 2
        f_max = nyquist if self.f_max is None else self.f_max
        if not 0 <= self.f_min < f_max <= nyquist:
            raise ValueError(f"need 0 <= f_min ({self.f_min}) < f_max ({f_max}) <= Nyquist ({nyquist})")
        if self.log_floor <= 0:
            raise ValueError(f"log_floor must be positive, got {self.log_floor}")

    def num_frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        """Frames T for each utterance of `num_samples` samples: 1 + (S - win) // hop, at least 0."""
        return torch.where(
            num_samples >= self.win_length,
            1 + torch.div(num_samples - self.win_length, self.hop_length, rounding_mode="floor"),
            torch.zeros_like(num_samples),
        )


def hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    """HTK mel scale."""
    return HTK_MEL_SCALE * torch.log10(1.0 + hz / HTK_MEL_BREAK_HZ)


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    """Inverse of `hz_to_mel`."""
    return HTK_MEL_BREAK_HZ * (10.0 ** (mel / HTK_MEL_SCALE) - 1.0)


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int, f_min: float, f_max: float) -> torch.Tensor:
    """HTK triangular mel filterbank, shape (n_fft // 2 + 1, n_mels), float64.

    Filter m rises linearly (in Hz) from edge m to edge m+1 and falls to edge m+2, where the
    n_mels + 2 edges are equally spaced on the mel scale between f_min and f_max; peaks are 1.
    """
    f64, cpu = torch.float64, "cpu"  # explicit, so that a meta/cuda default device changes nothing
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=f64, device=cpu)  # (n_fft//2+1,)
    mel_lo, mel_hi = hz_to_mel(torch.tensor([f_min, f_max], dtype=f64, device=cpu))
    mel_edges = mel_lo + (mel_hi - mel_lo) * torch.arange(n_mels + 2, dtype=f64, device=cpu) / (n_mels + 1)
    edges = mel_to_hz(mel_edges)  # (n_mels + 2,)
    left, center, right = edges[:-2], edges[1:-1], edges[2:]  # (n_mels,) each
    rising = (freqs[:, None] - left) / (center - left)  # (n_fft//2+1, n_mels)
    falling = (right - freqs[:, None]) / (right - center)
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


class LogMel(nn.Module):
    """Audio (B, S) + sample counts (B,) -> log-mel (B, T, F) + frame counts (B,).

    Padded frames are zero. With normalize="utterance", each mel bin is shifted and scaled to zero
    mean and unit variance over the utterance's valid frames (no batch statistics, so a batch gives
    the per-utterance result, and nothing has to be estimated on training data beforehand).
    """

    filterbank: torch.Tensor
    window: torch.Tensor

    def __init__(self, cfg: LogMelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        f_max = cfg.sample_rate / 2 if cfg.f_max is None else cfg.f_max
        fb = mel_filterbank(cfg.n_mels, cfg.n_fft, cfg.sample_rate, cfg.f_min, f_max)
        self.register_buffer("filterbank", fb.float(), persistent=False)  # (n_fft//2+1, F)
        window = torch.hann_window(cfg.win_length, periodic=True, device="cpu")
        self.register_buffer("window", window, persistent=False)  # (win,)

    def forward(self, audio: torch.Tensor, audio_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(audio.device.type, enabled=False):  # float32: power spans many decades
            return self._log_mel(audio, audio_lens)

    def _log_mel(self, audio: torch.Tensor, audio_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        B, S = audio.shape
        samples = torch.arange(S, device=audio.device)
        # padding values are arbitrary (Batch contract): zero them so that 0 · window stays finite
        audio = audio.float().masked_fill(samples[None, :] >= audio_lens[:, None], 0.0)
        side = (cfg.n_fft - cfg.win_length) // 2
        audio = nn.functional.pad(audio, (side, side))  # window starts at t·hop, see module doc
        lens = cfg.num_frames(audio_lens)
        if S < cfg.win_length:  # not even one frame anywhere in the batch
            return audio.new_zeros(B, 0, cfg.n_mels), lens
        spec = torch.stft(
            audio,
            n_fft=cfg.n_fft,
            hop_length=cfg.hop_length,
            win_length=cfg.win_length,
            window=self.window,
            center=False,
            return_complex=True,
        )  # (B, n_fft//2+1, T)
        power = spec.real.square() + spec.imag.square()
        feats = torch.log(power.transpose(1, 2) @ self.filterbank + cfg.log_floor)  # (B, T, F)
        frames = torch.arange(feats.shape[1], device=feats.device)
        valid = (frames[None, :] < lens[:, None])[..., None]  # (B, T, 1)
        if cfg.normalize == "utterance":
            n = lens.clamp(min=1)[:, None, None].to(feats.dtype)  # (B, 1, 1)
            mean = (feats * valid).sum(1, keepdim=True) / n  # (B, 1, F)
            var = ((feats - mean).square() * valid).sum(1, keepdim=True) / n
            feats = (feats - mean) * torch.rsqrt(var + cfg.norm_eps)
        return feats.masked_fill(~valid, 0.0), lens

