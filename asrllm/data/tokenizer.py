"""Tokenizers of the acoustic models: the `Tokenizer` protocol, SentencePiece and characters.

Id layout shared by every AM tokenizer (the search and the CTC loss rely on it):

    0 `<blank>`    CTC blank, and the padding value of target tensors
    1 `<unk>`      unknown token
    2 `<sos/eos>`  one id for both sequence start and end (ESPnet convention)

`word_start_mask()` says which tokens begin a new word; delayed fusion uses it to find word
boundaries when it re-tokenises AM hypotheses for an LLM. Both tokenizers mark word starts with
SentencePiece's `▁`: a BPE/unigram piece starts a word when it begins with `▁`; the character
tokenizer has a separate `▁` token, written before every word, so that the two behave alike.

`train_tokenizer(cfg, text_file, out_dir)` writes `out_dir/tokenizer.yaml` (the resolved
`TokenizerConfig`) plus the model (`spm.model` or `chars.txt`); `load_tokenizer(out_dir)` reads it
back. The kind is looked up in `TOKENIZER_CLASSES`. Characters of the training text that the new
tokenizer maps to `<unk>` (only SentencePiece with `character_coverage` < 1 leaves any out) are
logged with example lines.

Shapes: V vocabulary.

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> _ = open(f"{d}/text", "w").write("HELLO WORLD\\n")
>>> tok = train_tokenizer(TokenizerConfig(kind="char"), f"{d}/text", d)
>>> tok.pieces[:6], tok.encode("HOLD")
(['<blank>', '<unk>', '<sos/eos>', '▁', 'D', 'E'], [3, 6, 8, 7, 4])
>>> tok.decode(tok.encode("HELLO WORLD"))
'HELLO WORLD'
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import sentencepiece as spm
import torch

from asrllm.config import ConfigError, atomic_write_text, load_config, save_config
from asrllm.data.checks import unknown_characters
from asrllm.data.hf_tokenizer import HFTokenizer

logger = logging.getLogger(__name__)

BLANK, UNK, SOS_EOS = "<blank>", "<unk>", "<sos/eos>"
SPECIALS = (BLANK, UNK, SOS_EOS)  # ids 0, 1, 2 in every AM tokenizer
WORD_START = "▁"  # U+2581, SentencePiece's word-boundary marker
CONFIG_FILE = "tokenizer.yaml"


@runtime_checkable
class Tokenizer(Protocol):
    """What models, losses and searches need from a tokenizer."""

    blank_id: int  # CTC blank; also the padding value in target tensors
    pad_id: int  # equal to blank_id for AM tokenizers
    unk_id: int
    bos_id: int  # sequence start
    eos_id: int  # sequence end (== bos_id for AM tokenizers)

    @property
    def vocab_size(self) -> int: ...

    @property
    def pieces(self) -> list[str]:
        """Surface string of every id, length V."""
        ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str:
        """Text of `ids`; blank, bos and eos are dropped."""
        ...

    def word_start_mask(self) -> torch.Tensor:
        """(V,) bool: True where the token begins a new word (special tokens: False)."""
        ...

    def is_word_start(self, token_id: int) -> bool: ...


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
    """How to train an AM tokenizer (stored resolved in `out_dir/tokenizer.yaml`)."""

    kind: Literal["sentencepiece", "char", "hf"] = "sentencepiece"  # key of TOKENIZER_CLASSES
    model_type: Literal["bpe", "unigram"] = "bpe"  # SentencePiece algorithm
    vocab_size: int = 256  # SentencePiece: total size incl. the 3 specials (char: set by the data)
    character_coverage: float = 1.0  # SentencePiece: share of characters kept; the rest map to <unk>
    split_digits: bool = True  # SentencePiece: every digit is its own piece (no "1999" pieces)
    hard_vocab_limit: bool = True  # SentencePiece: fail rather than shrink when text is too small
    num_threads: int = 4  # SentencePiece training threads
    max_sentence_length: int = 16384  # SentencePiece: longer training lines (bytes) are skipped

    def __post_init__(self) -> None:
        if self.vocab_size <= len(SPECIALS):
            raise ConfigError(f"TokenizerConfig.vocab_size={self.vocab_size} must exceed {len(SPECIALS)} (specials)")
        if not 0.0 < self.character_coverage <= 1.0:
            raise ConfigError(f"TokenizerConfig.character_coverage={self.character_coverage} must be in (0, 1]")
        if self.num_threads < 1:
            raise ConfigError(f"TokenizerConfig.num_threads={self.num_threads} must be >= 1")


class _SpecialIds:
    """The fixed AM id layout, shared by both implementations."""

    blank_id = 0
    pad_id = 0
    unk_id = 1
    bos_id = 2
    eos_id = 2

    @property
    def pieces(self) -> list[str]:
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def word_start_mask(self) -> torch.Tensor:
        mask = torch.tensor([p.startswith(WORD_START) for p in self.pieces], dtype=torch.bool)  # (V,)
        mask[: len(SPECIALS)] = False
        return mask

    def is_word_start(self, token_id: int) -> bool:
        return token_id >= len(SPECIALS) and self.pieces[token_id].startswith(WORD_START)


class SentencePieceTokenizer(_SpecialIds):
    """SentencePiece BPE or unigram model trained with the AM id layout (`<blank>` is spm's pad)."""

    MODEL_FILE = "spm.model"

    def __init__(self, model_file: str | Path) -> None:
        self.model_file = str(model_file)
        self._sp = spm.SentencePieceProcessor(model_file=self.model_file)
        self._pieces = [self._sp.id_to_piece(i) for i in range(self._sp.get_piece_size())]
        assert self._pieces[: len(SPECIALS)] == list(SPECIALS), (model_file, self._pieces[:3])

    @property
    def pieces(self) -> list[str]:
        return self._pieces

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self._sp.decode([i for i in ids if i not in (self.blank_id, self.bos_id)])

    @classmethod
    def train(cls, cfg: TokenizerConfig, text_file: Path, out_dir: Path) -> SentencePieceTokenizer:
        prefix = out_dir / Path(cls.MODEL_FILE).stem
        spm.SentencePieceTrainer.train(
            input=str(text_file),
            model_prefix=str(prefix),
            model_type=cfg.model_type,
            vocab_size=cfg.vocab_size,
            character_coverage=cfg.character_coverage,
            split_digits=cfg.split_digits,
            hard_vocab_limit=cfg.hard_vocab_limit,
            num_threads=cfg.num_threads,
            max_sentence_length=cfg.max_sentence_length,
            # The AM id layout: spm's pad is our blank, its bos is our <sos/eos>; no separate eos.
            pad_id=0, pad_piece=BLANK,
            unk_id=1, unk_piece=UNK, unk_surface=UNK,
            bos_id=2, bos_piece=SOS_EOS,
            eos_id=-1,
            # Transcripts are normalised during data prep; spm must not change them again, so
            # that decode(encode(text)) == text.
            normalization_rule_name="identity",
            minloglevel=2,
        )
        return cls(out_dir / cls.MODEL_FILE)

    @classmethod
    def load(cls, cfg: TokenizerConfig, out_dir: Path) -> SentencePieceTokenizer:
        return cls(out_dir / cls.MODEL_FILE)


class CharTokenizer(_SpecialIds):
    """Characters: the specials, then `▁` (written before every word), then sorted characters."""

    CHARS_FILE = "chars.txt"

    def __init__(self, chars: list[str]) -> None:
        bad = [c for c in chars if len(c) != 1 or c.isspace() or c == WORD_START]
        assert not bad, bad
        self._pieces = [*SPECIALS, WORD_START, *chars]
        self._ids = {p: i for i, p in enumerate(self._pieces)}

    @property
    def pieces(self) -> list[str]:
        return self._pieces

    def encode(self, text: str) -> list[int]:
        words = text.split()
        if not words:
            return []
        marked = WORD_START + WORD_START.join(words)  # "▁HELLO▁WORLD"
        return [self._ids.get(c, self.unk_id) for c in marked]

    def decode(self, ids: list[int]) -> str:
        text = "".join(self._pieces[i] for i in ids if i not in (self.blank_id, self.bos_id))
        return " ".join(text.replace(WORD_START, " ").split())

    @classmethod
    def train(cls, cfg: TokenizerConfig, text_file: Path, out_dir: Path) -> CharTokenizer:
        chars: set[str] = set()
        with open(text_file, encoding="utf-8") as f:
            for line in f:
                chars.update(line)
        chars = {c for c in chars if not c.isspace() and c != WORD_START}
        if not chars:
            raise ConfigError(f"{text_file}: no characters to build a character vocabulary from")
        ordered = sorted(chars)
        atomic_write_text(out_dir / cls.CHARS_FILE, "".join(f"{c}\n" for c in ordered))
        return cls(ordered)

    @classmethod
    def load(cls, cfg: TokenizerConfig, out_dir: Path) -> CharTokenizer:
        return cls((out_dir / cls.CHARS_FILE).read_text(encoding="utf-8").splitlines())


TOKENIZER_CLASSES: dict[str, type[SentencePieceTokenizer] | type[CharTokenizer] | type[HFTokenizer]] = {
    "sentencepiece": SentencePieceTokenizer,
    "char": CharTokenizer,
    "hf": HFTokenizer,  # an LLM's own tokenizer (asrllm/data/hf_tokenizer.py)
}


def train_tokenizer(cfg: TokenizerConfig, text_file: str | Path, out_dir: str | Path) -> Tokenizer:
    """Train on `text_file` (one transcript per line, no ids); write `out_dir/tokenizer.yaml` + model."""
    text_file, out_dir = Path(text_file), Path(out_dir)
    if not text_file.is_file():
        raise ConfigError(f"{text_file}: no such text file")
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = TOKENIZER_CLASSES[cfg.kind].train(cfg, text_file, out_dir)
    save_config(cfg, out_dir / CONFIG_FILE)  # written last: its presence means the dir is complete
    logger.info("trained %s tokenizer with %d tokens in %s", cfg.kind, tok.vocab_size, out_dir)
    if cfg.kind == "sentencepiece" and cfg.character_coverage < 1.0:  # the only kind that leaves characters out
        _report_unknown_characters(tok, text_file)
    return tok


def _report_unknown_characters(tok: Tokenizer, text_file: Path) -> None:
    """Log the characters of `text_file` that `tok` maps to `<unk>`, with example lines."""
    with open(text_file, encoding="utf-8") as f:
        lines = [(f"{text_file.name}:{n}", line.strip()) for n, line in enumerate(f, start=1)]
    unknown = unknown_characters(tok, lines)
    if unknown.utts:
        logger.warning("%s", unknown.describe(len(lines), str(text_file)).replace(" utterances ", " lines "))


def load_tokenizer(tok_dir: str | Path) -> Tokenizer:
    """Load the tokenizer that `train_tokenizer` wrote to `tok_dir`."""
    tok_dir = Path(tok_dir)
    cfg = load_config(TokenizerConfig, tok_dir / CONFIG_FILE)
    return TOKENIZER_CLASSES[cfg.kind].load(cfg, tok_dir)


def save_tokenizer(tok: Tokenizer, out_dir: Path) -> None:
    """Write `tok` to the new dir `out_dir` so that `load_tokenizer(out_dir)` reads it back (an
    `HFTokenizer` as its HF files; the user's options, lower-casing and BOS/EOS, come from the LLM config)."""
    out_dir.mkdir(parents=True)
    if isinstance(tok, HFTokenizer):
        tok.save(out_dir)
    elif isinstance(tok, SentencePieceTokenizer):
        shutil.copyfile(tok.model_file, out_dir / SentencePieceTokenizer.MODEL_FILE)
        save_config(TokenizerConfig(kind="sentencepiece", vocab_size=tok.vocab_size), out_dir / CONFIG_FILE)
    elif isinstance(tok, CharTokenizer):
        chars = tok.pieces[4:]  # after <blank> <unk> <sos/eos> ▁
        (out_dir / CharTokenizer.CHARS_FILE).write_text("".join(f"{c}\n" for c in chars), encoding="utf-8")
        save_config(TokenizerConfig(kind="char"), out_dir / CONFIG_FILE)
    else:
        raise TypeError(f"cannot save a tokenizer of type {type(tok).__name__}")
