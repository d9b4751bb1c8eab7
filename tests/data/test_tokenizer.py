"""Tokenizers: the AM id layout, round trips, word-start masks, save/load, config errors, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from asrllm.bin.train_tokenizer import main as train_main
from asrllm.config import ConfigError, save_config
from asrllm.data.tokenizer import (
    TOKENIZER_CLASSES,
    CharTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    TokenizerConfig,
    load_tokenizer,
    train_tokenizer,
)
from asrllm.testing.dummies import dummy_text, make_datadir

TEXTS = [dummy_text(np.random.default_rng(i), 3, 10) for i in range(200)] + ["IT'S 1999 AND 42 DOGS"]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tok") / "text"
    path.write_text("".join(f"{t}\n" for t in TEXTS))
    return path


CONFIGS = {
    "bpe": TokenizerConfig(kind="sentencepiece", model_type="bpe", vocab_size=60, num_threads=1),
    "unigram": TokenizerConfig(kind="sentencepiece", model_type="unigram", vocab_size=60, num_threads=1,
                               hard_vocab_limit=False),
    "char": TokenizerConfig(kind="char"),
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def trained(
    request: pytest.FixtureRequest, text_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path]:
    out = tmp_path_factory.mktemp(request.param)
    train_tokenizer(CONFIGS[request.param], text_file, out)
    return request.param, out


def test_id_layout(trained: tuple[str, Path]) -> None:
    tok = load_tokenizer(trained[1])
    assert isinstance(tok, Tokenizer)
    assert tok.pieces[:3] == ["<blank>", "<unk>", "<sos/eos>"]
    assert (tok.blank_id, tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 0, 1, 2, 2)
    assert tok.vocab_size == len(tok.pieces) == len(set(tok.pieces))
    if trained[0] == "bpe":
        assert tok.vocab_size == 60
    ids = [i for t in TEXTS for i in tok.encode(t)]
    assert min(ids) >= 3  # specials are never produced by encode


def test_roundtrip_and_word_starts(trained: tuple[str, Path]) -> None:
    tok = load_tokenizer(trained[1])
    mask = tok.word_start_mask()
    assert mask.dtype == torch.bool and mask.shape == (tok.vocab_size,)
    assert not mask[:3].any()
    assert mask.tolist() == [tok.is_word_start(i) for i in range(tok.vocab_size)]
    for text in TEXTS:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert sum(mask[ids].tolist()) == len(text.split())  # exactly one word start per word
        assert tok.decode([0, 2, *ids, 2]) == text  # blank and sos/eos are dropped


def test_split_digits_and_unknown(trained: tuple[str, Path]) -> None:
    kind, path = trained
    tok = load_tokenizer(path)
    assert not any(any(c.isdigit() for c in p) and len(p.strip("▁")) > 1 for p in tok.pieces)
    assert tok.unk_id in tok.encode("HELLO ÀÉ")  # À, É are not in the training text
    assert "<unk>" in tok.decode(tok.encode("ÀÉ"))


def test_char_layout(text_file: Path, tmp_path: Path) -> None:
    tok = train_tokenizer(TokenizerConfig(kind="char"), text_file, tmp_path)
    assert isinstance(tok, CharTokenizer)
    chars = sorted(set("".join(TEXTS).replace(" ", "")))
    assert tok.pieces == ["<blank>", "<unk>", "<sos/eos>", "▁", *chars]
    assert tok.encode("A  BE") == [3, tok.pieces.index("A"), 3, tok.pieces.index("B"), tok.pieces.index("E")]
    assert (tmp_path / "chars.txt").is_file()


def test_sentencepiece_files(text_file: Path, tmp_path: Path) -> None:
    tok = train_tokenizer(CONFIGS["bpe"], text_file, tmp_path)
    assert isinstance(tok, SentencePieceTokenizer)
    assert (tmp_path / "spm.model").is_file() and (tmp_path / "tokenizer.yaml").is_file()
    assert set(TOKENIZER_CLASSES) == {"sentencepiece", "char", "hf"}


def test_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="vocab_size"):
        TokenizerConfig(vocab_size=3)
    with pytest.raises(ConfigError, match="character_coverage"):
        TokenizerConfig(character_coverage=0.0)
    (tmp_path / "tokenizer.yaml").write_text("kind: char\nvocab_sise: 10\n")
    with pytest.raises(ConfigError, match="vocab_sise"):
        load_tokenizer(tmp_path)
    with pytest.raises(ConfigError, match="no such text file"):
        train_tokenizer(TokenizerConfig(kind="char"), tmp_path / "missing", tmp_path / "o")


def test_cli_from_datadir_and_text_file(tmp_path: Path, text_file: Path) -> None:
    utts = make_datadir(tmp_path / "data", 20)
    conf = tmp_path / "tok.yaml"
    save_config(TokenizerConfig(kind="sentencepiece", vocab_size=40, num_threads=1), conf)
    out = tmp_path / "token"
    args = ["--config", str(conf), "--data-dir", str(tmp_path / "data"), "--out-dir", str(out),
            "hard_vocab_limit=false"]
    assert train_main(args) == 0
    tok = load_tokenizer(out)
    assert all(tok.decode(tok.encode(u.text)) == u.text for u in utts)
    assert sorted(p.name for p in out.iterdir()) == ["inputs.json", "spm.model", "spm.vocab", "tokenizer.yaml"]  # temp text removed
    assert train_main(["--config", str(conf), "--text-file", str(text_file), "--out-dir", str(tmp_path / "t2")]) == 0
    assert train_main(["--config", str(conf), "--text-file", str(text_file), "--out-dir", str(tmp_path / "t3"),
                       "vocab_sise=3"]) == 1
