"""Stage records (asrllm.provenance): digests, the one re-run rule, and the stages that use it
outside decoding and training (tokenizer, data prep, LLM export and perplexity are covered by
their own CLI tests where a model is needed; here the cheap ones)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from asrllm.bin.prepare_librispeech import main as prepare_main
from asrllm.bin.train_tokenizer import main as tokenizer_main
from asrllm.config import save_config
from asrllm.data.tokenizer import TokenizerConfig
from asrllm.provenance import (
    StaleOutputError,
    corpus_digest,
    datadir_digest,
    decide,
    file_digest,
    flatten,
    write_record,
)
from asrllm.testing.dummies import make_datadir, make_librispeech_tree


def test_digests_follow_content(tmp_path: Path) -> None:
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("x")
    (d / "sub/b.bin").write_bytes(b"\0\1")
    first = file_digest(d)
    assert first.startswith("sha256:") and file_digest(d) == first
    (d / "sub/b.bin").write_bytes(b"\0\2")
    assert file_digest(d) != first
    (d / "sub/b.bin").rename(d / "sub/c.bin")  # a rename changes a tree's digest too
    assert file_digest(d) != first
    with pytest.raises(FileNotFoundError, match="does not exist"):
        file_digest(tmp_path / "missing")


def test_datadir_and_corpus_digests(tmp_path: Path) -> None:
    make_datadir(tmp_path / "data", 3)
    before = datadir_digest(tmp_path / "data")
    (tmp_path / "data/inputs.json").write_text("{}")  # not a manifest
    assert datadir_digest(tmp_path / "data") == before
    text = tmp_path / "data/text"
    text.write_text(text.read_text().replace("\n", " X\n", 1))
    assert datadir_digest(tmp_path / "data") != before
    with pytest.raises(FileNotFoundError, match="not a data dir"):
        datadir_digest(tmp_path)

    make_librispeech_tree(tmp_path / "corpus", "dev")
    root = tmp_path / "corpus/LibriSpeech/dev"
    digest = corpus_digest(root)
    trans = sorted(root.rglob("*.trans.txt"))[0]
    trans.write_text(trans.read_text().replace("\n", " X\n"))
    assert corpus_digest(root) != digest


def test_decide_same_other_force(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    record = tmp_path / "out/inputs.json"
    inputs = {**flatten({"beam": 8, "sizes": (1, 2)}, "search"), "data": "sha256:aa"}
    assert decide(record, inputs, False, "the output")  # no record: make it
    write_record(record, inputs, note="not compared")
    assert not decide(record, dict(inputs), False, "the output")  # tuples compare equal to stored lists
    other = {**inputs, "search.beam": 4, "data": "sha256:bb"}
    with pytest.raises(StaleOutputError) as e:
        decide(record, other, False, "the output")
    assert str(e.value).startswith("the output was made from different inputs (differs in: data, search.beam (8 -> 4);")
    assert "--force true" in str(e.value)
    caplog.set_level(logging.WARNING)
    assert decide(record, other, True, "the output") and "redoing it (--force)" in caplog.text
    record.write_text("{not json")
    with pytest.raises(StaleOutputError, match="unreadable stage record"):
        decide(record, inputs, False, "the output")


def test_tokenizer_stage(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_datadir(tmp_path / "data", 12)
    conf = tmp_path / "tok.yaml"
    save_config(TokenizerConfig(kind="char"), conf)
    out = tmp_path / "token"
    args = ["--config", str(conf), "--data-dir", str(tmp_path / "data"), "--out-dir", str(out)]
    assert tokenizer_main(args) == 0
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert tokenizer_main(args) == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes  # skipped: nothing rewritten
    make_datadir(tmp_path / "data", 12, seed=3)  # other transcripts
    caplog.set_level(logging.ERROR)
    assert tokenizer_main(args) == 1 and "differs in: data.0" in caplog.text
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files
    assert tokenizer_main([*args, "--force"]) == 0
    assert json.loads((out / "inputs.json").read_text())["inputs"]["data.0"] == datadir_digest(tmp_path / "data")


def test_data_prep_stage(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_librispeech_tree(tmp_path / "corpus", "dev")
    args = ["--root", str(tmp_path / "corpus"), "--subset", "dev", "--out-dir", str(tmp_path / "data/dev")]
    assert prepare_main(args) == 0
    text = (tmp_path / "data/dev/text").read_text()
    mtime = (tmp_path / "data/dev/text").stat().st_mtime_ns
    assert prepare_main(args) == 0 and (tmp_path / "data/dev/text").stat().st_mtime_ns == mtime
    trans = sorted((tmp_path / "corpus/LibriSpeech/dev").rglob("*.trans.txt"))[0]
    trans.write_text(trans.read_text().replace("\n", " EXTRA\n"))
    caplog.set_level(logging.ERROR)
    assert prepare_main(args) == 1 and "differs in: corpus" in caplog.text
    assert (tmp_path / "data/dev/text").read_text() == text
    assert prepare_main([*args, "--force"]) == 0
    assert "EXTRA" in (tmp_path / "data/dev/text").read_text()
