"""asrllm.bin.combine_data: the union of data dirs, duplicate ids named, categories kept only when
every input has them, and the stage rule (same inputs skipped, others an error without --force)."""

from __future__ import annotations

from pathlib import Path

from asrllm.bin import combine_data
from asrllm.data.datadir import (
    Utterance,
    read_categories,
    read_datadir,
    write_categories,
    write_datadir,
)
from asrllm.testing.dummies import make_datadir


def test_combine_data(tmp_path: Path, caplog) -> None:
    a = make_datadir(tmp_path / "a", 3, seed=0)
    b = [Utterance(f"noise-{i}", a[0].audio, a[0].duration, "<noise>", "n") for i in range(2)]
    write_datadir(tmp_path / "b", b)
    out = tmp_path / "ab"
    assert combine_data.main(["--out-dir", str(out), str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert read_datadir(out) == sorted([*a, *b], key=lambda u: u.id)
    assert not (out / "utt2category").exists()  # a has none
    stamp = (out / "text").stat().st_mtime_ns
    assert combine_data.main(["--out-dir", str(out), str(tmp_path / "a"), str(tmp_path / "b")]) == 0  # skipped
    assert (out / "text").stat().st_mtime_ns == stamp
    write_categories(tmp_path / "a", {u.id: "speech" for u in a})
    write_categories(tmp_path / "b", {u.id: "noise" for u in b})
    assert combine_data.main(["--out-dir", str(out), str(tmp_path / "a"), str(tmp_path / "b")]) == 0  # same manifests
    assert combine_data.main(["--out-dir", str(tmp_path / "ab2"), str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert read_categories(tmp_path / "ab2", [u.id for u in [*a, *b]]) == {
        **{u.id: "speech" for u in a}, **{u.id: "noise" for u in b}}
    assert combine_data.main(["--out-dir", str(tmp_path / "aa"), str(tmp_path / "a"), str(tmp_path / "a")]) == 1
    assert f"utterance {a[0].id!r} is in both {tmp_path / 'a'} and {tmp_path / 'a'}" in caplog.text
    assert combine_data.main(["--out-dir", str(tmp_path / "a"), str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    write_datadir(tmp_path / "b", b[:1])  # other inputs: an error without --force
    write_categories(tmp_path / "b", {b[0].id: "noise"})
    assert combine_data.main(["--out-dir", str(out), str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    assert combine_data.main(["--out-dir", str(out), str(tmp_path / "a"), str(tmp_path / "b"), "--force"]) == 0
    assert len(read_datadir(out)) == 4
