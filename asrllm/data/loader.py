"""Batches for training and decoding: utterances + tokenizer + sampler -> `Batch` iterator.

`BatchLoader.epoch_batches(epoch, start)` yields this rank's batches of `epoch` in a fixed order
that depends only on the sampler's (seed, epoch), and skips the first `start` batches without
reading their audio. The trainer checkpoints (epoch, batches done) and resumes with
`epoch_batches(epoch, start=batches_done)`: the batches it then sees are exactly those an
uninterrupted run would have seen.

With `num_workers > 0` audio is read in a torch `DataLoader` over the precomputed list of batches
(`batch_size=None`: each dataset item is already one whole batch), which only prefetches; the
order stays that of the list.

Shapes: B utterances, S audio samples, L labels.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from asrllm.data.audio import read_audio
from asrllm.data.batch import Batch
from asrllm.data.datadir import DataError, Utterance
from asrllm.data.sampler import BucketingSampler, rank_slice
from asrllm.data.tokenizer import Tokenizer

logger = logging.getLogger(__name__)


def encode_text(tokenizer: Tokenizer, utt_id: str, text: str) -> list[int]:
    """Token ids of a transcript; a transcript that encodes to no token is a `DataError`."""
    ids = tokenizer.encode(text)
    if not ids:
        raise DataError(f"utterance {utt_id!r}: transcript {text!r} encodes to 0 tokens")
    return ids


def collate(ids: list[str], audios: list[np.ndarray], targets: list[list[int]], texts: list[str]) -> Batch:
    """Zero-pad audio (B, S) and targets (B, L) (pad value 0 = blank); lengths are int64."""
    audio_lens = torch.tensor([len(a) for a in audios], dtype=torch.int64)  # (B,)
    target_lens = torch.tensor([len(t) for t in targets], dtype=torch.int64)  # (B,)
    audio = torch.zeros(len(audios), int(audio_lens.max()), dtype=torch.float32)  # (B, S)
    padded_targets = torch.zeros(len(targets), int(target_lens.max()), dtype=torch.int64)  # (B, L)
    for b, (a, t) in enumerate(zip(audios, targets, strict=True)):
        audio[b, : len(a)] = torch.from_numpy(a)
        padded_targets[b, : len(t)] = torch.tensor(t, dtype=torch.int64)
    return Batch(list(ids), audio, audio_lens, padded_targets, target_lens, list(texts))


class _BatchDataset(torch.utils.data.Dataset):
    """Item i = the collated i-th batch of a fixed list of index lists (for DataLoader prefetch)."""

    def __init__(self, utterances: Sequence[Utterance], tokenizer: Tokenizer, batches: list[list[int]]) -> None:
        self.utterances = utterances
        self.tokenizer = tokenizer
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> Batch:
        utts = [self.utterances[j] for j in self.batches[i]]
        return collate(
            [u.id for u in utts],
            [read_audio(u.audio, u.id) for u in utts],
            [encode_text(self.tokenizer, u.id, u.text) for u in utts],
            [u.text for u in utts],
        )


class BatchLoader:
    """This rank's `Batch`es of an epoch, deterministic and resumable; see the module docstring."""

    def __init__(
        self,
        utterances: Sequence[Utterance],  # indexed by the sampler's batches
        tokenizer: Tokenizer,
        sampler: BucketingSampler,  # built over [u.duration for u in utterances]
        rank: int = 0,
        world_size: int = 1,  # must equal sampler.world_size
        num_workers: int = 0,  # > 0: read audio in DataLoader worker processes (prefetch)
    ) -> None:
        if len(sampler.durations) != len(utterances):
            raise ValueError(f"sampler has {len(sampler.durations)} durations for {len(utterances)} utterances")
        if world_size != sampler.world_size:
            raise ValueError(f"world_size={world_size} but sampler.world_size={sampler.world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must be in [0, world_size={world_size})")
        if num_workers < 0:
            raise ValueError(f"num_workers={num_workers} must be >= 0")
        for u in utterances:  # fail now, not hours into an epoch (encoding all would take seconds)
            if not u.text.strip():
                raise DataError(f"utterance {u.id!r}: empty transcript {u.text!r} encodes to 0 tokens")
        self.utterances = utterances
        self.tokenizer = tokenizer
        self.sampler = sampler
        self.rank = rank
        self.world_size = world_size
        self.num_workers = num_workers

    def _rank_batches(self, epoch: int) -> list[list[int]]:
        return [rank_slice(b, self.rank, self.world_size) for b in self.sampler.epoch_batches(epoch)]

    def num_batches(self, epoch: int) -> int:
        """Batches this rank gets in `epoch` (the same on every rank)."""
        return len(self.sampler.epoch_batches(epoch))

    def epoch_batches(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """This rank's batches of `epoch`, from the `start`-th on (earlier ones are not read)."""
        if start < 0:
            raise ValueError(f"start={start} must be >= 0")
        dataset = _BatchDataset(self.utterances, self.tokenizer, self._rank_batches(epoch)[start:])
        if self.num_workers == 0:
            yield from (dataset[i] for i in range(len(dataset)))
            return
        # batch_size=None: items are whole batches; the default sequential sampler keeps the order.
        yield from torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=self.num_workers)
