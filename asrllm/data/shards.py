"""Streaming over parquet shards (Loquacious layout), with memory bounded by a shuffle buffer.

Shard layout, one row per utterance (as in the Loquacious set on the HF hub):

    ID        string   utterance id
    duration  double   seconds
    wav       binary   an encoded audio file (flac/wav bytes), or a struct {bytes, path} (HF `Audio`)
    text      string   transcript
    spk_id    string   speaker id (optional; "unknown" when absent)

`ShardStream.records(epoch)` reads ONE row group at a time with pyarrow and passes rows through a
shuffle buffer, so at most `shuffle_buffer` + one row group of rows are held however big the corpus
is; audio stays encoded until `ShardRecord.audio()` is called. Order: each epoch the shard list is
permuted with (seed, epoch), rank r takes shards r, r + world_size, ... (round robin), the row
groups of a shard are permuted, and the buffer draws with a generator seeded by (seed, epoch, rank).
Everything is therefore deterministic given seed, epoch, rank and world size.

`StreamingBatchLoader` groups the stream into `Batch`es of at most `max_batch_seconds` padded
seconds, keeping one open batch per duration bucket so that utterances of similar length are
batched together (as in lhotse's dynamic bucketing); that adds at most one batch per bucket to
what is held. The bucket boundaries come from the `duration` column of the first shards of the
list, so they are the same on every rank.

Resume: the state to checkpoint is (epoch, batches done). `epoch_batches(epoch, start)` re-reads the
stream from the beginning of the epoch and drops the first `start` batches before decoding any
audio (only parquet rows are read, no flac is decoded), which reproduces the uninterrupted order.

Multi-GPU: unlike `BucketingSampler`, ranks get different shards and so different numbers of
batches. The trainer must end the epoch on all ranks when the first one runs out (e.g. an
all-reduced "has a batch" flag each step, or `torch.distributed.algorithms.Join`).

Shapes: B utterances, S audio samples, L labels.
"""

from __future__ import annotations

import bisect
import concurrent.futures
import dataclasses
import itertools
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from asrllm.data.audio import audio_duration, decode_audio_bytes
from asrllm.data.batch import Batch
from asrllm.data.datadir import DataError, Utterance
from asrllm.data.loader import collate, encode_text
from asrllm.data.sampler import check_non_negative, check_rank, estimate_duration_buckets
from asrllm.data.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("ID", "duration", "wav", "text")
SPEAKER_COLUMN = "spk_id"
UNKNOWN_SPEAKER = "unknown"
BOUNDARY_SHARDS = 8  # shards whose `duration` column is read to estimate bucket boundaries


@dataclasses.dataclass(frozen=True)
class ShardRecord:
    """One streamed utterance; the audio stays encoded until `audio()` is called."""

    id: str
    duration: float  # seconds, from the `duration` column
    text: str
    speaker: str
    data: bytes  # the encoded audio file
    source: str  # "<shard path> row group <g> row <i>", for error messages

    def audio(self) -> np.ndarray:
        """Decoded 16 kHz mono samples, (S,) float32."""
        return decode_audio_bytes(self.data, self.id, self.source)


def list_shards(shard_dir: str | Path) -> list[Path]:
    """The `*.parquet` files of a directory, sorted by name."""
    paths = sorted(Path(shard_dir).glob("*.parquet"))
    if not paths:
        raise DataError(f"{shard_dir}: no *.parquet shards")
    return paths


def write_shards(
    utterances: Sequence[Utterance], out_dir: str | Path, utts_per_shard: int, rows_per_group: int = 100
) -> list[Path]:
    """Write utterances (audio file bytes copied as they are) as `shard-NNNNN.parquet` files.

    Meant for building test shards from a data dir; every audio file is checked (16 kHz mono)
    first. Each shard is written to a temporary name and renamed. Returns the shard paths.
    """
    if utts_per_shard < 1 or rows_per_group < 1:
        raise ValueError(f"utts_per_shard={utts_per_shard} and rows_per_group={rows_per_group} must be >= 1")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("ID", pa.string()), ("duration", pa.float64()), ("wav", pa.binary()),
                        ("text", pa.string()), (SPEAKER_COLUMN, pa.string())])
    paths = []
    for n, first in enumerate(range(0, len(utterances), utts_per_shard)):
        chunk = utterances[first : first + utts_per_shard]
        for u in chunk:
            audio_duration(u.audio, u.id)
        table = pa.table({
            "ID": [u.id for u in chunk],
            "duration": [float(u.duration) for u in chunk],
            "wav": [Path(u.audio).read_bytes() for u in chunk],
            "text": [u.text for u in chunk],
            SPEAKER_COLUMN: [u.speaker for u in chunk],
        }, schema=schema)
        path = out_dir / f"shard-{n:05d}.parquet"
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            pq.write_table(table, tmp, row_group_size=rows_per_group)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        paths.append(path)
    logger.info("wrote %d utterances to %d shards in %s", len(utterances), len(paths), out_dir)
    return paths


