"""Bucketing sampler: pure maths, determinism, limits, coverage, and rank slices."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pytest

from asrllm.data.sampler import BucketingSampler, bucket_index, estimate_duration_buckets, pack_batches, rank_slice


def _durations(n: int = 300, seed: int = 0) -> list[float]:
    return np.random.default_rng(seed).uniform(0.5, 20.0, n).round(3).tolist()


def test_estimate_duration_buckets_matches_definition() -> None:
    d = _durations(101)
    for nb in (1, 2, 5, 10):
        b = estimate_duration_buckets(d, nb)
        assert len(b) == nb - 1 and b == sorted(b)
        s = sorted(d)
        for i, bi in enumerate(b, start=1):  # brute force: smallest j with C_j >= i*C/nb
            j = next(j for j in range(len(s)) if sum(s[: j + 1]) >= i * sum(s) / nb - 1e-9)
            assert bi == s[j]
    totals = np.bincount(bucket_index(d, estimate_duration_buckets(d, 4)), weights=d)
    assert totals.max() < 1.5 * sum(d) / 4  # roughly equal totals


def test_pack_batches() -> None:
    assert pack_batches([], [], 1.0) == []
    # the over-long utterance 2 is alone; then 2 x 1.0 <= 2.0
    assert pack_batches([2, 0, 1], [1.0, 1.0, 5.0], 2.0) == [[2], [0, 1]]
    # the padded size counts: 2 x 1.5 > 2.5 although 1.0 + 1.5 <= 2.5
    assert pack_batches([0, 1, 2], [1.0, 1.5, 0.5], 2.5) == [[0], [1], [2]]


@pytest.mark.parametrize("shuffle", [True, False])
def test_every_utterance_once_and_within_limit(shuffle: bool) -> None:
    d = _durations()
    s = BucketingSampler(d, max_batch_seconds=60.0, num_buckets=6, seed=1, shuffle=shuffle)
    for epoch in range(3):
        batches = s.epoch_batches(epoch)
        assert sorted(itertools.chain(*batches)) == list(range(len(d)))
        assert all(len(b) * max(d[i] for i in b) <= 60.0 for b in batches)


def test_padding_is_small() -> None:
    d = _durations(2000)
    batches = BucketingSampler(d, max_batch_seconds=200.0, num_buckets=20, seed=0).epoch_batches(0)
    padded = sum(len(b) * max(d[i] for i in b) for b in batches)
    assert padded < 1.1 * sum(d)


def test_deterministic_and_shuffled_per_epoch() -> None:
    d = _durations()
    a = BucketingSampler(d, 60.0, num_buckets=6, seed=7)
    b = BucketingSampler(d, 60.0, num_buckets=6, seed=7)
    assert a.epoch_batches(3) == b.epoch_batches(3)
    assert a.epoch_batches(0) != a.epoch_batches(1)
    assert a.epoch_batches(0) != BucketingSampler(d, 60.0, num_buckets=6, seed=8).epoch_batches(0)


def test_unshuffled_is_sorted_by_duration() -> None:
    d = _durations(50)
    order = list(itertools.chain(*BucketingSampler(d, 30.0, num_buckets=3, shuffle=False).epoch_batches(5)))
    assert [d[i] for i in order] == sorted(d)


def test_long_utterance_alone_or_filtered(caplog: pytest.LogCaptureFixture) -> None:
    d = [1.0, 1.0, 50.0, 1.0]
    assert [2] in BucketingSampler(d, 10.0, num_buckets=2).epoch_batches(0)
    with caplog.at_level(logging.WARNING):
        s = BucketingSampler(d, 10.0, num_buckets=2, max_duration=20.0)
    assert "leaving out 1 of 4" in caplog.text
    assert sorted(itertools.chain(*s.epoch_batches(0))) == [0, 1, 3]


def test_drop_last() -> None:
    d = [1.0] * 7
    full = BucketingSampler(d, 3.0, num_buckets=1, shuffle=False).epoch_batches(0)
    assert [len(b) for b in full] == [3, 3, 1]
    dropped = BucketingSampler(d, 3.0, num_buckets=1, shuffle=False, drop_last=True).epoch_batches(0)
    assert [len(b) for b in dropped] == [3, 3]


@pytest.mark.parametrize("world_size", [2, 3])
def test_rank_slices_disjoint_complete_and_equal_count(world_size: int) -> None:
    d = _durations()
    s = BucketingSampler(d, 40.0, num_buckets=5, seed=2, world_size=world_size)
    batches = s.epoch_batches(0)
    assert all(len(b) >= world_size for b in batches)
    for b in batches:
        parts = [rank_slice(b, r, world_size) for r in range(world_size)]
        assert sorted(itertools.chain(*parts)) == sorted(b) and all(parts)
    # nothing but batches smaller than world_size is lost
    single = BucketingSampler(d, 40.0, num_buckets=5, seed=2).epoch_batches(0)
    assert batches == [b for b in single if len(b) >= world_size]


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="max_batch_seconds"):
        BucketingSampler([1.0], 0.0)
    with pytest.raises(ValueError, match="num_buckets"):
        BucketingSampler([1.0], 1.0, num_buckets=0)
    with pytest.raises(ValueError, match="no utterances left"):
        BucketingSampler([5.0], 1.0, max_duration=2.0)
