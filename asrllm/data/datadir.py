"""Utterance manifests and Kaldi-style data directories.

A data directory holds four text files, one line per utterance, sorted by utterance id:

    wav.scp   <id> <audio path>         (paths may contain spaces; no Kaldi pipes)
    text      <id> <TRANSCRIPT>
    utt2spk   <id> <speaker>
    utt2dur   <id> <seconds>

`read_datadir` checks what a training run would otherwise trip over hours later (duplicate ids,
ids missing from one of the files, empty or non-UTF-8 text, malformed lines) and raises
`DataError` naming the file, the line number and the utterance. With `validate_audio` it also
decodes every audio file once, in a thread pool (`audio.decoded_durations`), and reports together
every file that is missing, truncated, corrupt or in the wrong format, and every utt2dur entry that
disagrees with the decoded length by more than `DURATION_TOLERANCE_S` or `DURATION_TOLERANCE_REL`
(a wrong utt2dur would defeat `max_duration` and the RTFx of decoding). `write_datadir` writes each
file atomically, so an interrupted stage never leaves a half-written file behind.

An optional fifth file, `utt2category` (`<id> <category>`, e.g. the kinds of a probe set), groups
utterances for scoring (`read_categories`, `write_categories`): metrics per group next to the whole set's.

>>> u = Utterance("1-2-3", "/a/1-2-3.flac", 1.5, "HELLO WORLD", "1")
>>> Utterance.from_dict(u.to_dict()) == u
True
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from asrllm import config
from asrllm.config import atomic_write_text
from asrllm.data.audio import AudioError, decoded_durations

logger = logging.getLogger(__name__)

DATADIR_FILES = ("wav.scp", "text", "utt2spk", "utt2dur")  # all are required
DURATION_TOLERANCE_S = 0.01  # utt2dur may differ from the decoded length by this many seconds ...
DURATION_TOLERANCE_REL = 0.01  # ... or by this share of it, whichever is larger
MAX_REPORTED_ERRORS = 20  # a broken corpus can have thousands of problems; show the first ones
HOW_TO_FIX = (
    "Fix these files, or remove the utterances (their lines in wav.scp, text, utt2spk and utt2dur), "
    "or re-run data preparation."
)


class DataError(ValueError):
    """A data directory or corpus is malformed; the message names the file, line and utterance."""


@dataclasses.dataclass(frozen=True)
class Utterance:
    """One utterance of a manifest (lhotse-style plain record; use `dataclasses.replace` to derive)."""

    id: str  # unique utterance id, no whitespace
    audio: str  # path to a 16 kHz mono audio file
    duration: float  # seconds
    text: str  # transcript, one line, non-empty
    speaker: str  # speaker id, no whitespace

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Utterance:
        """Strict: unknown or missing keys and wrong types are a `DataError` naming them."""
        try:
            return config.from_dict(cls, data, f"Utterance {data.get('id')!r}")
        except config.ConfigError as e:
            raise DataError(str(e)) from None


def problems_error(where: str | Path, errors: Sequence[str], what: str = "", hint: str = "") -> DataError:
    """One `DataError` listing the first `MAX_REPORTED_ERRORS` problems (each names file and utterance)."""
    shown = "\n  ".join(errors[:MAX_REPORTED_ERRORS])
    more = f"\n  ... and {len(errors) - MAX_REPORTED_ERRORS} more" if len(errors) > MAX_REPORTED_ERRORS else ""
    return DataError(f"{where}: {len(errors)} problem(s){what}:\n  {shown}{more}" + (f"\n{hint}" if hint else ""))


def durations_agree(listed: float, decoded: float) -> bool:
    """|listed - decoded| within DURATION_TOLERANCE_S or DURATION_TOLERANCE_REL · decoded."""
    return abs(listed - decoded) <= max(DURATION_TOLERANCE_S, DURATION_TOLERANCE_REL * decoded)


def _read_lines(path: Path) -> list[tuple[int, str, str]]:
    """(line number, id, rest of line) for every non-blank line of a `<id> <value>` file."""
    if not path.is_file():
        raise DataError(f"{path}: missing (a data dir needs {', '.join(DATADIR_FILES)})")
    entries = []
    for lineno, raw in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            utt = raw.split(maxsplit=1)[0].decode("utf-8", errors="replace") if raw.strip() else "?"
            raise DataError(f"{path}:{lineno}: utterance {utt!r}: not valid UTF-8 ({e.reason})") from None
        if not line.strip():
            continue
        utt_id, *value = line.split(maxsplit=1)  # the value keeps its inner spaces (paths, text)
        entries.append((lineno, utt_id, value[0].strip() if value else ""))
    return entries


def _read_map(path: Path, required_value: bool = True) -> dict[str, tuple[int, str]]:
    """id -> (line number, value); duplicate ids and missing values are errors."""
    out: dict[str, tuple[int, str]] = {}
    for lineno, utt_id, value in _read_lines(path):
        if utt_id in out:
            raise DataError(f"{path}:{lineno}: utterance {utt_id!r}: duplicate id (first on line {out[utt_id][0]})")
        if required_value and not value:
            what = "empty transcript" if path.name == "text" else "missing value"
            raise DataError(f"{path}:{lineno}: utterance {utt_id!r}: {what}")
        out[utt_id] = (lineno, value)
    return out


def read_datadir(
    data_dir: str | Path, validate_audio: bool = False, num_workers: int | None = None
) -> list[Utterance]:
    """Read a Kaldi-style data dir into utterances sorted by id.

    With `validate_audio`, every audio file is decoded once by `num_workers` threads (None = one per
    CPU): all problems found (missing, unreadable, truncated or non-16 kHz-mono audio, utt2dur
    disagreeing with the decoded length) are raised together as one `DataError`. That costs a full
    decode of the corpus, so it is off by default; data preparation and `asrllm.bin.validate_data` do it.
    """
    data_dir = Path(data_dir)
    maps = {name: _read_map(data_dir / name) for name in DATADIR_FILES}
    wav = maps["wav.scp"]
    wav_scp = data_dir / "wav.scp"
    for name in DATADIR_FILES[1:]:
        for utt_id, (lineno, _) in maps[name].items():
            if utt_id not in wav:
                raise DataError(f"{data_dir / name}:{lineno}: utterance {utt_id!r}: missing from {wav_scp}")
        for utt_id, (lineno, _) in wav.items():
            if utt_id not in maps[name]:
                raise DataError(f"{wav_scp}:{lineno}: utterance {utt_id!r}: missing from {data_dir / name}")
    utts = []
    for utt_id in sorted(wav):
        lineno, dur_str = maps["utt2dur"][utt_id]
        try:
            duration = float(dur_str)
        except ValueError:
            duration = math.nan
        if not (math.isfinite(duration) and duration > 0):
            where = f"{data_dir / 'utt2dur'}:{lineno}: utterance {utt_id!r}"
            raise DataError(f"{where}: bad duration {dur_str!r} (need seconds > 0)")
        utts.append(Utterance(utt_id, wav[utt_id][1], duration, maps["text"][utt_id][1], maps["utt2spk"][utt_id][1]))
    if validate_audio:
        _validate_audio(data_dir, utts, {u: line for u, (line, _) in wav.items()},
                        {u: line for u, (line, _) in maps["utt2dur"].items()}, num_workers)
    logger.info("read %d utterances (%.2f h) from %s", len(utts), sum(u.duration for u in utts) / 3600, data_dir)
    return utts


def _validate_audio(
    data_dir: Path, utts: Sequence[Utterance], wav_lines: dict[str, int], dur_lines: dict[str, int],
    num_workers: int | None,
) -> None:
    """Decode every file once; raise one `DataError` for all audio and utt2dur problems."""
    start = time.perf_counter()
    decoded = decoded_durations([(u.id, u.audio) for u in utts], num_workers)
    errors = []
    for u, d in zip(utts, decoded, strict=True):
        if isinstance(d, AudioError):
            errors.append(f"{data_dir / 'wav.scp'}:{wav_lines[u.id]}: {d}")
        elif not durations_agree(u.duration, d):
            errors.append(
                f"{data_dir / 'utt2dur'}:{dur_lines[u.id]}: utterance {u.id!r}: utt2dur says {u.duration:.3f} s, "
                f"but {u.audio} decodes to {d:.3f} s (tolerance {DURATION_TOLERANCE_S} s or {DURATION_TOLERANCE_REL:.0%})"
            )
    seconds = time.perf_counter() - start
    logger.info("%s: decoded %d audio files in %.1f s: %d problem(s)", data_dir, len(utts), seconds, len(errors))
    if errors:
        raise problems_error(data_dir, errors, " found by decoding every audio file", HOW_TO_FIX)


def check_utterances(utts: Iterable[Utterance], where: str = "") -> None:
    """Raise `DataError` for values that `read_datadir` would not read back exactly.

    A value is one `<id> <value>` line: it must not contain a line break, and the reader strips
    the whitespace around it, so a value with surrounding whitespace would come back changed.
    """
    seen: set[str] = set()
    prefix = f"{where}: " if where else ""
    for u in utts:
        if not u.id or any(c.isspace() for c in u.id):
            raise DataError(f"{prefix}utterance {u.id!r}: id is empty or contains whitespace")
        if u.id in seen:
            raise DataError(f"{prefix}utterance {u.id!r}: duplicate id")
        seen.add(u.id)
        if not u.text.strip():
            raise DataError(f"{prefix}utterance {u.id!r}: empty transcript")
        if "\n" in u.text or "\r" in u.text:
            raise DataError(f"{prefix}utterance {u.id!r}: transcript contains a line break")
        if u.text != u.text.strip():
            raise DataError(f"{prefix}utterance {u.id!r}: transcript {u.text!r} starts or ends with whitespace")
        if not u.speaker or any(c.isspace() for c in u.speaker):
            raise DataError(f"{prefix}utterance {u.id!r}: speaker {u.speaker!r} is empty or contains whitespace")
        if not u.audio or "\n" in u.audio or "\r" in u.audio or u.audio != u.audio.strip():
            raise DataError(f"{prefix}utterance {u.id!r}: bad audio path {u.audio!r} (empty, a line break, "
                            "or whitespace around it)")
        if not (isinstance(u.duration, int | float) and math.isfinite(u.duration) and u.duration > 0):
            raise DataError(f"{prefix}utterance {u.id!r}: bad duration {u.duration!r} (need seconds > 0)")


def write_datadir(data_dir: str | Path, utts: Sequence[Utterance]) -> None:
    """Write utterances as a Kaldi-style data dir (sorted by id; each file written atomically).

    Everything is validated before the first file is written.
    """
    data_dir = Path(data_dir)
    check_utterances(utts, str(data_dir))
    ordered = sorted(utts, key=lambda u: u.id)
    columns = {
        "wav.scp": [u.audio for u in ordered],
        "text": [u.text for u in ordered],
        "utt2spk": [u.speaker for u in ordered],
        "utt2dur": [repr(float(u.duration)) for u in ordered],  # repr round-trips exactly
    }
    for name, values in columns.items():
        atomic_write_text(data_dir / name, "".join(f"{u.id} {v}\n" for u, v in zip(ordered, values, strict=True)))
    logger.info("wrote %d utterances to %s", len(ordered), data_dir)


CATEGORY_FILE = "utt2category"  # optional: <id> <category>


def read_categories(data_dir: str | Path, ids: Iterable[str]) -> dict[str, str] | None:
    """utterance id -> category from `data_dir/utt2category`, None without that file. Every utterance
    of `ids` needs one, and nothing else may have one: errors name the file, line and utterance."""
    path = Path(data_dir) / CATEGORY_FILE
    if not path.is_file():
        return None
    entries = _read_map(path)
    wanted = set(ids)
    for utt_id, (lineno, value) in entries.items():
        if utt_id not in wanted:
            raise DataError(f"{path}:{lineno}: utterance {utt_id!r} is not in the data dir")
        if len(value.split()) != 1:
            raise DataError(f"{path}:{lineno}: utterance {utt_id!r}: category {value!r} must be one word")
    missing = sorted(wanted - set(entries))
    if missing:
        raise DataError(f"{path}: no category for {len(missing)} utterances, e.g. {missing[0]!r}")
    return {utt_id: value for utt_id, (_, value) in entries.items()}


def write_categories(data_dir: str | Path, categories: dict[str, str]) -> None:
    """Write `data_dir/utt2category` (sorted by id, atomically)."""
    atomic_write_text(Path(data_dir) / CATEGORY_FILE, "".join(f"{u} {categories[u]}\n" for u in sorted(categories)))
