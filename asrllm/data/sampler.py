"""Duration-bucketed, deterministic batch sampling (lhotse-style: the sampler only sees durations).

Utterances are split into duration buckets of about equal total duration
(`estimate_duration_buckets`); each epoch the utterances of every bucket are shuffled and packed
greedily into batches whose PADDED duration (batch size x longest utterance) is at most
`max_batch_seconds` (`pack_batches`); then the order of all batches is shuffled. Counting padded
rather than summed seconds bounds the memory a batch really takes, and implies that the summed
duration is within the limit too. Similar durations inside a bucket keep the padding small.

Everything is a pure function of (durations, options, seed, epoch): there is no sampler state to
checkpoint. `epoch_batches(epoch)` returns GLOBAL batches, identical on every rank; rank r trains on
`rank_slice(batch, r, world_size)`. Global batches with fewer than `world_size` utterances are
dropped so that every rank sees the same number of batches (DDP needs that). `max_batch_seconds`
is therefore the global budget, shared by all ranks. Resuming = recomputing the epoch's batches and
skipping the ones already done (see `loader.BatchLoader`).

>>> s = BucketingSampler([1.0, 1.1, 2.0, 2.2, 5.0], max_batch_seconds=4.5, num_buckets=2, shuffle=False)
>>> s.epoch_batches(0)
[[0, 1], [2], [3], [4]]
>>> rank_slice([4, 7, 9], rank=1, world_size=2)
[7]
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

logger = logging.getLogger(__name__)

Floats = Sequence[float] | np.ndarray  # a list of floats or a 1-D float array


def check_rank(rank: int, world_size: int) -> None:
    """Every loader's check of its DDP slot: 0 <= rank < world_size."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank={rank} must be in [0, world_size={world_size})")


def check_non_negative(**counts: int) -> None:
    """ValueError naming the first negative count (num_workers, start, shuffle_buffer, ...)."""
    for name, value in counts.items():
        if value < 0:
            raise ValueError(f"{name}={value} must be >= 0")


def estimate_duration_buckets(durations: Floats, num_buckets: int) -> list[float]:
    """Bucket boundaries that give buckets of about equal TOTAL duration.

    Let d_(0) <= ... <= d_(n-1) be the sorted durations, C_j = d_(0) + ... + d_(j) and C = C_(n-1).
    For i = 1 .. num_buckets-1 the boundary is b_i = d_(j_i), where j_i is the smallest j with
    C_j >= i * C / num_buckets. Returns [b_1, ..., b_(num_buckets-1)] (non-decreasing; equal
    boundaries give empty buckets). `bucket_index` puts duration d in bucket #{i : b_i <= d}.

    >>> estimate_duration_buckets([8, 1, 2, 4, 1, 2, 4, 8], 3)
    [4.0, 8.0]
    >>> estimate_duration_buckets([3.0], 1)
    []
    """
    if num_buckets < 1:
        raise ValueError(f"num_buckets={num_buckets} must be >= 1")
    if len(durations) == 0:
        raise ValueError("cannot estimate duration buckets from no durations")
    sorted_d = np.sort(np.asarray(durations, dtype=np.float64))  # (n,)
    cumsum = np.cumsum(sorted_d)  # (n,) C_j
    targets = np.arange(1, num_buckets) * cumsum[-1] / num_buckets  # (num_buckets-1,)
    j = np.minimum(np.searchsorted(cumsum, targets, side="left"), len(sorted_d) - 1)
    return [float(b) for b in sorted_d[j]]


def bucket_index(durations: Floats, boundaries: Floats) -> np.ndarray:
    """Bucket of each duration: #{i : boundaries[i] <= d}, an int64 array of len(durations).

    >>> bucket_index([0.5, 4.0, 7.9, 9.0], [4.0, 8.0]).tolist()
    [0, 1, 1, 2]
    """
    return np.searchsorted(np.asarray(boundaries, dtype=np.float64), np.asarray(durations), side="right")


