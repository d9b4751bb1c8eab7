"""Batches for training and decoding: utterances + tokenizer + sampler -> `Batch` iterator.

`BatchLoader.epoch_batches(epoch, start)` yields this rank's batches of `epoch` in a fixed order
that depends only on the sampler's (seed, epoch), and skips the first `start` batches without
reading their audio. The trainer checkpoints (epoch, batches done) and resumes with
`epoch_batches(epoch, start=batches_done)`: the batches it then sees are exactly those an
uninterrupted run would have seen.

With `num_workers > 0` audio is read in a torch `DataLoader` over the precomputed list of batches
(`batch_size=None`: each dataset item is already one whole batch), which only prefetches; the
order stays that of the list. Each epoch's DataLoader gets its own `torch.Generator` seeded from
(sampler seed, epoch): otherwise every new DataLoader iterator draws its workers' base seed from
the GLOBAL torch RNG, so a resumed run (which restores the global RNG from the checkpoint, then
starts a new iterator) would feed SpecAugment and dropout a different stream than the
uninterrupted run, whose iterator was made at the start of the epoch. The workers' own RNGs are
never used: reading audio, encoding text and collating are deterministic. The workers end with
the process that started them (`exit_with_parent`), also when it is killed.

`AudioData` is how the train CLI feeds the acoustic models (`model.train_data`): Kaldi data dirs,
the AM tokenizer given on the command line, and its vocabulary size filled into the model config.
Before any batch is made it reports transcript characters the tokenizer maps to `<unk>` (an error
with `unknown_chars: error`) and leaves out the utterances the model cannot learn from (too short
for one encoder frame, more labels than CTC frames, longer than `max_duration`; see
`asrllm.data.checks`), logging the counts and writing the ids with their reasons to
`<report_dir>/filtered_utts.{train,valid}.txt`. An audio file that still fails when a batch reads
it raises an `AudioError` that names the utterance and says how to drop it. Transcripts listed in
`nonspeech` (e.g. `<noise>`) mark audio without speech and train on an empty label sequence.

Shapes: B utterances, S audio samples, L labels.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import logging
import os
import shutil
import signal
import sys
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asrllm.config import ConfigError
from asrllm.data import checks
from asrllm.data.audio import AudioError, read_audio
from asrllm.data.batch import Batch
from asrllm.data.datadir import DataError, Utterance, read_datadir
from asrllm.data.sampler import BucketingSampler, check_non_negative, check_rank, pack_batches, rank_slice
from asrllm.data.tokenizer import Tokenizer, load_tokenizer, save_tokenizer

logger = logging.getLogger(__name__)


def encode_text(tokenizer: Tokenizer, utt_id: str, text: str, nonspeech: Collection[str] = ()) -> list[int]:
    """Token ids of a transcript; a transcript that encodes to no token is a `DataError`. A transcript
    in `nonspeech` (e.g. "<noise>") marks audio without speech: no labels."""
    if text in nonspeech:
        return []
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


def inference_batches(utts: Sequence[Utterance], max_batch_seconds: float) -> Iterator[Batch]:
    """Batches for decoding and statistics (no targets): utterances sorted by duration, packed to
    `max_batch_seconds` of padded audio (`pack_batches`), audio read with `read_audio`."""
    durations = [u.duration for u in utts]
    for idx in pack_batches(sorted(range(len(utts)), key=durations.__getitem__), durations, max_batch_seconds):
        chunk = [utts[i] for i in idx]
        yield collate([u.id for u in chunk], [read_audio(u.audio, u.id) for u in chunk], [[] for _ in chunk],
                      [u.text for u in chunk])


def read_training_audio(u: Utterance) -> np.ndarray:
    """`read_audio`, with the way out in the message (the file broke after validation, or was never validated)."""
    try:
        return read_audio(u.audio, u.id)
    except AudioError as e:
        raise AudioError(
            u.id, u.audio, f"{e.problem}. Remove utterance {u.id!r} from its data dir (its lines in wav.scp, text, "
            "utt2spk and utt2dur) or re-run data preparation; `python -m asrllm.bin.validate_data --data <dir>` "
            "lists every such file",
        ) from None


class _BatchDataset(torch.utils.data.Dataset):
    """Item i = the collated i-th batch of a fixed list of index lists (for DataLoader prefetch)."""

    def __init__(self, utterances: Sequence[Utterance], tokenizer: Tokenizer, batches: list[list[int]],
                 nonspeech: Collection[str] = ()) -> None:
        self.utterances = utterances
        self.tokenizer = tokenizer
        self.batches = batches
        self.nonspeech = nonspeech

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> Batch:
        utts = [self.utterances[j] for j in self.batches[i]]
        return collate(
            [u.id for u in utts],
            [read_training_audio(u) for u in utts],
            [encode_text(self.tokenizer, u.id, u.text, self.nonspeech) for u in utts],
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
        nonspeech: Collection[str] = (),  # transcripts of audio without speech: trained on no labels
    ) -> None:
        if len(sampler.durations) != len(utterances):
            raise ValueError(f"sampler has {len(sampler.durations)} durations for {len(utterances)} utterances")
        if world_size != sampler.world_size:
            raise ValueError(f"world_size={world_size} but sampler.world_size={sampler.world_size}")
        check_rank(rank, world_size)
        check_non_negative(num_workers=num_workers)
        for u in utterances:  # fail now, not hours into an epoch (encoding all would take seconds)
            if not u.text.strip():
                raise DataError(f"utterance {u.id!r}: empty transcript {u.text!r} encodes to 0 tokens")
        self.utterances = utterances
        self.tokenizer = tokenizer
        self.sampler = sampler
        self.rank = rank
        self.world_size = world_size
        self.num_workers = num_workers
        self.nonspeech = frozenset(nonspeech)

    def _rank_batches(self, epoch: int) -> list[list[int]]:
        return [rank_slice(b, self.rank, self.world_size) for b in self.sampler.epoch_batches(epoch)]

    def num_batches(self, epoch: int) -> int:
        """Batches this rank gets in `epoch` (the same on every rank)."""
        return len(self.sampler.epoch_batches(epoch))

    def epoch_batches(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """This rank's batches of `epoch`, from the `start`-th on (earlier ones are not read)."""
        check_non_negative(start=start)
        dataset = _BatchDataset(self.utterances, self.tokenizer, self._rank_batches(epoch)[start:], self.nonspeech)
        if self.num_workers == 0:
            yield from (dataset[i] for i in range(len(dataset)))
            return
        # batch_size=None: items are whole batches; the default sequential sampler keeps the order.
        # its own generator: the iterator must not draw the workers' base seed from the global RNG
        seed = int(np.random.SeedSequence([self.sampler.seed, epoch]).generate_state(1)[0])
        generator = torch.Generator().manual_seed(seed)
        yield from torch.utils.data.DataLoader(
            dataset, batch_size=None, num_workers=self.num_workers, generator=generator,
            worker_init_fn=functools.partial(exit_with_parent, os.getpid()),
        )


