"""The synthetic corpus of egs/mini_synth in the LibriSpeech directory layout.

    <out_dir>/LibriSpeech/<subset>/<spk>/<chapter>/<spk>-<chapter>-<utt:04d>.flac
    <out_dir>/LibriSpeech/<subset>/<spk>/<chapter>/<spk>-<chapter>.trans.txt
    <out_dir>/LibriSpeech/corpus_info.json     sizes, hours, vocabulary, OOV rates, speakers
    <out_dir>/LibriSpeech/synth_config.yaml    the resolved config the tree was made with
    <out_dir>/librispeech-lm-norm.txt          LM text, one normalised sentence per line

Subsets are `train`, `dev` and `test`. `generate_corpus` is idempotent: an existing valid FLAC is
kept, so a killed run resumes where it stopped; transcripts, LM text and corpus_info.json are
written atomically after the audio, and corpus_info.json comes last (its presence means "done").
Rerunning into a tree made with a different config is an error rather than a silent mix
(or, with `force`, rebuilds it).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from asrllm.config import ConfigError, atomic_write_text, load_yaml, save_config, to_dict
from asrllm.provenance import describe_difference, flatten
from asrllm.data.synth.speech import (
    SAMPLE_RATE,
    Degradation,
    Speaker,
    SynthSpeechConfig,
    degrade,
    design_speakers,
    flac_seconds,
    split_rate_pitch_pairs,
    synthesize,
    write_flac,
)
from asrllm.data.synth.text import (
    SUBSETS,
    SynthTextConfig,
    TextSelection,
    oov_rate,
    read_sources,
    select_text,
)

log = logging.getLogger(__name__)

LM_TEXT_NAME = "librispeech-lm-norm.txt"
INFO_NAME = "corpus_info.json"
CONFIG_NAME = "synth_config.yaml"
_MAX_CHAPTERS_PER_SPEAKER = 100  # chapter id = spk_id * 100 + chapter index
_RUN_ONLY_FIELDS = ("num_workers",)  # options that do not change the corpus


@dataclasses.dataclass(frozen=True)
class SynthCorpusConfig:
    """Everything that determines the synthetic corpus (egs/mini_synth/asr1/conf/corpus.yaml).

    >>> SynthCorpusConfig(num_train=12, num_dev=4, num_test=4).sizes()
    {'train': 12, 'dev': 4, 'test': 4}
    """

    seed: int = 0  # seeds text selection, speaker design and noise: same seed -> identical files
    num_train: int = 4000  # training utterances (about 4.5 h at the default speaker rates)
    num_dev: int = 300  # development utterances
    num_test: int = 300  # test utterances
    num_workers: int = 2  # processes that render audio (does not change the output)
    text: SynthTextConfig = dataclasses.field(default_factory=SynthTextConfig)  # transcript / LM text
    speech: SynthSpeechConfig = dataclasses.field(default_factory=SynthSpeechConfig)  # speakers, noise

    def __post_init__(self) -> None:
        for name in ("num_train", "num_dev", "num_test", "num_workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed: must be in [0, 2**32), got {self.seed}")
        for subset in SUBSETS:
            per_speaker = -(-self.sizes()[subset] // self.speech.num_speakers(subset))
            if per_speaker > self.speech.utts_per_chapter * _MAX_CHAPTERS_PER_SPEAKER:
                raise ValueError(
                    f"num_{subset}={self.sizes()[subset]} over speech.{subset}_speakers="
                    f"{self.speech.num_speakers(subset)} needs more than {_MAX_CHAPTERS_PER_SPEAKER} "
                    "chapters per speaker; raise speech.utts_per_chapter or the speaker count"
                )

    def sizes(self) -> dict[str, int]:
        """Utterances per subset."""
        return {"train": self.num_train, "dev": self.num_dev, "test": self.num_test}


@dataclasses.dataclass(frozen=True)
class UttPlan:
    """Everything needed to render one utterance; random choices are already drawn."""

    utt_id: str  # <spk>-<chapter>-<index:04d>
    speaker: Speaker  # who speaks it (also gives the subset)
    chapter: int  # LibriSpeech-style chapter id, unique over the corpus
    text: str  # normalised transcript
    source: str  # text source (kjv, fortunes, wordnet)
    degradation: Degradation  # silence padding, noise and level

    @property
    def relpath(self) -> Path:
        """FLAC path below <out_dir>/LibriSpeech."""
        spk = self.speaker
        return Path(spk.subset, str(spk.spk_id), str(self.chapter), f"{self.utt_id}.flac")


def plan_subset(
    subset: str,
    transcripts: list[str],
    sources: list[str],
    speakers: list[Speaker],
    speech: SynthSpeechConfig,
    seed: int,
) -> list[UttPlan]:
    """Deal the transcripts of `subset` round-robin to its speakers; each speaker's utterances fill
    chapters of `speech.utts_per_chapter`; noise settings are drawn from a per-utterance seed."""
    plans = []
    k = SUBSETS.index(subset)
    for i, (text, source) in enumerate(zip(transcripts, sources, strict=True)):
        spk = speakers[i % len(speakers)]
        nth = i // len(speakers)  # this speaker's nth utterance
        chapter = spk.spk_id * _MAX_CHAPTERS_PER_SPEAKER + nth // speech.utts_per_chapter
        plans.append(
            UttPlan(
                utt_id=f"{spk.spk_id}-{chapter}-{nth % speech.utts_per_chapter:04d}",
                speaker=spk,
                chapter=chapter,
                text=text,
                source=source,
                degradation=Degradation.draw(np.random.default_rng([seed, 5, k, i]), speech),
            )
        )
    return plans


def plan_corpus(cfg: SynthCorpusConfig, selection: TextSelection) -> list[UttPlan]:
    """Every utterance of the corpus, train then dev then test."""
    speakers = design_speakers(cfg.speech, cfg.seed)
    return [
        plan
        for subset in SUBSETS
        for plan in plan_subset(
            subset,
            selection.transcripts[subset],
            selection.sources[subset],
            speakers[subset],
            cfg.speech,
            cfg.seed,
        )
    ]


def render_plan(plan: UttPlan, speech: SynthSpeechConfig, root: Path) -> tuple[float, bool]:
    """Render one utterance under `root` unless a valid FLAC is already there.
    Returns (seconds of audio, whether it was rendered now)."""
    path = root / plan.relpath
    seconds = flac_seconds(path)
    if seconds is not None:
        return seconds, False
    samples = degrade(synthesize(plan.text, plan.speaker, speech, plan.utt_id), plan.degradation)
    write_flac(path, samples)
    return samples.size / SAMPLE_RATE, True


def render_all(plans: list[UttPlan], speech: SynthSpeechConfig, root: Path, num_workers: int) -> list[float]:
    """Render every plan (in `num_workers` processes); seconds of audio per plan, in plan order."""
    jobs = [(p, speech, root) for p in plans]
    if num_workers == 1:
        return _collect(map(_render_job, jobs), len(jobs))
    with multiprocessing.Pool(num_workers) as pool:
        return _collect(pool.imap(_render_job, jobs, chunksize=8), len(jobs))


def _render_job(job: tuple[UttPlan, SynthSpeechConfig, Path]) -> tuple[float, bool]:
    return render_plan(*job)


def _collect(results: Iterator[tuple[float, bool]], total: int) -> list[float]:
    """Seconds per utterance, in order, logging progress."""
    start = time.monotonic()
    seconds: list[float] = []
    rendered = 0
    for i, (sec, new) in enumerate(results, 1):
        seconds.append(sec)
        rendered += new
        if i % 500 == 0 or i == total:
            elapsed = time.monotonic() - start
            log.info("audio: %d/%d utterances (%d rendered now) in %.0f s", i, total, rendered, elapsed)
    return seconds


def transcript_files(plans: list[UttPlan]) -> dict[Path, str]:
    """<subset>/<spk>/<chapter>/<spk>-<chapter>.trans.txt -> its text, lines sorted by utterance id."""
    lines: dict[Path, list[str]] = {}
    for p in plans:
        name = f"{p.speaker.spk_id}-{p.chapter}.trans.txt"
        lines.setdefault(p.relpath.parent / name, []).append(f"{p.utt_id} {p.text}\n")
    return {path: "".join(sorted(ls)) for path, ls in lines.items()}


def corpus_info(
    cfg: SynthCorpusConfig, selection: TextSelection, plans: list[UttPlan], seconds: list[float]
) -> dict[str, Any]:
    """The summary written to corpus_info.json."""
    train_words = {w for t in selection.transcripts["train"] for w in t.split()}
    lm_words = {w for t in selection.lm_lines for w in t.split()}
    subsets: dict[str, Any] = {}
    for subset in SUBSETS:
        idx = [i for i, p in enumerate(plans) if p.speaker.subset == subset]
        texts = selection.transcripts[subset]
        subsets[subset] = {
            "utterances": len(idx),
            "speakers": len({plans[i].speaker.spk_id for i in idx}),
            "chapters": len({plans[i].chapter for i in idx}),
            "hours": round(sum(seconds[i] for i in idx) / 3600.0, 3),
            "words": sum(len(t.split()) for t in texts),
            "word_types": len({w for t in texts for w in t.split()}),
            "sources": dict(Counter(selection.sources[subset])),
            "mean_snr_db": round(float(np.mean([plans[i].degradation.snr_db for i in idx])), 2),
        }
    speakers = design_speakers(cfg.speech, cfg.seed)
    return {
        "seed": cfg.seed,
        "sample_rate": SAMPLE_RATE,
        "subsets": subsets,
        "vocabulary": {
            "candidate_words": len(selection.vocabulary),
            "train_word_types": len(train_words),
            "proper_names_rejected": selection.num_names,
        },
        "oov_rate_vs_train": {
            s: round(oov_rate(selection.transcripts[s], train_words), 5) for s in ("dev", "test")
        },
        "lm_text": {
            "file": LM_TEXT_NAME,
            "lines": len(selection.lm_lines),
            "words": sum(len(t.split()) for t in selection.lm_lines),
            "word_types": len(lm_words),
            "oov_rate": {s: round(oov_rate(selection.transcripts[s], lm_words), 5) for s in ("dev", "test")},
            "contains_dev_or_test_sentences": False,  # by construction: see text.build_lm_text
        },
        "noise": {
            "snr_db": [cfg.speech.snr_db_min, cfg.speech.snr_db_max],
            "colors": list(cfg.speech.noise_colors),
        },
        "speaker_design": {
            "description": (
                "speaker = espeak-ng voice + variant + rate + pitch; the (rate, pitch) grid is split "
                "into disjoint parts for train, dev and test, so held-out speakers use rate/pitch "
                "(hence voice/variant/rate/pitch) combinations never seen in training"
            ),
            "rate_pitch_pairs": {
                s: [list(p) for p in v] for s, v in split_rate_pitch_pairs(cfg.speech, cfg.seed).items()
            },
            "speakers": {s: [spk.to_dict() for spk in v] for s, v in speakers.items()},
        },
    }


def check_config(cfg: SynthCorpusConfig, out_dir: Path, force: bool) -> None:
    """Record the config in the tree, or check that an existing tree was made with the same one.

    A tree made with another config is an error naming the differing keys; with `force` it is
    deleted (with the LM text) and built again.
    """
    root = out_dir / "LibriSpeech"
    path = root / CONFIG_NAME
    wanted = _corpus_defining(to_dict(cfg))
    if path.exists():
        found = _corpus_defining(load_yaml(path))
        if found == wanted:
            return
        diff = describe_difference(flatten(found, ""), flatten(wanted, ""))
        if not force:
            raise ConfigError(
                f"{root} was made with a different config (differs in: {diff}); "
                "re-run with --force true to build it again, or use a new --out-dir"
            )
        log.warning("%s was made with a different config (differs in: %s): building it again (--force)", root, diff)
        shutil.rmtree(root)
        (out_dir / LM_TEXT_NAME).unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    save_config(cfg, path)


def _corpus_defining(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in _RUN_ONLY_FIELDS}


def generate_corpus(cfg: SynthCorpusConfig, out_dir: str | Path, force: bool = False) -> dict[str, Any]:
    """Build (or finish building) the corpus under `out_dir`; returns the corpus_info dict.

    force: rebuild a tree that was made with another config (otherwise an error).
    """
    out_dir = Path(out_dir)
    root = out_dir / "LibriSpeech"
    check_config(cfg, out_dir, force)
    selection = select_text(cfg.text, read_sources(cfg.text), cfg.sizes(), cfg.seed)
    plans = plan_corpus(cfg, selection)
    seconds = render_all(plans, cfg.speech, root, cfg.num_workers)
    for rel, text in transcript_files(plans).items():
        atomic_write_text(root / rel, text)
    atomic_write_text(out_dir / LM_TEXT_NAME, "".join(f"{line}\n" for line in selection.lm_lines))
    info = corpus_info(cfg, selection, plans, seconds)
    atomic_write_text(root / INFO_NAME, json.dumps(info, indent=2) + "\n")
    log.info(
        "corpus ready in %s: %s; OOV vs train %s",
        root,
        ", ".join(
            f"{s} {info['subsets'][s]['utterances']} utts {info['subsets'][s]['hours']:.2f} h"
            for s in SUBSETS
        ),
        info["oov_rate_vs_train"],
    )
    return info
