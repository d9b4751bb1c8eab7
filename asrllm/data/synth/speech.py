"""espeak-ng speakers and noisy 16 kHz FLAC rendering for the synthetic corpus (egs/mini_synth).

A speaker is one espeak-ng setting: English voice (accent) + voice variant + rate + pitch. Held-out
speakers differ from training speakers by more than identity: the (rate, pitch) pairs of the grid
are split between train, dev and test, so no dev or test speaker shares its (rate, pitch) pair —
hence its (voice, variant, rate, pitch) combination — with any training speaker.

Rendering one utterance:
    synthesize: espeak-ng (22.05 kHz wav) -> sox -D (16 kHz float, no dither)
    degrade:    + silence before/after -> + white/pink/brown noise at a drawn SNR (numpy, seeded
                per utterance) -> peak-normalised to a drawn level -> int16
    write_flac: FLAC via soundfile, written to a temporary name and renamed
Every random choice comes from the utterance's own seed, so files are byte-identical across runs
and independent of how utterances are spread over worker processes.

Shapes: S audio samples.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from asrllm.data.synth.text import SUBSETS

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # Hz, as every asrllm audio input
NOISE_COLORS = ("white", "pink", "brown")
_NOISE_EXPONENT = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # power spectrum ~ 1 / f^exponent
_INT16_MAX = 32767

# English voices (accents) of espeak-ng 1.51 that need no mbrola data (`espeak-ng --voices=en`).
DEFAULT_VOICES = tuple(
    "en-us en-us-nyc en-gb en-gb-x-rp en-gb-scotland en-gb-x-gbclan en-gb-x-gbcwmd en-029".split()
)
# Voice variants that still sound like plain speech (no whisper, croak or robot variants).
DEFAULT_VARIANTS = tuple(
    "m1 m2 m3 m4 m5 m6 m7 f1 f2 f3 f4 f5 klatt klatt2 klatt3 klatt4 belinda edward linda travis".split()
)


@dataclasses.dataclass(frozen=True)
class SynthSpeechConfig:
    """espeak-ng speaker grid, noise, and the programs that render speech.

    >>> SynthSpeechConfig(test_speakers=4).num_speakers("test")
    4
    """

    voices: tuple[str, ...] = DEFAULT_VOICES  # espeak-ng English voices (accents), `-v <voice>+...`
    variants: tuple[str, ...] = DEFAULT_VARIANTS  # espeak-ng voice variants (espeak-ng-data/voices/!v)
    # Speaking rates (`-s`, nominal words per minute; espeak-ng speaks faster than the nominal
    # rate, about 3.6 words/s at 160). Slowish rates keep the default corpus at about 4-5 hours.
    rates: tuple[int, ...] = (110, 125, 140, 155, 170)
    pitches: tuple[int, ...] = (20, 30, 40, 50, 60, 70, 80)  # pitch settings, 0..99 (`-p`)
    train_speakers: int = 80  # speakers in train
    dev_speakers: int = 10  # speakers in dev (their rate/pitch pairs are not used in train)
    test_speakers: int = 10  # speakers in test (their rate/pitch pairs are not used in train or dev)
    utts_per_chapter: int = 25  # utterances per chapter directory, as in LibriSpeech
    snr_db_min: float = 5.0  # lowest signal-to-noise ratio of the added noise, dB
    snr_db_max: float = 25.0  # highest SNR, dB; each utterance draws uniformly in [min, max]
    noise_colors: tuple[str, ...] = NOISE_COLORS  # noise spectra to draw from (white, pink, brown)
    silence_min_s: float = 0.1  # shortest silence added before and after the speech, seconds
    silence_max_s: float = 0.5  # longest; each side draws uniformly; the noise covers it too
    peak_min: float = 0.3  # lowest peak amplitude after normalisation (full scale = 1)
    peak_max: float = 0.9  # highest peak amplitude; each utterance draws uniformly in [min, max]
    espeak_command: str = "espeak-ng"  # text-to-speech program
    sox_command: str = "sox"  # resampler (run with -D: no dither, so output is deterministic)

    def __post_init__(self) -> None:
        for name in ("voices", "variants", "rates", "pitches", "noise_colors"):
            values = getattr(self, name)
            if not values:
                raise ValueError(f"speech.{name}: give at least one value")
            if len(set(values)) != len(values):
                raise ValueError(f"speech.{name}: duplicate value in {list(values)}")
        for r in self.rates:
            if not 80 <= r <= 450:
                raise ValueError(f"speech.rates: {r} is outside espeak-ng's 80..450 words per minute")
        for p in self.pitches:
            if not 0 <= p <= 99:
                raise ValueError(f"speech.pitches: {p} is outside espeak-ng's 0..99")
        for c in self.noise_colors:
            if c not in NOISE_COLORS:
                raise ValueError(
                    f"speech.noise_colors: unknown colour {c!r} (known: {', '.join(NOISE_COLORS)})"
                )
        if len(self.rates) * len(self.pitches) < len(SUBSETS):
            raise ValueError(
                "speech.rates x speech.pitches: need at least 3 (rate, pitch) pairs to keep train, "
                f"dev and test speakers apart, got {len(self.rates)} x {len(self.pitches)}"
            )
        for name in ("train_speakers", "dev_speakers", "test_speakers", "utts_per_chapter"):
            if getattr(self, name) < 1:
                raise ValueError(f"speech.{name}: must be >= 1, got {getattr(self, name)}")
        if self.snr_db_min > self.snr_db_max:
            raise ValueError(f"speech.snr_db_min={self.snr_db_min} > speech.snr_db_max={self.snr_db_max}")
        if not 0.0 <= self.silence_min_s <= self.silence_max_s:
            raise ValueError(
                f"speech.silence_min_s={self.silence_min_s}, speech.silence_max_s={self.silence_max_s}: "
                "need 0 <= silence_min_s <= silence_max_s"
            )
        if not 0.0 < self.peak_min <= self.peak_max <= 1.0:
            raise ValueError(
                f"speech.peak_min={self.peak_min}, speech.peak_max={self.peak_max}: "
                "need 0 < peak_min <= peak_max <= 1"
            )

    def num_speakers(self, subset: str) -> int:
        """Speakers of `subset` (train, dev or test)."""
        return {"train": self.train_speakers, "dev": self.dev_speakers, "test": self.test_speakers}[subset]


@dataclasses.dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: an espeak-ng setting with a LibriSpeech-style integer id.

    >>> Speaker(103, "train", "en-us", "m3", 150, 40).espeak_args()
    ['-v', 'en-us+m3', '-s', '150', '-p', '40']
    """

    spk_id: int  # LibriSpeech-style speaker id
    subset: str  # train, dev or test
    voice: str  # espeak-ng voice (accent)
    variant: str  # espeak-ng voice variant
    rate: int  # words per minute
    pitch: int  # 0..99

    def espeak_args(self) -> list[str]:
        """espeak-ng options that select this speaker."""
        return ["-v", f"{self.voice}+{self.variant}", "-s", str(self.rate), "-p", str(self.pitch)]

    def to_dict(self) -> dict[str, object]:
        """Plain dict for JSON."""
        return dataclasses.asdict(self)