def _audio_bytes(cell: Any, source: str, utt_id: str) -> bytes:
    """The `wav` cell: plain bytes, or the HF `Audio` struct {bytes, path}."""
    if isinstance(cell, dict):
        cell = cell.get("bytes")
    if not isinstance(cell, bytes):
        raise DataError(f"{source}: utterance {utt_id!r}: `wav` holds {type(cell).__name__}, expected audio bytes")
    return cell


class ShardStream:
    """Deterministic, memory-bounded stream of `ShardRecord`s; see the module docstring.

    `peak_rows_held` is a diagnostic: the most rows (buffer + current row group) held during the
    last `records()` pass.
    """

    def __init__(
        self,
        shard_paths: Sequence[str | Path],  # all shards of the corpus (every rank passes the same list)
        shuffle_buffer: int = 1000,  # rows held for shuffling; 0 or 1 = stream order
        seed: int = 0,  # with the epoch (and the rank, for the buffer), fixes the order
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,  # False: shards, row groups and rows in their stored order
    ) -> None:
        check_rank(rank, world_size)
        if len(shard_paths) < world_size:
            raise ValueError(f"{len(shard_paths)} shards cannot feed world_size={world_size} ranks")
        check_non_negative(shuffle_buffer=shuffle_buffer)
        self.shard_paths = [Path(p) for p in shard_paths]
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.peak_rows_held = 0

    def epoch_shards(self, epoch: int) -> list[Path]:
        """This rank's shards in `epoch`, in reading order."""
        order = np.arange(len(self.shard_paths))
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(order)  # same on every rank
        return [self.shard_paths[i] for i in order[self.rank :: self.world_size]]

    def _rows(self, epoch: int, rng: np.random.Generator, held: list[int]) -> Iterator[ShardRecord]:
        """Rows of this rank's shards, one row group in memory at a time; held[0] = rows of it left."""
        for path in self.epoch_shards(epoch):
            try:
                pf = pq.ParquetFile(path)
            except (OSError, pa.ArrowException) as e:
                raise DataError(f"{path}: cannot read parquet shard: {e}") from None
            with pf:
                yield from self._shard_rows(path, pf, rng, held)

    def _shard_rows(
        self, path: Path, pf: pq.ParquetFile, rng: np.random.Generator, held: list[int]
    ) -> Iterator[ShardRecord]:
        """Rows of one open shard, row group by row group."""
        names = pf.schema_arrow.names
        missing = [c for c in REQUIRED_COLUMNS if c not in names]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing} (has {names})")
        columns = [*REQUIRED_COLUMNS, *([SPEAKER_COLUMN] if SPEAKER_COLUMN in names else [])]
        groups = np.arange(pf.num_row_groups)
        if self.shuffle:
            groups = rng.permutation(groups)
        for g in groups:
            rows = pf.read_row_group(int(g), columns=columns).to_pylist()
            rows.reverse()  # pop() then hands rows on in file order and frees each one
            for i in range(len(rows)):
                held[0] = len(rows)
                row = rows.pop()
                source = f"{path} row group {g} row {i}"
                yield ShardRecord(
                    id=row["ID"],
                    duration=float(row["duration"]),
                    text=row["text"],
                    speaker=row.get(SPEAKER_COLUMN) or UNKNOWN_SPEAKER,
                    data=_audio_bytes(row["wav"], source, row["ID"]),
                    source=source,
                )
            held[0] = 0

    def records(self, epoch: int) -> Iterator[ShardRecord]:
        """This rank's records of `epoch`, shuffled through the buffer."""
        rng = np.random.default_rng([self.seed, epoch, self.rank])
        held = [0]
        self.peak_rows_held = 0
        if not self.shuffle or self.shuffle_buffer <= 1:
            for rec in self._rows(epoch, rng, held):
                self.peak_rows_held = max(self.peak_rows_held, held[0])
                yield rec
            return
        buffer: list[ShardRecord] = []
        for rec in self._rows(epoch, rng, held):
            # `rec` is still counted in held[0]: the buffer never grows past shuffle_buffer.
            self.peak_rows_held = max(self.peak_rows_held, len(buffer) + held[0])
            if len(buffer) < self.shuffle_buffer:
                buffer.append(rec)
                continue
            j = int(rng.integers(len(buffer)))
            buffer[j], rec = rec, buffer[j]
            yield rec
        for j in rng.permutation(len(buffer)):
            yield buffer[j]

    def duration_sample(self, max_shards: int = BOUNDARY_SHARDS) -> np.ndarray:
        """The `duration` column of the first `max_shards` shards (metadata only, no audio)."""
        cols = [pq.read_table(p, columns=["duration"]).column("duration") for p in self.shard_paths[:max_shards]]
        return np.concatenate([c.to_numpy() for c in cols]).astype(np.float64)


