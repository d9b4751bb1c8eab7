"""Text data for language models: sentences -> token-count-bucketed `TextBatch`es.

Sources (`read_texts`):
    a plain text file                 one sentence per line; ids `<file name>-<line number>`
    a directory with `wav.scp`        a Kaldi data dir: its `text` (`<id> <TRANSCRIPT>`), read
                                      and checked by `asrllm.data.datadir.read_datadir`
    any other directory               its plain `text` file (e.g. data/lm/text of the recipes)
Blank lines of plain files are skipped.

`TextBatchLoader` implements the trainer's loader protocol (`asrllm.train.trainer.TrainLoader`)
with the sampler of the audio loader: `asrllm.data.sampler.BucketingSampler`, given each
sentence's token count (BOS and EOS included) where it is usually given durations. A batch's
padded size (sentences x longest) is therefore at most `max_batch_tokens`, batches are shuffled
per epoch as a pure function of (seed, epoch), global batches are sliced over DDP ranks, and
`epoch_batches(epoch, start)` skips the first `start` batches without collating them. Sentences
are tokenised once, when the loader is built.

`TextData` is how the train CLI feeds LM-kind models (`model.train_data`): text in, the model's
own tokenizer and BOS/EOS ids.

Shapes: B sentences, L tokens (BOS and EOS included).

>>> from asrllm.data.tokenizer import CharTokenizer
>>> tok = CharTokenizer(list("ABC"))
>>> loader = TextBatchLoader([("s1", "AB C"), ("s2", "C")], tok, tok.bos_id, tok.eos_id, max_batch_tokens=20,
...                          num_buckets=1, shuffle=False)
>>> batch = next(loader.epoch_batches(1))
>>> batch.tokens.tolist(), batch.lengths.tolist()
([[2, 3, 6, 2, 2, 2, 2], [2, 3, 4, 5, 3, 6, 2]], [4, 7])
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from asrllm.config import ConfigError
from asrllm.data.datadir import DataError, read_datadir
from asrllm.data.loader import encode_text
from asrllm.data.sampler import BucketingSampler, check_non_negative, check_rank, rank_slice
from asrllm.data.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

Sentence = tuple[str, str]  # (id, text)


def read_texts(path: str | Path) -> list[Sentence]:
    """(id, text) of every sentence of a text file or data dir (see the module docstring)."""
    path = Path(path)
    if path.is_dir() and (path / "wav.scp").is_file():
        return [(u.id, u.text) for u in read_datadir(path)]
    text_file = path / "text" if path.is_dir() else path
    if not text_file.is_file():
        raise DataError(f"{path}: neither a text file nor a directory with a `text` file")
    sentences = []
    with open(text_file, encoding="utf-8") as f:
        try:
            for lineno, line in enumerate(f, start=1):
                if line.strip():
                    sentences.append((f"{path.name}-{lineno:08d}", " ".join(line.split())))
        except UnicodeDecodeError as e:
            raise DataError(f"{text_file}: after line {len(sentences)}: not valid UTF-8 ({e.reason})") from None
    if not sentences:
        raise DataError(f"{text_file}: no sentences")
    logger.info("read %d sentences from %s", len(sentences), text_file)
    return sentences


def num_words(text: str) -> int:
    """Words of a sentence (whitespace-separated): the unit of word-level perplexity."""
    return len(text.split())


@dataclasses.dataclass
class TextBatch:
    """A collated batch of sentences. Padding values are meaningless: always use the lengths."""

    ids: list[str]  # sentence ids, in batch order
    tokens: torch.Tensor  # (B, L) int64: BOS, the sentence's tokens, EOS; right-padded with EOS
    lengths: torch.Tensor  # (B,) int64 tokens, BOS and EOS included (>= 3: a sentence has a token)
    texts: list[str]  # the sentences, in batch order

    def to(self, device: torch.device | str) -> TextBatch:
        """A copy with every tensor on `device`."""
        return dataclasses.replace(
            self, tokens=self.tokens.to(device, non_blocking=True), lengths=self.lengths.to(device, non_blocking=True)
        )

    def __len__(self) -> int:
        return len(self.ids)


class TextBatchLoader:
    """This rank's `TextBatch`es of an epoch, deterministic and resumable; see the module docstring."""

    def __init__(
        self,
        sentences: Sequence[Sentence],  # (id, text), e.g. from read_texts
        tokenizer: Tokenizer,  # the LM's label tokenizer
        bos_id: int,  # written before every sentence
        eos_id: int,  # written after every sentence (and used as padding)
        max_batch_tokens: int,  # padded tokens per GLOBAL batch (sentences x longest, BOS/EOS included)
        num_buckets: int = 10,  # length buckets; more = less padding, less randomness
        seed: int = 0,  # with the epoch, fixes the order
        shuffle: bool = True,  # False: sorted by length, short to long (validation, perplexity)
        max_length: int | None = None,  # longer sentences (tokens with BOS/EOS) are left out, with a warning
        rank: int = 0,
        world_size: int = 1,  # global batches with fewer sentences are dropped
    ) -> None:
        check_rank(rank, world_size)
        self.sentences = list(sentences)
        encoded = [encode_text(tokenizer, sid, text) for sid, text in self.sentences]
        lengths = np.array([len(ids) + 2 for ids in encoded], dtype=np.int64)  # (n,) with BOS and EOS
        self._offsets = np.concatenate([[0], np.cumsum(lengths - 2)])  # (n+1,) into the flat token array
        self._flat = np.fromiter((i for ids in encoded for i in ids), dtype=np.int64, count=int(self._offsets[-1]))
        self.lengths = lengths
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.rank = rank
        self.world_size = world_size
        self.sampler = BucketingSampler(
            lengths.astype(np.float64), max_batch_seconds=max_batch_tokens, num_buckets=num_buckets, seed=seed,
            shuffle=shuffle, max_duration=max_length, world_size=world_size, ids=[sid for sid, _ in self.sentences],
        )
        logger.info("%d sentences, %d tokens (BOS/EOS included)", len(lengths), int(lengths.sum()))

    def num_batches(self, epoch: int) -> int:
        """Batches this rank gets in `epoch` (the same on every rank)."""
        return len(self.sampler.epoch_batches(epoch))

    def epoch_batches(self, epoch: int, start: int = 0) -> Iterator[TextBatch]:
        """This rank's batches of `epoch`, from the `start`-th on (earlier ones are not collated)."""
        check_non_negative(start=start)
        for batch in self.sampler.epoch_batches(epoch)[start:]:
            yield self._collate(rank_slice(batch, self.rank, self.world_size))

    def _collate(self, indices: list[int]) -> TextBatch:
        lengths = torch.from_numpy(self.lengths[indices])  # (B,)
        tokens = torch.full((len(indices), int(lengths.max())), self.eos_id, dtype=torch.int64)  # (B, L)
        tokens[:, 0] = self.bos_id
        for b, i in enumerate(indices):
            tokens[b, 1 : lengths[b] - 1] = torch.from_numpy(self._flat[self._offsets[i] : self._offsets[i + 1]])
        return TextBatch(
            [self.sentences[i][0] for i in indices], tokens, lengths, [self.sentences[i][1] for i in indices]
        )


