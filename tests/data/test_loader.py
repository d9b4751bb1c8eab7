"""BatchLoader: collation, determinism, resume by skipping, ranks, workers, and empty encodings."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

import asrllm.data.loader as loader_mod
from asrllm.data.batch import Batch
from asrllm.data.datadir import DataError, Utterance
from asrllm.data.loader import BatchLoader
from asrllm.data.sampler import BucketingSampler
from asrllm.data.tokenizer import CharTokenizer, TokenizerConfig, train_tokenizer
from asrllm.testing.dummies import make_datadir


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Utterance], CharTokenizer]:
    base = tmp_path_factory.mktemp("loader")
    utts = make_datadir(base / "data", 24, seed=5)
    (base / "text").write_text("".join(f"{u.text}\n" for u in utts))
    tok = train_tokenizer(TokenizerConfig(kind="char"), base / "text", base / "tok")
    assert isinstance(tok, CharTokenizer)
    return utts, tok


def _loader(corpus: tuple[list[Utterance], CharTokenizer], rank: int = 0, world_size: int = 1,
            num_workers: int = 0) -> BatchLoader:
    utts, tok = corpus
    sampler = BucketingSampler([u.duration for u in utts], 3.0, num_buckets=3, seed=4, world_size=world_size)
    return BatchLoader(utts, tok, sampler, rank=rank, world_size=world_size, num_workers=num_workers)


def _same(a: Batch, b: Batch) -> bool:
    return a.ids == b.ids and a.texts == b.texts and all(
        torch.equal(getattr(a, f), getattr(b, f)) for f in ("audio", "audio_lens", "targets", "target_lens"))


def test_collate(corpus: tuple[list[Utterance], CharTokenizer]) -> None:
    utts, tok = corpus
    by_id = {u.id: u for u in utts}
    loader = _loader(corpus)
    batches = list(loader.epoch_batches(0))
    assert len(batches) == loader.num_batches(0) > 1
    assert sorted(i for b in batches for i in b.ids) == sorted(by_id)
    for b in batches:
        assert b.audio.dtype == torch.float32 and b.audio.shape == (len(b), int(b.audio_lens.max()))
        assert b.audio_lens.dtype == b.target_lens.dtype == b.targets.dtype == torch.int64
        for k, utt_id in enumerate(b.ids):
            u = by_id[utt_id]
            assert b.audio_lens[k] == round(u.duration * 16000) and b.texts[k] == u.text
            assert not b.audio[k, b.audio_lens[k]:].any()
            ids = tok.encode(u.text)
            assert b.targets[k, : len(ids)].tolist() == ids and b.target_lens[k] == len(ids)
            assert not b.targets[k, len(ids):].any()  # padded with blank = 0


def test_skip_equals_full_minus_first_k_without_reading(corpus: tuple[list[Utterance], CharTokenizer],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    loader = _loader(corpus)
    full = list(loader.epoch_batches(1))
    read: list[str] = []
    original = loader_mod.read_audio

    def counting_read_audio(path: str, utt_id: str) -> np.ndarray:
        read.append(utt_id)
        return original(path, utt_id)

    monkeypatch.setattr(loader_mod, "read_audio", counting_read_audio)
    for k in (0, 2, len(full)):
        read.clear()
        rest = list(loader.epoch_batches(1, start=k))
        assert len(rest) == len(full) - k and all(_same(a, b) for a, b in zip(rest, full[k:], strict=True))
        assert sorted(read) == sorted(i for b in full[k:] for i in b.ids)  # skipped audio never read


def test_deterministic_and_epoch_dependent(corpus: tuple[list[Utterance], CharTokenizer]) -> None:
    a = [b.ids for b in _loader(corpus).epoch_batches(0)]
    assert a == [b.ids for b in _loader(corpus).epoch_batches(0)]
    assert a != [b.ids for b in _loader(corpus).epoch_batches(1)]


def test_workers_keep_order(corpus: tuple[list[Utterance], CharTokenizer]) -> None:
    serial = list(_loader(corpus).epoch_batches(2, start=1))
    parallel = list(_loader(corpus, num_workers=2).epoch_batches(2, start=1))
    assert len(serial) == len(parallel) and all(_same(a, b) for a, b in zip(serial, parallel, strict=True))


def test_ranks_disjoint_complete_same_count(corpus: tuple[list[Utterance], CharTokenizer]) -> None:
    loaders = [_loader(corpus, rank=r, world_size=2) for r in range(2)]
    per_rank = [[b.ids for b in ld.epoch_batches(0)] for ld in loaders]
    assert len(per_rank[0]) == len(per_rank[1]) == loaders[0].num_batches(0)
    global_batches = loaders[0].sampler.epoch_batches(0)
    utts = corpus[0]
    for step, batch in enumerate(global_batches):
        assert sorted(per_rank[0][step] + per_rank[1][step]) == sorted(utts[i].id for i in batch)
        assert not set(per_rank[0][step]) & set(per_rank[1][step])


def test_empty_encoding_is_an_error(corpus: tuple[list[Utterance], CharTokenizer]) -> None:
    utts, tok = corpus
    bad = [*utts[:3], dataclasses.replace(utts[3], text="   ")]
    with pytest.raises(DataError, match=f"'{utts[3].id}'.*0 tokens"):
        BatchLoader(bad, tok, BucketingSampler([u.duration for u in bad], 3.0))


def test_bad_arguments(corpus: tuple[list[Utterance], CharTokenizer], tmp_path: Path) -> None:
    utts, tok = corpus
    with pytest.raises(ValueError, match="durations"):
        BatchLoader(utts, tok, BucketingSampler([1.0], 3.0))
    with pytest.raises(ValueError, match="world_size"):
        BatchLoader(utts, tok, BucketingSampler([u.duration for u in utts], 3.0), world_size=2, rank=1)


class _DropsWords(CharTokenizer):
    """A tokenizer that maps the word "DOG" to nothing (as an LLM tokenizer might for odd input)."""

    def encode(self, text: str) -> list[int]:
        return [] if text == "DOG" else super().encode(text)


def test_zero_tokens_at_collation_names_utterance(corpus: tuple[list[Utterance], CharTokenizer]) -> None:
    utts, tok = corpus
    bad = [*utts[:3], dataclasses.replace(utts[3], text="DOG")]
    loader = BatchLoader(bad, _DropsWords(tok.pieces[4:]), BucketingSampler([u.duration for u in bad], 100.0))
    with pytest.raises(DataError, match=f"utterance '{utts[3].id}': transcript 'DOG' encodes to 0 tokens"):
        list(loader.epoch_batches(0))
