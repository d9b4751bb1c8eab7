"""Checks where data meets a model or a tokenizer, run once before training starts.

`select_trainable` leaves out the utterances a CTC model cannot learn from, for reasons that only
the model's frame rate and the tokenizer decide, not the data dir alone:
- too short: fewer samples than one analysis window give 0 encoder frames (alone in a batch, the
  convolutions fail with a kernel-size error; in a batch, CTC's loss is infinite and zeroed);
- too many labels: CTC needs L + R frames for L labels with R adjacent repeats (a blank must
  separate each repeated pair), so an utterance with fewer frames has no alignment: its loss is
  infinite, `zero_infinity` makes it 0, and it still counts in the loss denominator;
- too long: longer than the training `max_duration` (padding and memory; the sampler used to do
  this by index, here the id and duration are reported).
The caller logs the counts and writes every id with its reason to a file (`write_filtered`).

`unknown_characters` finds transcript characters the tokenizer maps to `<unk>`, tested one
distinct character at a time (`unk_id in encode(c)`), which holds for the character and the
SentencePiece tokenizers alike, and `check_unknown_characters` warns or raises on them.

Shapes: n utterances.

>>> ctc_min_frames([5, 5, 6, 6, 6])
8
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

import torch

from asrllm.config import atomic_write_text
from asrllm.data.audio import SAMPLE_RATE
from asrllm.data.datadir import DataError, Utterance

if TYPE_CHECKING:  # tokenizer.py reports unknown characters through this module
    from asrllm.data.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

MAX_EXAMPLES = 5  # ids (or characters) named in a log line; the file lists them all
UnknownCharsPolicy = Literal["warn", "error"]


@runtime_checkable
class FrameCounter(Protocol):
    """A model that says how many encoder frames an utterance of a given length gives."""

    def num_output_frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        """Samples (any shape, int64) -> encoder frames, same shape; exact (required)."""
        ...


def ctc_min_frames(labels: Sequence[int]) -> int:
    """Fewest frames a CTC alignment of `labels` needs: L + number of adjacent equal pairs."""
    return len(labels) + sum(a == b for a, b in zip(labels, labels[1:]))


@dataclasses.dataclass(frozen=True)
class Filtered:
    """One utterance left out of training, and why."""

    id: str
    reason: Literal["too_short", "too_many_labels", "too_long"]
    detail: str  # the numbers behind the reason, e.g. "0.020 s (320 samples) gives 0 encoder frames"


def select_trainable(
    utts: Sequence[Utterance],
    targets: Sequence[Sequence[int]],  # label ids of each utterance, same order
    num_output_frames: Callable[[torch.Tensor], torch.Tensor],  # samples (n,) -> encoder frames (n,)
    max_duration: float | None = None,  # longer utterances are left out too; None keeps all
) -> tuple[list[int], list[Filtered]]:
    """Indices of the utterances to train on (in order), and those left out with their reasons.

    Frames are counted from utt2dur (`round(duration · 16 kHz)` samples): validate the data dir
    (`read_datadir(validate_audio=True)`) for that to match the audio.
    """
    assert len(utts) == len(targets), (len(utts), len(targets))
    samples = torch.tensor([round(u.duration * SAMPLE_RATE) for u in utts], dtype=torch.int64)  # (n,)
    frames = num_output_frames(samples).tolist() if len(utts) else []
    kept: list[int] = []
    dropped: list[Filtered] = []
    for i, (u, labels, s, t) in enumerate(zip(utts, targets, samples.tolist(), frames, strict=True)):
        need = ctc_min_frames(labels)
        if t == 0:
            dropped.append(Filtered(u.id, "too_short", f"{s / SAMPLE_RATE:.3f} s ({s} samples) gives 0 encoder frames"))
        elif t < need:
            dropped.append(Filtered(
                u.id, "too_many_labels",
                f"{len(labels)} labels need {need} CTC frames, {u.duration:.3f} s gives {t} encoder frames",
            ))
        elif max_duration is not None and u.duration > max_duration:
            dropped.append(Filtered(u.id, "too_long", f"{u.duration:.3f} s > max_duration={max_duration} s"))
        else:
            kept.append(i)
    return kept, dropped


def describe_filtered(dropped: Sequence[Filtered], total: int, where: str) -> str:
    """One line: how many were left out of `total`, per reason, with a few example ids."""
    by_reason: dict[str, list[str]] = {}
    for f in dropped:
        by_reason.setdefault(f.reason, []).append(f.id)
    parts = [
        f"{len(ids)} {reason.replace('_', ' ')} (e.g. {', '.join(map(repr, ids[:MAX_EXAMPLES]))})"
        for reason, ids in by_reason.items()
    ]
    return f"{where}: leaving out {len(dropped)} of {total} utterances: {'; '.join(parts)}"


def write_filtered(path: str | Path, dropped: Sequence[Filtered]) -> None:
    """`<id> <reason> <detail>` per line (written even when empty, so no stale list survives)."""
    atomic_write_text(path, "".join(f"{f.id} {f.reason} {f.detail}\n" for f in dropped))


@dataclasses.dataclass(frozen=True)
class UnknownChars:
    """Characters of some transcripts that the tokenizer cannot represent (they become `<unk>`)."""

    utts: dict[str, list[str]]  # utterance id -> its unknown characters, in order of appearance
    counts: Counter[str]  # character -> number of utterances containing it

    def describe(self, total: int, where: str) -> str:
        """E.g. "training data: 2 of 10 utterances contain ... 'É' (U+00C9) in 2 (e.g. 'a', 'b')"."""
        chars = []
        for c, n in self.counts.most_common(MAX_EXAMPLES):
            examples = [utt_id for utt_id, found in self.utts.items() if c in found][:MAX_EXAMPLES]
            chars.append(f"{c!r} (U+{ord(c):04X}) in {n} (e.g. {', '.join(map(repr, examples))})")
        more = f"; and {len(self.counts) - MAX_EXAMPLES} more characters" if len(self.counts) > MAX_EXAMPLES else ""
        return (
            f"{where}: {len(self.utts)} of {total} utterances contain {len(self.counts)} character(s) outside the "
            f"tokenizer's vocabulary, which become <unk>: {'; '.join(chars)}{more}"
        )


def unknown_characters(tokenizer: Tokenizer, texts: Sequence[tuple[str, str]]) -> UnknownChars:
    """The unknown characters of each (id, text); whitespace is never unknown."""
    distinct = {c for _, text in texts for c in text if not c.isspace()}
    unknown = {c for c in distinct if tokenizer.unk_id in tokenizer.encode(c)}
    utts: dict[str, list[str]] = {}
    counts: Counter[str] = Counter()
    if unknown:
        for utt_id, text in texts:
            found = list(dict.fromkeys(c for c in text if c in unknown))
            if found:
                utts[utt_id] = found
                counts.update(found)
    return UnknownChars(utts, counts)


def check_unknown_characters(
    tokenizer: Tokenizer, texts: Sequence[tuple[str, str]], policy: UnknownCharsPolicy, where: str
) -> UnknownChars:
    """Warn about (policy "warn") or raise `DataError` for (policy "error") unknown characters."""
    found = unknown_characters(tokenizer, texts)
    if found.utts:
        msg = found.describe(len(texts), where)
        if policy == "error":
            raise DataError(f"{msg}. Normalise these transcripts, retrain the tokenizer on them, "
                            "or set data.unknown_chars=warn to train with <unk>")
        logger.warning("%s (data.unknown_chars=error makes this an error)", msg)
    return found
