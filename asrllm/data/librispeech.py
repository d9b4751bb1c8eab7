"""LibriSpeech tree -> Kaldi-style data dir.

Layout read (the standard OpenSLR tarballs unpacked under `root`):

    <root>/LibriSpeech/<subset>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac
    <root>/LibriSpeech/<subset>/<spk>/<chapter>/<spk>-<chapter>.trans.txt   ("<utt id> <TRANSCRIPT>" lines)

Every problem in the tree (a transcript line without its flac, a flac without a transcript line,
unreadable, truncated or corrupt audio, a wrong sample rate, empty or non-UTF-8 text, duplicate ids)
is collected first and reported together, each naming the file and the utterance; the data dir is
written only when there is none, so a failed run leaves nothing half-written. Every flac is decoded
once, in a thread pool (a truncated FLAC keeps its full-length header; see `asrllm.data.audio`), and
utt2dur holds the decoded durations.
"""

from __future__ import annotations

import logging
from pathlib import Path

from asrllm.data.audio import AudioError, decoded_durations
from asrllm.data.datadir import DataError, Utterance, problems_error, write_datadir

logger = logging.getLogger(__name__)


def _read_transcripts(trans: Path, errors: list[str]) -> list[tuple[str, str]]:
    """(utt id, text) pairs from one `.trans.txt`; problems are appended to `errors`."""
    pairs = []
    for lineno, raw in enumerate(trans.read_bytes().splitlines(), start=1):
        if not raw.strip():
            continue
        head = raw.split(maxsplit=1)
        utt_id = head[0].decode("utf-8", errors="replace")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            errors.append(f"{trans}:{lineno}: utterance {utt_id!r}: transcript is not valid UTF-8 ({e.reason})")
            continue
        _, *rest = line.split(maxsplit=1)
        text = " ".join(rest[0].split()) if rest else ""
        if not text:
            errors.append(f"{trans}:{lineno}: utterance {utt_id!r}: empty transcript")
            continue
        pairs.append((utt_id, text))
    return pairs


def prepare_librispeech(
    root: str | Path, subset: str, out_dir: str | Path, num_workers: int | None = None
) -> list[Utterance]:
    """Build the data dir `out_dir` for `<root>/LibriSpeech/<subset>`; returns its utterances.

    Durations come from decoding every flac (`num_workers` threads, None = one per CPU); the
    speaker is the first id field. Raises `DataError` listing every problem found (the first
    `datadir.MAX_REPORTED_ERRORS` of them).
    """
    subset_dir = Path(root) / "LibriSpeech" / subset
    if not subset_dir.is_dir():
        raise DataError(f"{subset_dir}: no such directory (expected <root>/LibriSpeech/{subset})")
    errors: list[str] = []
    flacs = {p.name[: -len(".flac")]: p for p in sorted(subset_dir.glob("*/*/*.flac"))}
    seen: dict[str, Path] = {}
    found: list[tuple[str, str, Path]] = []  # (utt id, text, flac) of every transcript line with audio
    for trans in sorted(subset_dir.glob("*/*/*.trans.txt")):
        for utt_id, text in _read_transcripts(trans, errors):
            if utt_id in seen:
                errors.append(f"{trans}: utterance {utt_id!r}: duplicate id (also in {seen[utt_id]})")
                continue
            seen[utt_id] = trans
            flac = trans.parent / f"{utt_id}.flac"
            if not flac.is_file():
                errors.append(f"{trans}: utterance {utt_id!r}: transcript line without audio file {flac}")
                continue
            found.append((utt_id, text, flac))
    utts = []
    for (utt_id, text, flac), duration in zip(
        found, decoded_durations([(utt_id, flac) for utt_id, _, flac in found], num_workers), strict=True
    ):
        if isinstance(duration, AudioError):
            errors.append(str(duration))
            continue
        utts.append(Utterance(utt_id, str(flac.resolve()), duration, text, utt_id.split("-")[0]))
    for utt_id, flac in flacs.items():
        if utt_id not in seen:
            errors.append(f"{flac}: utterance {utt_id!r}: audio file without a transcript line")
    if errors:
        raise problems_error(subset_dir, errors, ", nothing written")
    if not utts:
        raise DataError(f"{subset_dir}: no utterances found")
    write_datadir(out_dir, utts)
    logger.info("%s: %d utterances, %.2f h -> %s", subset, len(utts), sum(u.duration for u in utts) / 3600, out_dir)
    return sorted(utts, key=lambda u: u.id)
