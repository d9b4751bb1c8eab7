"""A hallucination probe set for mini_synth: audio on which speech LLMs are known to go wrong
(PAPER.md §7: loops, made-up words on silence, truncated long audio), rendered like the corpus.

Three kinds of utterances, from the test set's transcripts and speakers (held out from training):
- `noise`: coloured noise only, 1-6 s, at the corpus' levels. The reference is `<noise>`, which the
  leaderboard normaliser removes: WER leaves these out, `words_on_silence` (asrllm.eval.hallucination)
  counts what a model says on them;
- `trunc`: a test sentence spoken only up to about half of its words, as if the recording stopped
  mid-sentence; the reference is the words spoken. An LLM that "completes" the sentence inserts;
- `long`: consecutive test sentences spoken in one utterance, longer than any training utterance
  (`min_long_seconds`); the reference is their words. Models that lose their place loop or stop.
Every random choice comes from (seed, kind, index): the files are the same on every run.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from asrllm.config import ConfigError
from asrllm.data.datadir import Utterance
from asrllm.data.synth.speech import (
    SAMPLE_RATE,
    Degradation,
    Speaker,
    SynthSpeechConfig,
    colored_noise,
    degrade,
    flac_seconds,
    synthesize,
    to_int16,
    write_flac,
)

NOISE_REFERENCE = "<noise>"  # normalised to nothing: not scored by WER, counted as silence


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    """How many probe utterances of each kind, and their shape."""

    num_noise: int = 20  # noise-only utterances
    noise_seconds: tuple[float, float] = (1.0, 6.0)  # their duration range
    num_truncated: int = 20  # sentences cut after about `truncate_fraction` of their words
    truncate_fraction: float = 0.5
    num_long: int = 10  # utterances of several sentences, each longer than `min_long_seconds`
    seed: int = 0
    id_prefix: str = "probe"  # utterance ids <id_prefix>-<kind>-<index>; e.g. "noise" for noise-only training data

    def __post_init__(self) -> None:
        if min(self.num_noise, self.num_truncated, self.num_long) < 0:
            raise ConfigError("ProbeConfig: the utterance counts must be >= 0")
        if not self.id_prefix or not all(c.isalnum() or c in "_." for c in self.id_prefix):
            raise ConfigError(f"ProbeConfig: id_prefix={self.id_prefix!r} must be letters, digits, '_' or '.'")
        if not 0 < self.truncate_fraction < 1:
            raise ConfigError(f"ProbeConfig: truncate_fraction={self.truncate_fraction} must lie in (0, 1)")
        low, high = self.noise_seconds
        if not 0 < low <= high:
            raise ConfigError(f"ProbeConfig: noise_seconds={self.noise_seconds} must be 0 < low <= high")


def truncated_text(text: str, fraction: float) -> str:
    """The first ceil(fraction · words) words, at least one, never all of a sentence of two or more.

    >>> truncated_text("ONE TWO THREE FOUR FIVE", 0.5), truncated_text("ONE", 0.5)
    ('ONE TWO THREE', 'ONE')
    """
    words = text.split()
    keep = min(max(1, math.ceil(fraction * len(words))), max(1, len(words) - 1))
    return " ".join(words[:keep])


@dataclasses.dataclass(frozen=True)
class ProbePlan:
    """One probe utterance, every random choice drawn."""

    utt_id: str  # <id_prefix>-<kind>-<index:04d>
    kind: str  # noise | trunc | long
    text: str  # reference
    parts: tuple[str, ...]  # the sentences spoken, in order (none for noise)
    speaker: Speaker | None  # who speaks them (None for noise)
    degradation: Degradation  # padding, noise and level, as in the corpus
    seconds: float = 0.0  # noise: its duration


def plan_probe_set(
    cfg: ProbeConfig, speech: SynthSpeechConfig, speakers: Sequence[Speaker], texts: Sequence[str],
    min_long_seconds: float,
) -> list[ProbePlan]:
    """The probe utterances: texts are the test transcripts in a fixed order, speakers the test speakers."""
    if not texts or not speakers:
        raise ConfigError("probe set: needs test transcripts and test speakers")
    plans = []
    for i in range(cfg.num_noise):
        rng = np.random.default_rng([cfg.seed, 1, i])
        d = Degradation.draw(rng, speech)
        plans.append(ProbePlan(f"{cfg.id_prefix}-noise-{i:04d}", "noise", NOISE_REFERENCE, (), None, d,
                               round(float(rng.uniform(*cfg.noise_seconds)), 3)))
    for i in range(cfg.num_truncated):
        text = truncated_text(texts[i % len(texts)], cfg.truncate_fraction)
        d = Degradation.draw(np.random.default_rng([cfg.seed, 2, i]), speech)
        plans.append(ProbePlan(f"{cfg.id_prefix}-trunc-{i:04d}", "trunc", text, (text,), speakers[i % len(speakers)], d))
    nxt = cfg.num_truncated  # long utterances use the sentences after those
    for i in range(cfg.num_long):
        spk = speakers[i % len(speakers)]
        parts: list[str] = []
        while sum(_spoken_seconds(p, spk) for p in parts) <= LONG_MARGIN * min_long_seconds:
            parts.append(texts[nxt % len(texts)])
            nxt += 1
        d = Degradation.draw(np.random.default_rng([cfg.seed, 3, i]), speech)
        plans.append(ProbePlan(f"{cfg.id_prefix}-long-{i:04d}", "long", " ".join(parts), tuple(parts), spk, d))
    return plans


LONG_MARGIN = 1.2  # long utterances are planned this much longer than required (the rate is approximate)


def _spoken_seconds(text: str, spk: Speaker) -> float:
    """About how long `spk` takes to say `text` (espeak-ng's rate is in words per minute)."""
    return len(text.split()) * 60.0 / spk.rate


def render_probe(plan: ProbePlan, speech: SynthSpeechConfig) -> np.ndarray:
    """(S,) int16 samples of one probe utterance."""
    d = plan.degradation
    if plan.kind == "noise":
        noise = colored_noise(np.random.default_rng(d.noise_seed), round(plan.seconds * SAMPLE_RATE), d.noise_color)
        return to_int16(noise, d.peak)
    assert plan.speaker is not None
    return degrade(np.concatenate([synthesize(p, plan.speaker, speech, plan.utt_id) for p in plan.parts]), d)


def render_probe_set(plans: Sequence[ProbePlan], speech: SynthSpeechConfig, audio_dir: Path) -> list[Utterance]:
    """Render every plan into `audio_dir` (complete FLACs already there are kept); the data-dir utterances."""
    utts = []
    for plan in plans:
        path = audio_dir / f"{plan.utt_id}.flac"
        seconds = flac_seconds(path)
        if seconds is None:
            samples = render_probe(plan, speech)
            write_flac(path, samples)
            seconds = samples.size / SAMPLE_RATE
        prefix = plan.utt_id.split("-", 1)[0]
        speaker = f"{prefix}-noise" if plan.speaker is None else f"{prefix}-{plan.speaker.spk_id}"
        utts.append(Utterance(id=plan.utt_id, audio=str(path), duration=seconds, text=plan.text, speaker=speaker))
    return utts