_PR_SET_PDEATHSIG = 1  # prctl(2) option: the signal this process gets when its parent dies


def exit_with_parent(parent_pid: int, worker_id: int) -> None:
    """DataLoader `worker_init_fn`: on Linux the worker gets SIGKILL when the process that started
    it dies. torch's own watchdog notes the parent's PID only after this function has run, so a
    trainer killed right after forking a worker (e.g. by SIGKILL as an epoch starts) would leave
    the worker waiting for work forever, holding the trainer's open files."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # it died before prctl: nobody is left to signal us
        os._exit(0)


@dataclasses.dataclass(frozen=True)
class AudioDataConfig:
    """Batching of audio training and validation data (the `data:` section of an AM training YAML)."""

    max_batch_seconds: float = 200.0  # padded audio seconds per GLOBAL batch (all ranks together)
    num_buckets: int = 10  # duration buckets: more means less padding, less randomness
    max_duration: float | None = 30.0  # longer training utterances are left out (logged); None keeps all
    num_workers: int = 0  # data-loading worker processes per rank
    seed: int = 0  # batch order is a function of (seed, epoch)
    # transcript characters outside the tokenizer's vocabulary (they become <unk>): "warn" logs
    # them with example utterances, "error" stops before training
    unknown_chars: checks.UnknownCharsPolicy = "warn"
    # transcripts that mark audio without speech (noise-only utterances): trained on an empty label
    # sequence (CTC: blanks only; a speech LLM or an AED: EOS at once); () = every transcript is speech
    nonspeech: tuple[str, ...] = ()


class AudioData:
    """Training data of acoustic models: Kaldi data dirs + the AM tokenizer of `--tokenizer`."""

    config_cls = AudioDataConfig

    def __init__(self, tokenizer_dir: str | None) -> None:
        if tokenizer_dir is None:
            raise ConfigError("--tokenizer is required: an acoustic model is trained on a tokenizer's labels")
        self.tokenizer_dir = Path(tokenizer_dir)
        self.tokenizer = load_tokenizer(tokenizer_dir)

    def complete_model_config(self, model: dict[str, Any]) -> dict[str, Any]:
        """`model` with `vocab_size` from the tokenizer (a different explicit value is an error)."""
        if model.setdefault("vocab_size", self.tokenizer.vocab_size) != self.tokenizer.vocab_size:
            raise ConfigError(f"model.vocab_size={model['vocab_size']} but the tokenizer has {self.tokenizer.vocab_size}")
        return model

    def read(self, path: str) -> list[Utterance]:
        return read_datadir(path)

    def loader(
        self, utts: list[Utterance], model: Any, cfg: AudioDataConfig, train: bool, rank: int, world_size: int,
        report_dir: Path | None = None,
    ) -> BatchLoader:
        """Bucketed, shuffled batches for training; sorted batches for validation (no `max_duration`).

        `model` must have `num_output_frames` (`checks.FrameCounter`). Both sets are checked and
        filtered first (module docstring); rank 0 writes the left-out ids to `report_dir`, if given.
        """
        utts = self._select(utts, model, cfg, train, rank, report_dir)
        sampler = BucketingSampler(
            [u.duration for u in utts],
            max_batch_seconds=cfg.max_batch_seconds,
            num_buckets=cfg.num_buckets,
            seed=cfg.seed,
            shuffle=train,
            world_size=world_size,
        )
        return BatchLoader(utts, self.tokenizer, sampler, rank=rank, world_size=world_size, num_workers=cfg.num_workers,
                           nonspeech=cfg.nonspeech)

    def _select(
        self, utts: list[Utterance], model: Any, cfg: AudioDataConfig, train: bool, rank: int, report_dir: Path | None
    ) -> list[Utterance]:
        """Report unknown characters, then keep the utterances the model can learn from."""
        if not isinstance(model, checks.FrameCounter):
            raise TypeError(f"{type(model).__name__} has no num_output_frames(); AudioData needs it to filter utterances")
        split = "train" if train else "valid"
        where = "training data" if train else "validation data"
        speech = [(u.id, u.text) for u in utts if u.text not in cfg.nonspeech]
        checks.check_unknown_characters(self.tokenizer, speech, cfg.unknown_chars, where)
        targets = [encode_text(self.tokenizer, u.id, u.text, cfg.nonspeech) for u in utts]
        kept, dropped = checks.select_trainable(
            utts, targets, model.num_output_frames, cfg.max_duration if train else None
        )
        report = None if report_dir is None else Path(report_dir) / f"filtered_utts.{split}.txt"
        if report is not None and rank == 0:
            checks.write_filtered(report, dropped)
        if dropped:
            listed = f"; ids and reasons in {report}" if report is not None else ""
            logger.warning("%s%s", checks.describe_filtered(dropped, len(utts), where), listed)
        if not kept:
            raise DataError(f"{where}: no utterance left to train on ({len(utts)} given, all left out)")
        return [utts[i] for i in kept]

    def save_assets(self, exp_dir: Path) -> None:
        """Copy the tokenizer to `exp_dir/tokenizer`: the experiment dir alone is enough to decode."""
        shutil.copytree(self.tokenizer_dir, exp_dir / "tokenizer", dirs_exist_ok=True)


class SpeechData(AudioData):
    """Training data of speech LLMs: Kaldi data dirs, transcripts in the model's own label tokenizer
    (the LLM's, or the AM tokenizer it was re-vocabularised to), so there is no `--tokenizer`."""

    def __init__(self, tokenizer_dir: str | None) -> None:
        if tokenizer_dir is not None:
            raise ConfigError(
                f"--tokenizer {tokenizer_dir}: a speech LLM brings its own tokenizer "
                "(model.llm, or model.am_tokenizer with label_unit am_tokenizer)"
            )
        self.tokenizer: Tokenizer | None = None  # the model's, once `loader` has seen it

    def complete_model_config(self, model: dict[str, Any]) -> dict[str, Any]:
        """Nothing to fill in: the labels follow from the model's own config."""
        return model

    def loader(
        self, utts: list[Utterance], model: Any, cfg: AudioDataConfig, train: bool, rank: int, world_size: int,
        report_dir: Path | None = None,
    ) -> BatchLoader:
        """`AudioData.loader` with the model's label tokenizer (`model.tokenizer`)."""
        self.tokenizer = model.tokenizer
        return super().loader(utts, model, cfg, train, rank, world_size, report_dir)

    def save_assets(self, exp_dir: Path) -> None:
        """Write the model's label tokenizer to `exp_dir/tokenizer` (decoding reads it from there)."""
        if self.tokenizer is None:
            raise RuntimeError("SpeechData.save_assets before loader(): the model's tokenizer is not known yet")
        out = exp_dir / "tokenizer"
        if out.exists():
            shutil.rmtree(out)
        save_tokenizer(self.tokenizer, out)