def split_rate_pitch_pairs(cfg: SynthSpeechConfig, seed: int) -> dict[str, list[tuple[int, int]]]:
    """Disjoint (rate, pitch) pairs per subset: dev and test get a share of the grid proportional to
    their speaker counts (at least one pair each), train the rest."""
    pairs = list(itertools.product(cfg.rates, cfg.pitches))
    order = np.random.default_rng([seed, 3]).permutation(len(pairs))
    pairs = [pairs[i] for i in order]
    total = sum(cfg.num_speakers(s) for s in SUBSETS)
    n_dev, n_test = (max(1, round(len(pairs) * cfg.num_speakers(s) / total)) for s in ("dev", "test"))
    n_dev = min(n_dev, len(pairs) - 2)
    n_test = min(n_test, len(pairs) - n_dev - 1)
    return {
        "dev": pairs[:n_dev],
        "test": pairs[n_dev : n_dev + n_test],
        "train": pairs[n_dev + n_test :],
    }


def design_speakers(cfg: SynthSpeechConfig, seed: int) -> dict[str, list[Speaker]]:
    """Speakers per subset, deterministic in `seed`; ids run from 100 over train, dev, test.

    Each subset draws distinct (voice, variant, rate, pitch) combinations from its own (rate, pitch)
    pairs, so held-out speakers never share a combination — nor a (rate, pitch) pair — with train.
    """
    pairs = split_rate_pitch_pairs(cfg, seed)
    out: dict[str, list[Speaker]] = {}
    next_id = 100
    for k, subset in enumerate(SUBSETS):
        combos = [
            (voice, variant, rate, pitch)
            for rate, pitch in pairs[subset]
            for voice in cfg.voices
            for variant in cfg.variants
        ]
        n = cfg.num_speakers(subset)
        if n > len(combos):
            raise ValueError(
                f"speech.{subset}_speakers={n}: only {len(combos)} distinct voice/variant/rate/pitch "
                f"combinations are available to {subset}; add voices, variants, rates or pitches"
            )
        chosen = np.random.default_rng([seed, 4, k]).choice(len(combos), size=n, replace=False)
        out[subset] = [Speaker(next_id + i, subset, *combos[j]) for i, j in enumerate(chosen)]
        next_id += n
    return out


