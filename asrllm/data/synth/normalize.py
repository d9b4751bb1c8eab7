"""LibriSpeech-style normalisation of raw English text (pure): ASCII folding, word tokenisation,
upper case; text holding digits or symbols is dropped (None) rather than guessed at."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

# Punctuation that bounds or decorates words and is dropped. Any other non-letter character
# (digits, &, %, $, @, /, *, brackets, ...) would have to be spoken as a word, so a chunk holding
# one is dropped rather than guessed at.
_NOT_ALLOWED = re.compile(r"[^A-Za-z\s.,;:!?\"'()`-]")
_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")
_TYPOGRAPHIC = str.maketrans(
    {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": " -- ", "\u2014": " -- "}
)


def ascii_fold(text: str) -> str:
    """Typographic quotes and dashes to ASCII, accents removed.

    >>> ascii_fold("caf\u00e9 \u2018x\u2019 a\u2014b")
    "cafe 'x' a -- b"
    """
    if text.isascii():
        return text
    text = text.translate(_TYPOGRAPHIC)
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def tokenize(text: str) -> list[str] | None:
    """Cased words of ASCII-folded `text`, or None if it holds a character that is not a letter or
    plain punctuation (digits, &, %, $, @, /, *, brackets, ... would have to be spoken as words,
    so such text is dropped rather than guessed at). Hyphens separate words; apostrophes stay
    inside words.

    >>> tokenize("Don't look back -- something might be gaining on you.")
    ["Don't", 'look', 'back', 'something', 'might', 'be', 'gaining', 'on', 'you']
    >>> tokenize("In 1951, he left.") is None
    True
    """
    if _NOT_ALLOWED.search(text):
        return None
    return _WORD.findall(text)


def normalize_words(words: Iterable[str]) -> str:
    """LibriSpeech-style transcript of cased words: upper case, single spaces.

    >>> normalize_words(["Thou", "art", "o'er", "there"])
    "THOU ART O'ER THERE"
    """
    return " ".join(w.upper() for w in words)


def normalize(text: str) -> str | None:
    """LibriSpeech-style normalisation of raw text; None if it holds digits or symbols.

    >>> normalize("And God said, Let there be light: and there was light.")
    'AND GOD SAID LET THERE BE LIGHT AND THERE WAS LIGHT'
    >>> normalize("'Tis the well-known café's  \u201cbest\u201d!")
    "TIS THE WELL KNOWN CAFE'S BEST"
    >>> normalize("Psalm 23") is None
    True
    """
    words = tokenize(ascii_fold(text))
    return None if words is None else normalize_words(words)
