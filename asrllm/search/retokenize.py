"""Re-tokenisation for delayed fusion v2 and N-best rescoring: AM labels -> words -> an LM's own tokens.

PAPER.md §5 (delayed fusion v2, after Hori et al. 2025): a hypothesis keeps its AM labels and,
apart, the tokens of its completed words in the LM's OWN tokenizer, so that any LM can be fused
with any AM. A word is the run of AM labels from one word-start label (`Tokenizer.is_word_start`:
SentencePiece's `▁`, the character tokenizer's `▁`) up to the next; it is complete once the next
word has started, or at the end of the utterance.

Each completed word is turned into text with the AM tokenizer and tokenised ALONE by the LM
tokenizer, the first word as is and every later one with a leading space (" word"). Tokens of a
prefix's completed words therefore never change when more words complete, which is what lets the
LM's KV cache hold them. For byte-level BPE (GPT-2, Qwen2, SmolLM2) and SentencePiece this equals
tokenising the whole text at once (tests check it on the whole mini_synth LM text and
transcripts, together with the round trip labels -> text -> LM tokens -> text). The LM tokenizer
applies its own text normalisation (e.g. `HFTokenizer(lowercase=True)`: the case the LM was
fine-tuned on).

`WordRetokenizer` memoises the tokens of each distinct word: the search asks for the same words
again and again (every hypothesis of a beam shares most of them).

>>> from asrllm.data.tokenizer import CharTokenizer
>>> am = CharTokenizer(list("ABC"))
>>> labels = am.encode("AB C")  # ▁ A B ▁ C
>>> starts = word_start_ids(am)
>>> word_bounds(labels, starts), completed_length(labels, starts)
([0, 3], 3)
>>> WordRetokenizer(am, CharTokenizer(list("CBA"))).tokens_of_labels(labels)  # another id layout
[3, 6, 5, 3, 4]
"""

from __future__ import annotations

from collections.abc import Container

from asrllm.data.tokenizer import Tokenizer


def word_start_ids(tokenizer: Tokenizer) -> frozenset[int]:
    """The ids of `tokenizer` that begin a word (`Tokenizer.word_start_mask`)."""
    return frozenset(tokenizer.word_start_mask().nonzero().squeeze(1).tolist())


def word_bounds(labels: list[int], word_starts: Container[int]) -> list[int]:
    """Start position of every word of `labels`: 0 (whatever the first label is) and each later word start."""
    return [0] + [i for i in range(1, len(labels)) if labels[i] in word_starts] if labels else []


def completed_length(labels: list[int], word_starts: Container[int]) -> int:
    """How many leading labels form completed words: up to the start of the last (still open) word."""
    return word_bounds(labels, word_starts)[-1] if labels else 0


class WordRetokenizer:
    """AM labels of completed words -> tokens of the LM tokenizer, word by word (see the module docstring)."""

    def __init__(self, am_tokenizer: Tokenizer, lm_tokenizer: Tokenizer) -> None:
        self.am_tokenizer = am_tokenizer
        self.lm_tokenizer = lm_tokenizer
        self.word_starts = word_start_ids(am_tokenizer)
        self._cache: dict[tuple[tuple[int, ...], bool], list[int]] = {}  # (word labels, first) -> LM tokens

    def tokens_of_word(self, labels: tuple[int, ...], first: bool) -> list[int]:
        """LM tokens of one word given by its AM labels; `first`: the word starts the text (no leading space).

        A word whose labels decode to no text (a lone `▁`) has no tokens.
        """
        key = (labels, first)
        tokens = self._cache.get(key)
        if tokens is None:
            text = self.am_tokenizer.decode(list(labels)).strip()
            tokens = self.lm_tokenizer.encode(text if first else " " + text) if text else []
            self._cache[key] = tokens
        return tokens

    def tokens_of_words(self, labels: list[int], bounds: list[int], first_word: bool) -> list[int]:
        """LM tokens of the words labels[bounds[i]:bounds[i+1]] (the last one up to the end of `labels`);
        first_word: no earlier word produced tokens, so the first word with text starts the text."""
        ends = [*bounds[1:], len(labels)]
        out: list[int] = []
        for a, b in zip(bounds, ends):
            out += self.tokens_of_word(tuple(labels[a:b]), first_word and not out)
        return out

    def tokens_of_labels(self, labels: list[int]) -> list[int]:
        """LM tokens of a whole (final) label sequence: every word complete."""
        return self.tokens_of_words(labels, word_bounds(labels, self.word_starts), first_word=True)