# ---------------------------------------------------------------------------------------------
# Rendering


def synthesize(text: str, speaker: Speaker, cfg: SynthSpeechConfig, utt_id: str) -> np.ndarray:
    """espeak-ng speech for `text`, resampled by sox to 16 kHz: (S,) float32.

    Text goes to espeak-ng in lower case, since it may spell out upper-case words letter by letter.
    """
    espeak = [cfg.espeak_command, *speaker.espeak_args(), "--stdout", text.lower()]
    sox = [cfg.sox_command, "-D", "-q", "-t", "wav", "-", "-t", "raw", "-e", "floating-point",
           "-b", "32", "-L", "-c", "1", "-r", str(SAMPLE_RATE), "-"]  # fmt: skip
    wav = _run(espeak, None, utt_id)
    raw = _run(sox, wav, utt_id)
    samples = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if samples.size == 0 or not np.any(samples):
        raise RuntimeError(f"{utt_id}: espeak-ng produced no speech for {text!r}")
    return samples


def _run(cmd: list[str], stdin: bytes | None, utt_id: str) -> bytes:
    """stdout of `cmd`; errors name the utterance and the command."""
    try:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, check=True)
    except OSError as e:
        raise RuntimeError(f"{utt_id}: cannot run {cmd[0]} (apt-get install espeak-ng sox): {e}") from None
    except subprocess.CalledProcessError as e:
        raise RuntimeError(
            f"{utt_id}: {' '.join(cmd[:-1])} failed: {e.stderr.decode(errors='replace')}"
        ) from None
    return proc.stdout


def colored_noise(rng: np.random.Generator, num_samples: int, color: str) -> np.ndarray:
    """Gaussian noise with power spectrum ~ 1/f^a (white a=0, pink 1, brown 2), unit mean power:
    (S,) float64. Shaped in the frequency domain; the DC bin is zeroed.

    >>> x = colored_noise(np.random.default_rng(0), 16000, "pink")
    >>> x.shape, round(float(np.mean(x**2)), 6)
    ((16000,), 1.0)
    """
    white = rng.standard_normal(num_samples)
    exponent = _NOISE_EXPONENT[color]
    if exponent > 0.0:
        spectrum = np.fft.rfft(white)  # (S//2 + 1,)
        freqs = np.fft.rfftfreq(num_samples)
        freqs[0] = np.inf  # zero DC: 1/inf = 0
        white = np.fft.irfft(spectrum / freqs ** (exponent / 2.0), n=num_samples)
    return white / np.sqrt(np.mean(white**2))


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float, speech_power: float) -> np.ndarray:
    """speech + noise scaled so that speech_power / mean(scaled noise^2) = 10^(snr_db/10).

    `speech_power` is the mean square of the speech before silence padding (espeak-ng itself
    leaves little silence), so padding does not change the SNR.

    >>> mix_at_snr(np.ones(4), np.array([1.0, -1.0, 1.0, -1.0]), 20.0, 1.0)
    array([1.1, 0.9, 1.1, 0.9])
    """
    assert speech.shape == noise.shape, (speech.shape, noise.shape)
    gain = np.sqrt(speech_power / (np.mean(noise**2) * 10.0 ** (snr_db / 10.0)))
    return speech + gain * noise


