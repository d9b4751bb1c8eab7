"""Audio reading: 16 kHz mono float32, and a clear error for everything else."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from asrllm.data.audio import AudioError, audio_duration, decode_audio_bytes, read_audio
from asrllm.testing.dummies import sine_audio, write_audio


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_read_audio_roundtrip(tmp_path: Path, suffix: str) -> None:
    audio = sine_audio(0.5)
    path = write_audio(tmp_path / f"a{suffix}", audio)
    out = read_audio(path, "utt1")
    assert out.dtype == np.float32 and out.shape == (8000,)
    np.testing.assert_allclose(out, audio, atol=1e-4)  # 16-bit quantisation
    assert audio_duration(path, "utt1") == 0.5
    np.testing.assert_array_equal(decode_audio_bytes(path.read_bytes(), "utt1", "mem"), out)


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    return {
        "rate": (write_audio(tmp_path / "r.wav", sine_audio(0.1, sample_rate=8000), 8000), "sample rate 8000"),
        "stereo": (write_audio(tmp_path / "s.wav", np.zeros((1600, 2), np.float32)), "2 channels"),
        "empty": (write_audio(tmp_path / "e.wav", np.zeros(0, np.float32)), "empty"),
        "garbage": (tmp_path / "g.flac", "unreadable"),
        "missing": (tmp_path / "nope.wav", "does not exist"),
    }


@pytest.mark.parametrize("kind", ["rate", "stereo", "empty", "garbage", "missing"])
def test_bad_audio_names_utterance_file_and_problem(tmp_path: Path, kind: str) -> None:
    (tmp_path / "g.flac").write_bytes(b"not audio at all")
    path, problem = _bad_files(tmp_path)[kind]
    for read in (read_audio, audio_duration):
        with pytest.raises(AudioError) as e:
            read(path, f"utt-{kind}")
        assert f"utt-{kind}" in str(e.value) and path.name in str(e.value) and problem in str(e.value)


@pytest.mark.parametrize("kind", ["rate", "stereo", "garbage"])
def test_bad_bytes_name_utterance_and_source(tmp_path: Path, kind: str) -> None:
    (tmp_path / "g.flac").write_bytes(b"not audio at all")
    path, problem = _bad_files(tmp_path)[kind]
    with pytest.raises(AudioError, match=f"'u7': shard.parquet row 3: .*{problem}"):
        decode_audio_bytes(path.read_bytes(), "u7", "shard.parquet row 3")
    with pytest.raises(AudioError, match="0 bytes"):
        decode_audio_bytes(b"", "u7", "shard.parquet row 3")