def group_by_duration(
    records: Iterator[ShardRecord],
    boundaries: Sequence[float],
    max_batch_seconds: float,
    max_duration: float | None = None,
) -> Iterator[list[ShardRecord]]:
    """Group a stream into batches, one open batch per duration bucket.

    A record goes to bucket #{i : boundaries[i] <= duration}. It joins that bucket's open batch
    while (batch size with it) x (longest duration in it) <= max_batch_seconds; otherwise the open
    batch is emitted and the record starts a new one. At the end of the stream the open batches
    are emitted in bucket order. Records longer than `max_duration` are skipped (logged).
    """
    open_batches: dict[int, list[ShardRecord]] = {}
    longest: dict[int, float] = {}
    skipped = 0
    for rec in records:
        if max_duration is not None and rec.duration > max_duration:
            skipped += 1
            continue
        b = bisect.bisect_right(boundaries, rec.duration)
        batch = open_batches.setdefault(b, [])
        if batch and (len(batch) + 1) * max(longest[b], rec.duration) > max_batch_seconds:
            yield batch
            batch = open_batches[b] = []
        batch.append(rec)
        longest[b] = rec.duration if len(batch) == 1 else max(longest[b], rec.duration)
    for b in sorted(open_batches):
        if open_batches[b]:
            yield open_batches[b]
    if skipped:
        logger.warning("skipped %d utterances longer than max_duration=%.1f s", skipped, max_duration)


class StreamingBatchLoader:
    """`Batch`es from a `ShardStream`; same `epoch_batches(epoch, start)` contract as `BatchLoader`.

    `max_batch_seconds` is per rank here (each rank batches its own stream). With
    `num_workers > 0`, audio of the next batches is decoded in a thread pool (libsndfile runs
    without the GIL); batches are still yielded in stream order.
    """

    def __init__(
        self,
        stream: ShardStream,
        tokenizer: Tokenizer,
        max_batch_seconds: float,  # padded seconds per batch on this rank
        num_buckets: int = 10,  # duration buckets, estimated from `stream.duration_sample()`
        max_duration: float | None = None,  # longer utterances are skipped
        num_workers: int = 0,  # decoding threads; 0 = decode in the caller's thread
    ) -> None:
        if max_batch_seconds <= 0:
            raise ValueError(f"max_batch_seconds={max_batch_seconds} must be > 0")
        check_non_negative(num_workers=num_workers)
        self.stream = stream
        self.tokenizer = tokenizer
        self.max_batch_seconds = max_batch_seconds
        self.max_duration = max_duration
        self.num_workers = num_workers
        self.boundaries = estimate_duration_buckets(stream.duration_sample(), num_buckets)

    def _collate(self, records: list[ShardRecord]) -> Batch:
        return collate(
            [r.id for r in records],
            [r.audio() for r in records],
            [encode_text(self.tokenizer, r.id, r.text) for r in records],
            [r.text for r in records],
        )

    def record_batches(self, epoch: int) -> Iterator[list[ShardRecord]]:
        """The epoch's batches as undecoded records (what `epoch_batches` collates)."""
        return group_by_duration(self.stream.records(epoch), self.boundaries, self.max_batch_seconds, self.max_duration)

    def epoch_batches(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """This rank's batches of `epoch` from the `start`-th on; skipped ones are never decoded."""
        check_non_negative(start=start)
        groups = itertools.islice(self.record_batches(epoch), start, None)
        if self.num_workers == 0:
            yield from (self._collate(g) for g in groups)
            return
        pool = concurrent.futures.ThreadPoolExecutor(self.num_workers)
        try:
            pending: list[concurrent.futures.Future[Batch]] = []
            for g in groups:
                pending.append(pool.submit(self._collate, g))
                if len(pending) > 2 * self.num_workers:  # bounded read-ahead
                    yield pending.pop(0).result()
            for f in pending:
                yield f.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
