"""The leaderboard normaliser: Whisper's EnglishTextNormalizer with its British→American map."""

from __future__ import annotations

import json
from importlib.resources import files

import pytest
from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

from asrllm.eval.normalizer import is_scored_reference, normalize

# Expected outputs are what Whisper's normaliser (openai/whisper, whisper_normalizer) produces.
CASES = [
    ("I'm sure I won't go.", "i am sure i will not go"),  # contractions
    ("Twenty five apples", "25 apples"),  # spelled-out numbers
    ("two thousand and twenty", "2020"),
    ("One hundred dollars", "$100"),  # currency
    ("It's ten percent", "it is 10%"),
    ("The Colour of the Theatre, organised", "the color of the theater organized"),  # British spellings
    ("Uh, well, um I think so", "well i think so"),  # fillers
    ("hmm", ""),
    ("HELLO, World!!  How   are you?", "hello world how are you"),  # case, punctuation, spaces
    ("[laughter] yes (noise) no", "yes no"),  # bracketed phrases
    ("café naïve", "cafe naive"),  # diacritics
    ("Mr. and Mrs. Smith", "mister and missus smith"),  # titles
]


@pytest.mark.parametrize("text,expected", CASES)
def test_whisper_normalisation(text: str, expected: str) -> None:
    assert normalize(text) == expected


def test_same_as_transformers_whisper_normaliser_with_spelling_map() -> None:
    """An independent copy of Whisper's normaliser (the one in transformers), given the same map."""
    mapping = json.loads(files("whisper_normalizer").joinpath("normalizers/english.json").read_text())
    reference = EnglishTextNormalizer(mapping)  # transformers is a pinned dependency: no skip
    for text, _ in CASES:
        assert normalize(text) == reference(text)


def test_dropped_references() -> None:
    assert not is_scored_reference(normalize("uh, um"))
    assert not is_scored_reference(normalize("ignore time segment in scoring"))
    assert is_scored_reference(normalize("yes"))

