"""Properties of both leaderboard normalisers, fuzzed with hypothesis.

Only what really holds is asserted. Not idempotent in general: numbers change on a second pass
("zero zero" → "00" → "0", "thousand th" → "1000 th" → "1000th", "minus minus" → "-minus" →
"minus"), and so do words a first pass uncovers ("üh" → "uh" → ""). Idempotence is asserted for
text of plain words (no number vocabulary) only. Upper-case ASCII can survive through compatibility
characters that `str.lower` leaves alone ("𝓣" → "T"), so that property excludes them.
"""

from __future__ import annotations

import string
import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.models.whisper.english_normalizer import EnglishNumberNormalizer

from asrllm.eval.normalizer import NORMALIZERS, get_normalizer

NAMES = sorted(NORMALIZERS)
KEPT_SYMBOLS = set(".%$¢€£+-")  # decimal points, percent, currencies, signs of numbers
NUMBER_WORDS = EnglishNumberNormalizer().words | {"st", "nd", "rd", "th"}  # incl. ordinal suffixes
FAST = settings(max_examples=150, deadline=None)

plain_words = st.lists(
    st.from_regex(r"[a-z]{2,8}", fullmatch=True).filter(lambda w: w not in NUMBER_WORDS), max_size=10
).map(" ".join)
token = st.from_regex(r"[A-Za-z0-9.,$%:'-]{1,8}", fullmatch=True)
whitespace = st.from_regex(r"[ \t\n\r\x0b\x0c\u00a0\u2003]{1,3}", fullmatch=True)


@FAST
@given(st.text())
def test_any_text_gives_single_spaced_words_without_punctuation(text: str) -> None:
    for name in NAMES:
        out = get_normalizer(name)(text)  # never raises
        assert isinstance(out, str)
        assert "  " not in out and all(c == " " or not c.isspace() for c in out), (name, out)
        odd = [c for c in out if unicodedata.category(c)[0] in "PS" and c not in KEPT_SYMBOLS]
        assert not odd, (name, text, out, odd)


@FAST
@given(st.text().filter(lambda s: not any(c in string.ascii_uppercase for c in unicodedata.normalize("NFKD", s.lower()))))
def test_no_upper_case_ascii(text: str) -> None:
    for name in NAMES:
        out = get_normalizer(name)(text)
        assert not any(c in string.ascii_uppercase for c in out), (name, text, out)


@FAST
@given(st.text(alphabet=string.printable))
def test_ascii_case_does_not_matter(text: str) -> None:
    for name in NAMES:
        norm = get_normalizer(name)
        assert norm(text.upper()) == norm(text.lower()) == norm(text)


@FAST
@given(st.lists(st.tuples(token, whitespace), max_size=8))
def test_kind_and_amount_of_whitespace_do_not_matter(pairs: list[tuple[str, str]]) -> None:
    single = " ".join(t for t, _ in pairs)
    varied = "".join(t + w for t, w in pairs)
    for name in NAMES:
        norm = get_normalizer(name)
        assert norm(single).split() == norm(varied).split()


@FAST
@given(plain_words)
def test_idempotent_on_plain_words(text: str) -> None:
    for name in NAMES:
        norm = get_normalizer(name)
        once = norm(text)
        assert norm(once).split() == once.split(), (name, text, once)
