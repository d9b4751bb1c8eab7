"""Audio I/O: 16 kHz mono float32, read with soundfile from files or from encoded bytes.

Every model input is raw 16 kHz mono audio (features are computed inside the model), so this module
refuses anything else rather than resampling or down-mixing silently: a corpus with the wrong format
is a data-preparation bug, and the error says which utterance and which file to look at.

Shapes: S audio samples.

>>> read_audio("/no/such.flac", "1-2-3")
Traceback (most recent call last):
    ...
asrllm.data.audio.AudioError: utterance '1-2-3': /no/such.flac: file does not exist
"""

from __future__ import annotations

import io
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


def _check_format(sample_rate: int, channels: int, frames: int, utt_id: str, source: str | Path) -> None:
    if sample_rate != SAMPLE_RATE:
        raise AudioError(utt_id, source, f"sample rate {sample_rate} Hz, expected {SAMPLE_RATE} Hz")
    if channels != 1:
        raise AudioError(utt_id, source, f"{channels} channels, expected mono")
    if frames <= 0:
        raise AudioError(utt_id, source, "empty audio (0 samples)")


def _read(file: str | io.BytesIO, utt_id: str, source: str | Path) -> np.ndarray:
    try:
        audio, rate = sf.read(file, dtype="float32", always_2d=True)  # (S, channels)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(utt_id, source, f"unreadable audio: {e}") from None
    _check_format(rate, audio.shape[1], audio.shape[0], utt_id, source)
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
