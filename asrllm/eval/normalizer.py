"""Text normalisation as the HuggingFace Open ASR leaderboard does it.

The leaderboard (github.com/huggingface/open_asr_leaderboard, `normalizer/data_utils.py`) passes
reference and hypothesis through Whisper's `EnglishTextNormalizer` — lower-casing, removal of
punctuation, bracketed phrases and fillers (hmm, mm, mhm, mmm, uh, um), expansion of contractions,
spelled-out numbers to digits ("twenty five" → "25"), and British → American spelling through the
map Whisper ships (`english.json`, ~1,700 entries) — and then drops utterances whose normalised
reference is empty or is TED-LIUM's "ignore time segment in scoring".

We use the `whisper_normalizer` package (a verbatim copy of openai/whisper's normalisers, including
the spelling map), so that scoring does not need the whole `openai-whisper` package.

>>> normalize("Mr. Smith's colour is twenty-five, uh, I think.")
'mister smith is color is 25 i think'
"""

from __future__ import annotations

import functools

from whisper_normalizer.english import EnglishTextNormalizer

# References the leaderboard removes before scoring (after normalisation).
IGNORED_REFERENCES = frozenset({"", "ignore time segment in scoring"})


@functools.cache
def _normalizer() -> EnglishTextNormalizer:
    norm = EnglishTextNormalizer()
    mapping = norm.standardize_spellings.mapping
    # Guard against a broken install: without the map, "colour" would stay British.
    assert len(mapping) > 1000 and mapping.get("colour") == "color", len(mapping)
    return norm


def normalize(text: str) -> str:
    """Whisper-normalised `text`: the form in which the leaderboard compares words."""
    return _normalizer()(text)


def is_scored_reference(normalized_ref: str) -> bool:
    """False for references the leaderboard drops (empty after normalisation, or ignore markers)."""
    return normalized_ref.strip() not in IGNORED_REFERENCES
