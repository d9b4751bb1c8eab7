"""HFTokenizer: an LLM's own tokenizer behind the Tokenizer protocol (ids, lower-casing, word starts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from asrllm.data.hf_tokenizer import HFTokenizer
from asrllm.data.tokenizer import TOKENIZER_CLASSES, Tokenizer, TokenizerConfig, load_tokenizer, train_tokenizer
from asrllm.testing.dummies import dummy_text

TEXTS = [dummy_text(np.random.default_rng(i), 3, 10).lower() for i in range(100)]


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bpe")
    (out / "text").write_text("".join(f"{t}\n" for t in TEXTS))
    train_tokenizer(TokenizerConfig(kind="hf", vocab_size=350), out / "text", out)
    return out


def test_registered_and_protocol(bpe_dir: Path) -> None:
    assert TOKENIZER_CLASSES["hf"] is HFTokenizer
    tok = load_tokenizer(bpe_dir)
    assert isinstance(tok, HFTokenizer) and isinstance(tok, Tokenizer)
    assert tok.vocab_size == len(tok.pieces) == 350
    eot = tok.hf.convert_tokens_to_ids("<|endoftext|>")
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (eot, eot, eot)
    assert tok.blank_id == -1 and tok.unk_id == -1  # no CTC blank; byte-level BPE has no unknowns


def test_round_trip_and_specials_dropped(bpe_dir: Path) -> None:
    tok = HFTokenizer(bpe_dir)
    for text in TEXTS[:20] + ["naïve café 1999"]:  # bytes: nothing is unknown
        assert tok.decode(tok.encode(text)) == text
    ids = tok.encode(TEXTS[0])
    assert tok.bos_id not in ids
    assert tok.decode([tok.bos_id, *ids, tok.eos_id]) == TEXTS[0]


def test_lowercase(bpe_dir: Path) -> None:
    tok = HFTokenizer(bpe_dir, lowercase=True)
    assert tok.encode("THE Cat") == tok.encode("the cat") == HFTokenizer(bpe_dir).encode("the cat")
    assert tok.decode(tok.encode("THE Cat")) == "the cat"


def test_word_starts_byte_level(bpe_dir: Path) -> None:
    tok = HFTokenizer(bpe_dir)
    mask = tok.word_start_mask()
    assert mask.shape == (tok.vocab_size,) and mask.dtype == torch.bool
    assert all(mask[i] == tok.pieces[i].startswith("Ġ") for i in range(tok.vocab_size) if i != tok.eos_id)
    assert not mask[tok.eos_id]
    text = "the cat sat on the mat"
    ids = tok.encode(text)
    starts = tok.word_starts(ids)
    assert starts[0]  # the first token of a text starts a word although it has no Ġ
    assert sum(starts) == len(text.split())
    assert starts[1:] == [bool(mask[i]) for i in ids[1:]] == [tok.is_word_start(i) for i in ids[1:]]


def test_word_starts_sentencepiece_marker(tmp_path: Path) -> None:
    """A Metaspace (▁) tokenizer, as Llama-2 style SentencePiece tokenizers are."""
    from tokenizers import Tokenizer as RawTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = RawTokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Metaspace()
    raw.decoder = decoders.Metaspace()
    raw.train_from_iterator(TEXTS, trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "<s>", "</s>"],
                                                       show_progress=False))
    PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", bos_token="<s>", eos_token="</s>").save_pretrained(
        str(tmp_path))
    tok = HFTokenizer(tmp_path)
    assert (tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
    ids = tok.encode("the cat sat")
    assert tok.word_starts(ids).count(True) == 3 and tok.decode(ids) == "the cat sat"
    assert not tok.word_start_mask()[:3].any()


def test_padding_to_model_vocab_and_overrides(bpe_dir: Path) -> None:
    tok = HFTokenizer(bpe_dir, vocab_size=360, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    assert tok.vocab_size == 360 and tok.pieces[-1] == "" and not tok.word_start_mask()[350:].any()
    assert tok.decode([*tok.encode("the cat"), 355]) == "the cat"  # placeholder ids are dropped
    with pytest.raises(ValueError, match="vocab_size=10"):
        HFTokenizer(bpe_dir, vocab_size=10)
    with pytest.raises(ValueError, match="eos_token='<nope>'"):
        HFTokenizer(bpe_dir, eos_token="<nope>")
    with pytest.raises(FileNotFoundError):
        HFTokenizer(bpe_dir / "missing")
