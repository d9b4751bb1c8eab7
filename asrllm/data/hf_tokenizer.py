"""`HFTokenizer`: an LLM's own HuggingFace tokenizer behind our `Tokenizer` protocol (label unit (a)).

PAPER.md §5 (a): the LM scores the LLM's own tokens, optionally of lower-cased text (the authors
lower-cased transcripts for Qwen2). This class wraps a local HF tokenizer directory
(`tokenizer.json` / `tokenizer_config.json`, as `save_pretrained` writes them) and maps it onto
the protocol of `asrllm/data/tokenizer.py`:

- `encode(text)` lower-cases first when `lowercase=True`, never adds special tokens.
- `decode(ids)` drops special tokens (BOS/EOS/pad) and placeholder ids, strips outer spaces.
- `blank_id = -1`: an LLM tokenizer has no CTC blank; -1 is never a valid id, so `ids == blank_id`
  is always False and indexing with it is an error (never silently the last token).
  `pad_id` is the tokenizer's pad token, else its EOS. `unk_id` is -1 where there is none
  (byte-level BPE cannot produce unknown tokens).
- `bos_id`: the tokenizer's BOS, or its EOS where it has none (Qwen2: `<|endoftext|>` starts and
  ends a text). Either can be overridden by token string (`bos_token=` / `eos_token=`).
- `pieces`: the tokenizer's token strings; `vocab_size=` pads them with "" placeholders up to the
  model's embedding size (Qwen2 has 151,936 rows for 151,646 tokens), so that a (V,) mask or a
  (N, V) score matrix lines up with the model.
- `word_start_mask()`: True for tokens that begin with a space marker: byte-level BPE `Ġ` (GPT-2,
  Qwen2, SmolLM2) or SentencePiece `▁` (Llama-2 style). Special and placeholder tokens: False.
  Byte-level BPE writes the FIRST word of a text without `Ġ` ("hello world" -> hello, Ġworld):
  the mask is per id and cannot know positions, so `word_starts(ids)` also marks the first token.

`train(cfg, text_file, out_dir)` trains a byte-level BPE (GPT-2/Qwen2 style, `<|endoftext|>` as
BOS/EOS/pad) with the `tokenizers` library: the tokenizer of the tiny stand-in LLM of mini_synth.
It is registered as kind "hf" in `TOKENIZER_CLASSES`, so `load_tokenizer(dir)` reads it back.

Shapes: V vocabulary.

>>> import tempfile
>>> from asrllm.data.tokenizer import TokenizerConfig
>>> d = tempfile.mkdtemp()
>>> _ = open(f"{d}/text", "w").write("the cat sat on the mat\\n" * 20)
>>> tok = HFTokenizer.train(TokenizerConfig(kind="hf", vocab_size=300), f"{d}/text", d)
>>> ids = tok.encode("the cat")
>>> tok.decode(ids), tok.word_starts(ids), tok.blank_id
('the cat', [True, True], -1)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # tokenizer.py imports this module to register it; no import cycle at run time
    from asrllm.data.tokenizer import TokenizerConfig

logger = logging.getLogger(__name__)

WORD_START_MARKERS = ("Ġ", "▁")  # byte-level BPE's space (U+0120), SentencePiece's (U+2581)
ENDOFTEXT = "<|endoftext|>"  # BOS/EOS/pad of the byte-level BPE that `train` writes (Qwen2 style)
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "vocab.txt")  # one of them makes a tokenizer
NO_ID = -1  # "this tokenizer has no such token" (blank; unk of byte-level BPE)


class HFTokenizer:
    """An LLM's own tokenizer (local HF tokenizer dir) as a `Tokenizer`; see the module docstring."""

    def __init__(
        self,
        tok_dir: str | Path,
        lowercase: bool = False,
        bos_token: str | None = None,
        eos_token: str | None = None,
        vocab_size: int | None = None,
    ) -> None:
        from transformers import AutoTokenizer  # heavy import, only when an LLM tokenizer is used

        self.tok_dir = Path(tok_dir)
        if not self.tok_dir.is_dir():
            raise FileNotFoundError(f"HFTokenizer: {self.tok_dir} is not a directory")
        if not any((self.tok_dir / name).is_file() for name in TOKENIZER_FILES):
            # without them transformers may still build a tokenizer from config.json, one that encodes nothing
            raise FileNotFoundError(
                f"HFTokenizer: {self.tok_dir} holds no tokenizer (none of {', '.join(TOKENIZER_FILES)}); copy the "
                "LLM's tokenizer files there, or name their dir with llm.tokenizer"
            )
        self.lowercase = lowercase  # lower-case text before encoding (label unit (a) for Qwen)
        self._tok = AutoTokenizer.from_pretrained(str(self.tok_dir), local_files_only=True, trust_remote_code=False)
        own = len(self._tok)  # tokens the tokenizer knows, added tokens included
        size = own if vocab_size is None else vocab_size
        if size < own:
            raise ValueError(f"HFTokenizer: vocab_size={vocab_size} is below the tokenizer's {own} tokens ({tok_dir})")
        self._own = own
        self._pieces = list(self._tok.convert_ids_to_tokens(list(range(own)))) + [""] * (size - own)
        self._special = set(self._tok.all_special_ids)
        self.eos_id = self._token_id(eos_token, "eos_token") if eos_token else self._tok.eos_token_id
        if self.eos_id is None:
            raise ValueError(f"HFTokenizer: {tok_dir} has no eos_token; set eos_token= explicitly")
        self.bos_id = self._token_id(bos_token, "bos_token") if bos_token else self._tok.bos_token_id
        if self.bos_id is None:
            self.bos_id = self.eos_id  # Qwen2: no BOS; <|endoftext|> starts a text
        self._special |= {self.bos_id, self.eos_id}
        self.pad_id = self._tok.pad_token_id if self._tok.pad_token_id is not None else self.eos_id
        self.unk_id = self._tok.unk_token_id if self._tok.unk_token_id is not None else NO_ID
        self.blank_id = NO_ID  # no CTC blank in an LLM vocabulary

    def _token_id(self, token: str, option: str) -> int:
        tid = self._tok.convert_tokens_to_ids(token)
        if tid is None or (tid == self._tok.unk_token_id and token != self._tok.unk_token):
            raise ValueError(f"HFTokenizer: {option}={token!r} is not a token of {self.tok_dir}")
        return int(tid)

    @property
    def hf(self) -> object:
        """The wrapped `transformers` tokenizer (for saving; prefer the protocol methods)."""
        return self._tok

    @property
    def vocab_size(self) -> int:
        return len(self._pieces)

    @property
    def pieces(self) -> list[str]:
        return self._pieces

    def normalize(self, text: str) -> str:
        """The text as the LLM sees it (lower-cased when `lowercase`)."""
        return text.lower() if self.lowercase else text

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(self.normalize(text), add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        keep = [i for i in ids if 0 <= i < self._own and i not in self._special]
        return self._tok.decode(keep, skip_special_tokens=True).strip()

    def word_start_mask(self) -> torch.Tensor:
        mask = torch.tensor([p.startswith(WORD_START_MARKERS) for p in self._pieces], dtype=torch.bool)  # (V,)
        mask[sorted(i for i in self._special if 0 <= i < len(mask))] = False
        return mask

    def is_word_start(self, token_id: int) -> bool:
        return (
            0 <= token_id < self._own
            and token_id not in self._special
            and self._pieces[token_id].startswith(WORD_START_MARKERS)
        )

    def word_starts(self, ids: list[int]) -> list[bool]:
        """Per position of `ids` (one encoded text): does the token begin a word? The first does."""
        return [i == 0 or self.is_word_start(t) for i, t in enumerate(ids)]

    def save(self, out_dir: str | Path) -> None:
        """Write the HF tokenizer files and `tokenizer.yaml` (kind "hf") so `load_tokenizer` reads it.

        Lower-casing and BOS/EOS overrides are options of the user (`LLMConfig`), not stored here.
        """
        from asrllm.config import save_config
        from asrllm.data.tokenizer import CONFIG_FILE, TokenizerConfig

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self._tok.save_pretrained(str(out_dir))
        save_config(TokenizerConfig(kind="hf", vocab_size=max(self._own, 4)), out_dir / CONFIG_FILE)

    @classmethod
    def train(cls, cfg: TokenizerConfig, text_file: Path, out_dir: Path) -> HFTokenizer:
        """Byte-level BPE of `cfg.vocab_size` tokens (incl. `<|endoftext|>`) on `text_file`."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        from transformers import PreTrainedTokenizerFast

        bpe = Tokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=cfg.vocab_size,
            special_tokens=[ENDOFTEXT],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: nothing is unknown
            show_progress=False,
        )
        bpe.train([str(text_file)], trainer)
        fast = PreTrainedTokenizerFast(
            tokenizer_object=bpe, bos_token=ENDOFTEXT, eos_token=ENDOFTEXT, pad_token=ENDOFTEXT
        )
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        fast.save_pretrained(str(out_dir))
        logger.info("trained a byte-level BPE of %d tokens in %s", len(fast), out_dir)
        return cls(out_dir)

    @classmethod
    def load(cls, cfg: TokenizerConfig, out_dir: Path) -> HFTokenizer:
        return cls(out_dir)
