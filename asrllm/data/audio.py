"""Audio I/O: 16 kHz mono float32, read with soundfile from files or from encoded bytes.

Every model input is raw 16 kHz mono audio (features are computed inside the model), so this module
refuses anything else rather than resampling or down-mixing silently: a corpus with the wrong format
is a data-preparation bug, and the error says which utterance and which file to look at.

A file header is not evidence that the audio is there: a FLAC cut off mid-stream keeps its header
(with the full length), and libsndfile then either fails mid-decode ("flac decoder lost sync") or,
for other formats, returns fewer samples than the header promised, which soundfile passes on
silently. Reading therefore always checks that the decoded length equals the header's, and
`decoded_durations` decodes many files in a thread pool (libsndfile runs outside the GIL) so that
data preparation and validation can afford to decode everything once.

Shapes: S audio samples.

>>> read_audio("/no/such.flac", "1-2-3")
Traceback (most recent call last):
    ...
asrllm.data.audio.AudioError: utterance '1-2-3': /no/such.flac: file does not exist
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000  # Hz; the only rate the models accept


class AudioError(ValueError):
    """Audio that cannot be used; the message names the utterance id, the source and the problem."""

    def __init__(self, utt_id: str, source: str | Path, problem: str) -> None:
        super().__init__(f"utterance {utt_id!r}: {source}: {problem}")
        self.utt_id = utt_id
        self.source = str(source)
        self.problem = problem


def _check_format(sample_rate: int, channels: int, frames: int, utt_id: str, source: str | Path) -> None:
    if sample_rate != SAMPLE_RATE:
        raise AudioError(utt_id, source, f"sample rate {sample_rate} Hz, expected {SAMPLE_RATE} Hz")
    if channels != 1:
        raise AudioError(utt_id, source, f"{channels} channels, expected mono")
    if frames <= 0:
        raise AudioError(utt_id, source, "empty audio (0 samples)")


def _read(file: str | io.BytesIO, utt_id: str, source: str | Path, dtype: str = "float32") -> np.ndarray:
    """All samples of channel 0, (S,); the decoded length must equal the header's (see module doc)."""
    try:
        with sf.SoundFile(file) as f:
            _check_format(f.samplerate, f.channels, f.frames, utt_id, source)
            expected = f.frames
            audio = f.read(dtype=dtype, always_2d=True)  # (S, channels)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(utt_id, source, f"unreadable audio (truncated or corrupt?): {e}") from None
    if len(audio) != expected:
        raise AudioError(
            utt_id, source, f"truncated: the header says {expected} samples ({expected / SAMPLE_RATE:.3f} s), "
            f"only {len(audio)} ({len(audio) / SAMPLE_RATE:.3f} s) could be decoded",
        )
    return np.ascontiguousarray(audio[:, 0])  # (S,)


def read_audio(path: str | Path, utt_id: str) -> np.ndarray:
    """Read a 16 kHz mono file into float32 samples in [-1, 1], shape (S,).

    Raises `AudioError` (naming `utt_id` and `path`) for a missing, unreadable, empty,
    multichannel or non-16 kHz file.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(utt_id, path, "file does not exist")
    return _read(str(path), utt_id, path)


def decode_audio_bytes(data: bytes, utt_id: str, source: str) -> np.ndarray:
    """Decode an encoded file held in memory (e.g. a parquet `wav` cell) into (S,) float32.

    `source` says where the bytes came from (e.g. `shard.parquet row 17`) for the error message.
    """
    if not data:
        raise AudioError(utt_id, source, "empty audio (0 bytes)")
    return _read(io.BytesIO(data), utt_id, source)


def audio_duration(path: str | Path, utt_id: str) -> float:
    """Duration in seconds from the file header only, after the same checks as `read_audio`."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(utt_id, path, "file does not exist")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(utt_id, path, f"unreadable audio: {e}") from None
    _check_format(info.samplerate, info.channels, info.frames, utt_id, path)
    return info.frames / info.samplerate


def decoded_duration(path: str | Path, utt_id: str) -> float:
    """Duration in seconds of the fully decoded file, after the checks of `read_audio`."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(utt_id, path, "file does not exist")
    return len(_read(str(path), utt_id, path, dtype="int16")) / SAMPLE_RATE  # int16: half the memory traffic


def default_num_workers() -> int:
    """Threads for `decoded_durations`: the CPUs this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def decoded_durations(
    files: Sequence[tuple[str, str | Path]], num_workers: int | None = None
) -> list[float | AudioError]:
    """`decoded_duration` of every (utt id, path), in order, decoded by `num_workers` threads.

    Problems are returned in place of the duration (not raised), so that a caller can report all of
    them at once. `num_workers` None = `default_num_workers()`; 0 or 1 = in this thread.
    """
    def one(item: tuple[str, str | Path]) -> float | AudioError:
        try:
            return decoded_duration(item[1], item[0])
        except AudioError as e:
            return e

    workers = default_num_workers() if num_workers is None else num_workers
    if workers < 0:
        raise ValueError(f"num_workers={workers} must be >= 0")
    if workers <= 1:
        return [one(item) for item in files]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, files))
