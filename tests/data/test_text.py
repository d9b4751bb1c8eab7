"""Text data for LMs: reading text files and data dirs; the token-bucketed, resumable TextBatchLoader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from asrllm.config import ConfigError
from asrllm.data.datadir import DataError
from asrllm.data.text import TextBatchLoader, TextData, TextDataConfig, num_words, read_texts
from asrllm.data.tokenizer import CharTokenizer
from asrllm.testing.dummies import WORDS, dummy_text, make_datadir

TOK = CharTokenizer(sorted(set("".join(WORDS))))
SENTENCES = [(f"s{i:03d}", dummy_text(np.random.default_rng(i), 1, 8)) for i in range(60)]


def loader(**kwargs: object) -> TextBatchLoader:
    options: dict = dict(max_batch_tokens=120, num_buckets=3, seed=5)
    options.update(kwargs)
    return TextBatchLoader(SENTENCES, TOK, TOK.bos_id, TOK.eos_id, **options)


def test_read_plain_file_dir_and_kaldi_dir(tmp_path: Path) -> None:
    (tmp_path / "lm").mkdir()
    (tmp_path / "lm/text").write_text("HELLO  WORLD\n\nA B\n")
    assert read_texts(tmp_path / "lm") == [("lm-00000001", "HELLO WORLD"), ("lm-00000003", "A B")]
    assert read_texts(tmp_path / "lm/text") == [("text-00000001", "HELLO WORLD"), ("text-00000003", "A B")]
    make_datadir(tmp_path / "dev", 3, seed=0)
    kaldi = read_texts(tmp_path / "dev")
    lines = (tmp_path / "dev/text").read_text().splitlines()
    assert kaldi == [tuple(line.split(" ", 1)) for line in lines]
    with pytest.raises(DataError, match="no sentences"):
        (tmp_path / "empty").write_text("\n \n")
        read_texts(tmp_path / "empty")
    with pytest.raises(DataError, match="neither a text file"):
        read_texts(tmp_path / "missing")


def test_batch_layout_bos_tokens_eos() -> None:
    for batch in loader().epoch_batches(1):
        for b, (sid, text) in enumerate(zip(batch.ids, batch.texts)):
            assert dict(SENTENCES)[sid] == text
            ids = TOK.encode(text)
            n = int(batch.lengths[b])
            assert n == len(ids) + 2
            assert batch.tokens[b, :n].tolist() == [TOK.bos_id, *ids, TOK.eos_id]
        assert batch.tokens.dtype == batch.lengths.dtype == torch.int64
        assert batch.tokens.shape == (len(batch), int(batch.lengths.max()))


def test_every_sentence_once_per_epoch_within_the_token_budget() -> None:
    lo = loader()
    for epoch in (1, 2):
        batches = list(lo.epoch_batches(epoch))
        assert len(batches) == lo.num_batches(epoch)
        ids = [sid for b in batches for sid in b.ids]
        assert sorted(ids) == sorted(sid for sid, _ in SENTENCES)
        for b in batches:
            assert len(b) == 1 or b.tokens.numel() <= 120  # padded tokens; a long sentence may stand alone


def test_deterministic_shuffled_per_epoch_and_seed() -> None:
    order = [b.ids for b in loader().epoch_batches(1)]
    assert order == [b.ids for b in loader().epoch_batches(1)]
    assert order != [b.ids for b in loader().epoch_batches(2)]
    assert order != [b.ids for b in loader(seed=6).epoch_batches(1)]
    sorted_batches = [b.lengths.tolist() for b in loader(shuffle=False).epoch_batches(1)]
    flat = [n for lengths in sorted_batches for n in lengths]
    assert flat == sorted(flat)


def test_start_skips_exactly_the_first_batches() -> None:
    lo = loader()
    full = list(lo.epoch_batches(3))
    rest = list(lo.epoch_batches(3, start=4))
    assert [b.ids for b in rest] == [b.ids for b in full[4:]]
    assert all(torch.equal(a.tokens, b.tokens) for a, b in zip(rest, full[4:]))
    assert list(lo.epoch_batches(3, start=len(full))) == []
    with pytest.raises(ValueError, match="start=-1"):
        next(lo.epoch_batches(3, start=-1))


def test_ranks_split_each_global_batch() -> None:
    ranks = [loader(rank=r, world_size=2) for r in (0, 1)]
    glob = [[SENTENCES[i][0] for i in batch] for batch in ranks[0].sampler.epoch_batches(1)]
    assert ranks[0].num_batches(1) == ranks[1].num_batches(1) == len(glob)
    per_rank = [[b.ids for b in r.epoch_batches(1)] for r in ranks]
    for g, a, b in zip(glob, *per_rank, strict=True):
        assert len(g) >= 2 and a == g[0::2] and b == g[1::2]


def test_max_length_leaves_out_long_sentences() -> None:
    lengths = [len(TOK.encode(t)) + 2 for _, t in SENTENCES]
    limit = int(np.median(lengths))
    kept = [sid for b in loader(max_length=limit).epoch_batches(1) for sid in b.ids]
    assert sorted(kept) == sorted(sid for (sid, _), n in zip(SENTENCES, lengths) if n <= limit)


def test_empty_encoding_names_the_sentence() -> None:
    with pytest.raises(DataError, match="'bad'"):
        TextBatchLoader([("bad", "   ")], TOK, 2, 2, max_batch_tokens=10)


def test_text_data_options_and_word_count() -> None:
    with pytest.raises(ConfigError, match="brings its own tokenizer"):
        TextData("data/token/char")
    with pytest.raises(ConfigError, match="max_batch_tokens"):
        TextDataConfig(max_batch_tokens=2)
    assert num_words(" A  B C ") == 3