def to_int16(audio: np.ndarray, peak: float) -> np.ndarray:
    """Scale so that max |audio| = `peak` (full scale 1) and quantise: (S,) int16.

    >>> to_int16(np.array([0.5, -1.0, 0.25]), 0.5)
    array([  8192, -16384,   4096], dtype=int16)
    """
    scaled = audio * (peak / np.max(np.abs(audio)))
    return np.round(scaled * _INT16_MAX).astype(np.int16)


@dataclasses.dataclass(frozen=True)
class Degradation:
    """How one utterance is padded, noised and scaled (drawn per utterance, see `draw`).

    >>> d = Degradation.draw(np.random.default_rng(0), SynthSpeechConfig())
    >>> 5.0 <= d.snr_db <= 25.0 and d.noise_color in NOISE_COLORS
    True
    """

    snr_db: float  # SNR of the added noise
    noise_color: str  # white, pink or brown
    lead_s: float  # silence before the speech, seconds
    trail_s: float  # silence after the speech, seconds
    peak: float  # peak amplitude after normalisation (full scale 1)
    noise_seed: int  # seeds the noise samples

    @classmethod
    def draw(cls, rng: np.random.Generator, cfg: SynthSpeechConfig) -> Degradation:
        """Random settings within the ranges of `cfg` (rounded, so they read well in logs)."""
        return cls(
            snr_db=round(float(rng.uniform(cfg.snr_db_min, cfg.snr_db_max)), 2),
            noise_color=str(rng.choice(list(cfg.noise_colors))),
            lead_s=round(float(rng.uniform(cfg.silence_min_s, cfg.silence_max_s)), 3),
            trail_s=round(float(rng.uniform(cfg.silence_min_s, cfg.silence_max_s)), 3),
            peak=round(float(rng.uniform(cfg.peak_min, cfg.peak_max)), 3),
            noise_seed=int(rng.integers(2**32)),
        )


def degrade(speech: np.ndarray, d: Degradation) -> np.ndarray:
    """Pad with silence, add coloured noise at the SNR, scale to the peak: (S,) int16."""
    power = float(np.mean(speech.astype(np.float64) ** 2))
    lead, trail = round(d.lead_s * SAMPLE_RATE), round(d.trail_s * SAMPLE_RATE)
    padded = np.concatenate([np.zeros(lead), speech.astype(np.float64), np.zeros(trail)])
    noise = colored_noise(np.random.default_rng(d.noise_seed), padded.size, d.noise_color)
    return to_int16(mix_at_snr(padded, noise, d.snr_db, power), d.peak)


def flac_seconds(path: Path) -> float | None:
    """Duration of a complete, decodable 16 kHz mono FLAC, else None (missing, truncated, other
    format). Decodes the whole file: the header alone survives truncation."""
    try:
        info = sf.info(str(path))
        if info.format != "FLAC" or info.samplerate != SAMPLE_RATE or info.channels != 1:
            return None
        frames = int(sf.read(str(path), dtype="int16")[0].shape[0])
    except (OSError, RuntimeError, sf.LibsndfileError):
        return None
    if frames == 0 or frames != info.frames:
        return None
    return frames / SAMPLE_RATE


def write_flac(path: Path, samples: np.ndarray) -> None:
    """Write 16-bit FLAC to a temporary name next to `path`, then rename, so a killed run never
    leaves a truncated file under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    sf.write(str(tmp), samples, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    os.replace(tmp, path)
