"""LibriSpeech preparation on a generated tree, and every broken-tree error naming file and utterance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from asrllm.bin.prepare_librispeech import main as prepare_main
from asrllm.data.datadir import DataError, read_datadir
from asrllm.data.librispeech import prepare_librispeech
from asrllm.testing.dummies import make_librispeech_tree, sine_audio, truncate_file, write_audio

SUBSET = "dev-clean"


def test_prepare(tmp_path: Path) -> None:
    expected = make_librispeech_tree(tmp_path / "corpus", SUBSET)
    assert len(expected) == 12
    out = prepare_librispeech(tmp_path / "corpus", SUBSET, tmp_path / "data")
    assert out == expected
    assert read_datadir(tmp_path / "data", validate_audio=True) == expected
    assert (tmp_path / "data" / "utt2spk").read_text().splitlines()[0] == f"{expected[0].id} {expected[0].speaker}"


def test_cli(tmp_path: Path) -> None:
    expected = make_librispeech_tree(tmp_path / "corpus", SUBSET, num_speakers=1, chapters_per_speaker=1)
    assert prepare_main(["--root", str(tmp_path / "corpus"), "--subset", SUBSET, "--out-dir", str(tmp_path / "d")]) == 0
    assert read_datadir(tmp_path / "d") == expected
    assert prepare_main(["--root", str(tmp_path / "corpus"), "--subset", "nope", "--out-dir", str(tmp_path / "e")]) == 1


def _break(kind: str, chapter: Path, utt: str) -> str:
    """Break the tree in one way; returns the file name the error must name."""
    trans = next(chapter.glob("*.trans.txt"))
    flac = chapter / f"{utt}.flac"
    lines = trans.read_bytes().splitlines(keepends=True)
    if kind == "flac_missing":
        flac.unlink()
        return trans.name
    if kind == "trans_missing":
        trans.write_bytes(b"".join(lines[1:]))
        return flac.name
    if kind == "truncated":
        truncate_file(flac, 0.6)
        return flac.name
    if kind == "unreadable":
        flac.write_bytes(b"garbage")
        return flac.name
    if kind == "rate":
        write_audio(flac, sine_audio(0.5, sample_rate=8000), 8000)
        return flac.name
    if kind == "stereo":
        write_audio(flac, np.zeros((800, 2), np.float32))
        return flac.name
    if kind == "empty_text":
        trans.write_bytes(f"{utt}\n".encode() + b"".join(lines[1:]))
        return trans.name
    if kind == "non_utf8":
        trans.write_bytes(f"{utt} H\xc3".encode("latin-1") + b"\xff\n" + b"".join(lines[1:]))
        return trans.name
    if kind == "duplicate":
        trans.write_bytes(b"".join(lines) + lines[0])
        return trans.name
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind, problem",
    [
        ("flac_missing", "without audio file"),
        ("trans_missing", "without a transcript line"),
        ("unreadable", "unreadable audio"),
        ("truncated", "truncated or corrupt"),
        ("rate", "sample rate 8000"),
        ("stereo", "2 channels"),
        ("empty_text", "empty transcript"),
        ("non_utf8", "not valid UTF-8"),
        ("duplicate", "duplicate id"),
    ],
)
def test_broken_tree_names_file_and_utterance(tmp_path: Path, kind: str, problem: str) -> None:
    utts = make_librispeech_tree(tmp_path / "corpus", SUBSET)
    utt = utts[0].id
    name = _break(kind, Path(utts[0].audio).parent, utt)
    with pytest.raises(DataError) as e:
        prepare_librispeech(tmp_path / "corpus", SUBSET, tmp_path / "data")
    msg = str(e.value)
    assert repr(utt) in msg and name in msg and problem in msg, msg
    assert not (tmp_path / "data").exists()  # nothing half-written


def test_many_problems_are_reported_together(tmp_path: Path) -> None:
    utts = make_librispeech_tree(tmp_path / "corpus", SUBSET)
    for u in utts[:3]:
        Path(u.audio).unlink()
    with pytest.raises(DataError, match="3 problem") as e:
        prepare_librispeech(tmp_path / "corpus", SUBSET, tmp_path / "data")
    assert all(u.id in str(e.value) for u in utts[:3])
