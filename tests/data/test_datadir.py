"""Kaldi-style data dirs: round trip, sorting, and an error naming file/line/utterance for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from asrllm.data.datadir import (
    DATADIR_FILES,
    DataError,
    Utterance,
    read_categories,
    read_datadir,
    write_categories,
    write_datadir,
)
from asrllm.testing.dummies import dummy_utterances, make_datadir


def test_roundtrip_sorted_and_exact(tmp_path: Path) -> None:
    utts = dummy_utterances(5, seed=3)
    write_datadir(tmp_path, list(reversed(utts)))
    assert read_datadir(tmp_path) == sorted(utts, key=lambda u: u.id)
    ids = [line.split()[0] for line in (tmp_path / "text").read_text().splitlines()]
    assert ids == sorted(ids)
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temp files


def test_paths_with_spaces_and_dict_roundtrip(tmp_path: Path) -> None:
    u = Utterance("a-1", "/some dir/a 1.wav", 1.25, "HELLO  THERE", "a")
    write_datadir(tmp_path, [u])
    assert read_datadir(tmp_path) == [u]
    assert Utterance.from_dict(u.to_dict()) == u
    with pytest.raises(DataError, match="unknown key 'wav'"):
        Utterance.from_dict({**u.to_dict(), "wav": "x"})


def test_validate_audio(tmp_path: Path) -> None:
    utts = make_datadir(tmp_path / "d", 3)
    assert read_datadir(tmp_path / "d", validate_audio=True) == utts
    Path(utts[1].audio).unlink()
    read_datadir(tmp_path / "d")  # audio is not opened by default
    with pytest.raises(DataError, match=f"wav.scp:2: utterance '{utts[1].id}'.*does not exist"):
        read_datadir(tmp_path / "d", validate_audio=True)


def _write(tmp_path: Path, **files: str) -> None:
    base = {
        "wav.scp": "u1 /a/u1.wav\nu2 /a/u2.wav\n",
        "text": "u1 HELLO\nu2 WORLD\n",
        "utt2spk": "u1 s\nu2 s\n",
        "utt2dur": "u1 1.0\nu2 2.0\n",
    }
    for name in DATADIR_FILES:
        (tmp_path / name).write_text(files.get(name.replace(".", "_"), base[name]))


@pytest.mark.parametrize(
    "files, file_line, utt, problem",
    [
        ({"text": "u1 HELLO\nu1 AGAIN\nu2 WORLD\n"}, "text:2", "u1", "duplicate id"),
        ({"text": "u1 HELLO\n"}, "wav.scp:2", "u2", "missing from"),
        ({"utt2spk": "u1 s\nu2 s\nu3 s\n"}, "utt2spk:3", "u3", "missing from"),
        ({"utt2dur": "u1 1.0\n"}, "wav.scp:2", "u2", "missing from"),
        ({"text": "u1 HELLO\nu2   \n"}, "text:2", "u2", "empty transcript"),
        ({"utt2dur": "u1 1.0\nu2 two\n"}, "utt2dur:2", "u2", "bad duration"),
        ({"wav_scp": "u1 /a/u1.wav\nu2\n"}, "wav.scp:2", "u2", "missing value"),
    ],
)
def test_bad_datadir(tmp_path: Path, files: dict[str, str], file_line: str, utt: str, problem: str) -> None:
    _write(tmp_path, **files)
    with pytest.raises(DataError) as e:
        read_datadir(tmp_path)
    msg = str(e.value)
    assert file_line in msg and repr(utt) in msg and problem in msg, msg


def test_non_utf8_text(tmp_path: Path) -> None:
    _write(tmp_path)
    (tmp_path / "text").write_bytes(b"u1 HELLO\nu2 W\xffRLD\n")
    with pytest.raises(DataError, match=r"text:2: utterance 'u2': not valid UTF-8"):
        read_datadir(tmp_path)


def test_missing_file(tmp_path: Path) -> None:
    _write(tmp_path)
    (tmp_path / "utt2dur").unlink()
    with pytest.raises(DataError, match="utt2dur: missing"):
        read_datadir(tmp_path)


@pytest.mark.parametrize(
    "utt, problem",
    [
        (Utterance("a b", "/x.wav", 1.0, "HI", "s"), "whitespace"),
        (Utterance("a", "/x.wav", 1.0, " ", "s"), "empty transcript"),
        (Utterance("a", "/x.wav", 1.0, "HI\nTHERE", "s"), "line break"),
        (Utterance("a", "/x.wav", 1.0, "HI", "s 1"), "speaker"),
    ],
)
def test_write_rejects_bad_values_and_writes_nothing(tmp_path: Path, utt: Utterance, problem: str) -> None:
    with pytest.raises(DataError, match=problem):
        write_datadir(tmp_path / "d", [utt])
    assert not (tmp_path / "d").exists()
    with pytest.raises(DataError, match="'a': duplicate id"):
        write_datadir(tmp_path / "d", [Utterance("a", "/x", 1.0, "A", "s")] * 2)


def test_categories_roundtrip_and_errors(tmp_path: Path) -> None:
    assert read_categories(tmp_path, ["a", "b"]) is None  # optional
    write_categories(tmp_path, {"b": "noise", "a": "long"})
    assert (tmp_path / "utt2category").read_text() == "a long\nb noise\n"
    assert read_categories(tmp_path, ["a", "b"]) == {"a": "long", "b": "noise"}
    with pytest.raises(DataError, match=r"utt2category:2: utterance 'b' is not in the data dir"):
        read_categories(tmp_path, ["a"])
    with pytest.raises(DataError, match=r"utt2category: no category for 1 utterances, e.g. 'c'"):
        read_categories(tmp_path, ["a", "b", "c"])
    (tmp_path / "utt2category").write_text("a long\nb two words\n")
    with pytest.raises(DataError, match=r"utt2category:2: utterance 'b': category 'two words' must be one word"):
        read_categories(tmp_path, ["a", "b"])