def pack_batches(indices: Sequence[int] | np.ndarray, durations: Floats, max_batch_seconds: float) -> list[list[int]]:
    """Greedy packing of `indices`, in the given order, into consecutive batches.

    Utterance i joins the current batch while (size of the batch with i) x (longest duration in
    it, i included) <= max_batch_seconds; otherwise it starts a new batch. An utterance longer
    than `max_batch_seconds` therefore forms a batch of its own.

    >>> pack_batches([0, 1, 2, 3], [1.0, 2.0, 2.0, 9.0], 4.0)
    [[0, 1], [2], [3]]
    """
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0.0
    for i in indices:
        d = float(durations[i])
        if current and (len(current) + 1) * max(longest, d) > max_batch_seconds:
            batches.append(current)
            current, longest = [], 0.0
        current.append(int(i))
        longest = max(longest, d)
    if current:
        batches.append(current)
    return batches


def rank_slice(batch: Sequence[int], rank: int, world_size: int) -> list[int]:
    """The part of a global batch that `rank` processes: batch[rank::world_size]."""
    assert 0 <= rank < world_size, (rank, world_size)
    return list(batch[rank::world_size])


class BucketingSampler:
    """Deterministic duration-bucketed batches of utterance indices; see the module docstring.

    >>> BucketingSampler([1.0] * 6, max_batch_seconds=2.0, seed=3).epoch_batches(1)
    [[1, 2], [0, 4], [5, 3]]
    """

    def __init__(
        self,
        durations: Floats,  # seconds, one per utterance; batches hold indices into this
        max_batch_seconds: float,  # padded seconds per GLOBAL batch (all ranks together)
        num_buckets: int = 10,  # duration buckets; more = less padding, less randomness
        seed: int = 0,  # with the epoch, fixes the order
        shuffle: bool = True,  # False: each bucket sorted by duration, buckets short to long
        drop_last: bool = False,  # drop each bucket's last batch when it is smaller than its first
        max_duration: float | None = None,  # longer utterances are left out (with a warning)
        world_size: int = 1,  # global batches with fewer utterances are dropped
        ids: Sequence[str] | None = None,  # one per duration: named in the warning (else indices are)
    ) -> None:
        if max_batch_seconds <= 0:
            raise ValueError(f"max_batch_seconds={max_batch_seconds} must be > 0")
        if max_duration is not None and max_duration <= 0:
            raise ValueError(f"max_duration={max_duration} must be > 0 or None")
        if world_size < 1:
            raise ValueError(f"world_size={world_size} must be >= 1")
        if ids is not None and len(ids) != len(durations):
            raise ValueError(f"{len(ids)} ids for {len(durations)} durations")
        self.durations = np.asarray(durations, dtype=np.float64)  # (n,)
        self.max_batch_seconds = max_batch_seconds
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.world_size = world_size
        keep = np.ones(len(self.durations), dtype=bool) if max_duration is None else self.durations <= max_duration
        if not keep.all():
            left_out = np.flatnonzero(~keep)[:5].tolist()
            named = [repr(ids[i]) if ids is not None else f"#{i}" for i in left_out]
            logger.warning(
                "leaving out %d of %d items longer than max_duration=%g: %s%s",
                int((~keep).sum()), len(keep), max_duration,
                ", ".join(f"{n} ({self.durations[i]:g})" for n, i in zip(named, left_out, strict=True)),
                ", ..." if (~keep).sum() > len(left_out) else "",
            )
        kept = np.flatnonzero(keep)  # (n_kept,)
        if len(kept) == 0:
            raise ValueError(f"no utterances left to sample from ({len(keep)} given, max_duration={max_duration})")
        self.boundaries = estimate_duration_buckets(self.durations[kept], num_buckets)
        which = bucket_index(self.durations[kept], self.boundaries)  # (n_kept,)
        self.buckets = [kept[which == b] for b in range(num_buckets) if (which == b).any()]

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The GLOBAL batches of `epoch` (same on every rank); a pure function of (seed, epoch)."""
        rng = np.random.default_rng([self.seed, epoch])
        batches: list[list[int]] = []
        for bucket in self.buckets:
            if self.shuffle:
                order = rng.permutation(bucket)
            else:
                order = bucket[np.argsort(self.durations[bucket], kind="stable")]
            packed = pack_batches(order, self.durations, self.max_batch_seconds)
            if self.drop_last and len(packed) > 1 and len(packed[-1]) < len(packed[0]):
                packed.pop()
            batches.extend(packed)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        if self.world_size > 1:
            kept = [b for b in batches if len(b) >= self.world_size]
            if len(kept) < len(batches):
                logger.info("epoch %d: dropped %d batches smaller than world_size=%d",
                            epoch, len(batches) - len(kept), self.world_size)
            batches = kept
        return batches