@dataclasses.dataclass(frozen=True)
class TextDataConfig:
    """Batching of LM training and validation text (the `data:` section of an LM training YAML)."""

    max_batch_tokens: int = 4000  # padded tokens per GLOBAL batch (all ranks), BOS/EOS included
    num_buckets: int = 10  # length buckets: more means less padding, less randomness
    max_length: int | None = 256  # longer training sentences (tokens) are left out (logged); None keeps all
    seed: int = 0  # batch order is a function of (seed, epoch)

    def __post_init__(self) -> None:
        if self.max_batch_tokens < 3:
            raise ConfigError(f"data.max_batch_tokens={self.max_batch_tokens} must be >= 3 (BOS, a token, EOS)")
        if self.num_buckets < 1:
            raise ConfigError(f"data.num_buckets={self.num_buckets} must be >= 1")
        if self.max_length is not None and self.max_length < 3:
            raise ConfigError(f"data.max_length={self.max_length} must be >= 3 or null")


@runtime_checkable
class LanguageModel(Protocol):
    """What `TextData` needs from a model: its label tokenizer and sequence ids."""

    tokenizer: Tokenizer
    bos_id: int
    eos_id: int


class TextData:
    """Training data of language models: text files or data dirs, tokenised by the model itself."""

    config_cls = TextDataConfig

    def __init__(self, tokenizer_dir: str | None) -> None:
        if tokenizer_dir is not None:
            raise ConfigError(
                f"--tokenizer {tokenizer_dir}: a language model brings its own tokenizer "
                "(model.llm, or model.am_tokenizer with label_unit am_tokenizer)"
            )

    def complete_model_config(self, model: dict[str, Any]) -> dict[str, Any]:
        """Nothing to fill in: the vocabulary follows from the model's own config."""
        return model

    def read(self, path: str) -> list[Sentence]:
        return read_texts(path)

    def loader(
        self, sentences: list[Sentence], model: Any, cfg: TextDataConfig, train: bool, rank: int, world_size: int,
        report_dir: Path | None = None,
    ) -> TextBatchLoader:
        """Shuffled, length-filtered batches for training; sorted, unfiltered batches for validation.

        `report_dir` is unused: the sentences left out as too long are named in the log.
        """
        lm: LanguageModel = model
        return TextBatchLoader(
            sentences, lm.tokenizer, lm.bos_id, lm.eos_id, max_batch_tokens=cfg.max_batch_tokens,
            num_buckets=cfg.num_buckets, seed=cfg.seed, shuffle=train, max_length=cfg.max_length if train else None,
            rank=rank, world_size=world_size,
        )

    def save_assets(self, exp_dir: Path) -> None:
        """Nothing to copy: the model config names its tokenizer."""
