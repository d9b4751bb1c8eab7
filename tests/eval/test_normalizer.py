"""The leaderboard normalisers, by version: each equals its reference outputs on every line.

The reference outputs (`input<TAB>expected`) are those of the Open ASR leaderboard's own normaliser at
two commits; tests/eval/data/ holds copies of ../shared/scoring/ (next to the repository, as CI clones
it), and the copies are checked against that folder where it exists.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

from asrllm.eval.normalizer import (
    DEFAULT_NORMALIZER,
    NORMALIZERS,
    get_normalizer,
    is_scored_reference,
    join_single_digits,
    normalize,
)

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"
SHARED = REPO / ".." / "shared" / "scoring"
# normaliser name -> (reference file, its number of lines)
REFERENCES = {
    "open_asr_2026_03": ("open_asr_normalizer_2026-03_b4fe3e4.tsv", 980),
    "open_asr_2026_08": ("open_asr_normalizer_2026-08_d1e99b2.tsv", 981),
}
MAP_PART_START = "Accessorise"  # the reference's spelling-map part: every key of the map, 3 a line


def read_reference(path: Path) -> list[tuple[str, str]]:
    """(input, expected) pairs; a missing file fails (never skips) with a message naming it."""
    if not path.is_file():
        pytest.fail(f"reference outputs {path} are missing: copy them from ../shared/scoring/")
    pairs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        assert line.count("\t") == 1, (path.name, n, line)
        text, expected = line.split("\t")
        pairs.append((text, expected))
    return pairs


def test_every_normalizer_has_a_reference() -> None:
    assert set(NORMALIZERS) == set(REFERENCES) and DEFAULT_NORMALIZER == "open_asr_2026_03"


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_equals_reference_on_every_line(name: str) -> None:
    file_name, num_lines = REFERENCES[name]
    pairs = read_reference(DATA / file_name)
    assert len(pairs) == num_lines, (file_name, len(pairs))
    norm = get_normalizer(name)
    wrong = [(n, text, expected, norm(text)) for n, (text, expected) in enumerate(pairs, 1)
             if norm(text).split() != expected.split()]
    assert not wrong, f"{name}: {len(wrong)} of {len(pairs)} lines differ, e.g. (line, input, expected, got) {wrong[:5]}"


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_repo_copies_equal_shared_reference(name: str) -> None:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED.resolve()} does not exist: cannot compare the repository's copies with it")
    file_name, _ = REFERENCES[name]
    shared = SHARED / file_name
    assert shared.is_file(), f"{shared.resolve()} is missing (the folder exists)"
    assert (DATA / file_name).read_bytes() == shared.read_bytes(), f"tests/eval/data/{file_name} differs from {shared}"


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_spelling_map_keys_are_the_references(name: str) -> None:
    """The reference's last part lists every key of the leaderboard's map; ours has exactly those."""
    pairs = read_reference(DATA / REFERENCES[name][0])
    start = next(n for n, (text, _) in enumerate(pairs) if text.startswith(MAP_PART_START))
    keys = []
    for text, _ in pairs[start:]:
        assert text.endswith("."), text
        keys += text[:-1].lower().replace("flyer / flier", "flyer_/_flier").split()
    mapping = get_normalizer(name).standardize_spellings.mapping  # type: ignore[attr-defined]
    assert sorted(k.replace("_", " ") for k in keys) == sorted(mapping)
    assert not set(mapping.values()) & set(mapping), "a map value that is also a key would make the map order-dependent"


# Expected outputs of the March 2026 leaderboard normaliser (Whisper's rules); the old PyPI
# whisper-normalizer gives the same for these.
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
def test_march_normalisation(text: str, expected: str) -> None:
    assert normalize(text) == expected
    assert normalize(text, "open_asr_2026_03") == expected


# Where the leaderboard's March version differs from the PyPI whisper-normalizer used before (that
# package gives "the archeology</span> department", "2 snowplow were pummel", "kind of").
LEADERBOARD_NOT_PYPI = [
    ("The archaeology department.", "the archeology department"),
    ("Two snowploughs were pummelled.", "2 snowplows were pummeled"),
    ("A cancellation, kinda.", "a cancelation kinda"),
]


@pytest.mark.parametrize("text,expected", LEADERBOARD_NOT_PYPI)
def test_march_is_the_leaderboards_not_whisper_normalizer(text: str, expected: str) -> None:
    assert normalize(text) == expected


def test_march_is_transformers_whisper_normaliser_unchanged() -> None:
    assert type(get_normalizer("open_asr_2026_03")) is EnglishTextNormalizer


# One case per August 2026 step (asrllm.eval.normalizer docstring), with the March output.
AUGUST_STEPS = [
    ("Ah, uh-huh, right.", "right", "ah huh right"),  # 1: fillers
    ("Er, erm, no.", "er erm no", "er erm no"),  # 1: kept
    ("At 11:30 p.m. or 10:15 A.M.", "at 11 30 pm or 10 15 am", "at 11 30 p m or 10 15 a m"),  # 2: a.m./p.m.
    ("At 3:07 PM, oh 9", "at 37 pm 09", "at 3 7 pm 0 9"),  # 3: digit compounds
    ("Ok Kay, etcetera, a flyer.", "okay okay etc a flier", "ok kay etcetera a flyer"),  # 4: the map
]


@pytest.mark.parametrize("text,august,march", AUGUST_STEPS)
def test_august_steps(text: str, august: str, march: str) -> None:
    assert normalize(text, "open_asr_2026_08") == august
    assert normalize(text, "open_asr_2026_03") == march


def test_join_single_digits() -> None:
    assert join_single_digits("") == ""
    assert join_single_digits("1 2 3 a 4 56 7 8") == "123 a 4 56 78"
    assert join_single_digits("$3 2 3% 4") == "$3 2 3% 4"  # only bare single digits


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown normalizer 'whisper'; known: open_asr_2026_03, open_asr_2026_08"):
        normalize("x", "whisper")
    with pytest.raises(ValueError, match="open_asr_2026_08"):
        get_normalizer("open_asr_2026_09")


def test_dropped_references() -> None:
    for name in NORMALIZERS:
        assert not is_scored_reference(normalize("uh, um", name))
        assert not is_scored_reference(normalize("ignore time segment in scoring", name))
        assert is_scored_reference(normalize("yes", name))
    assert not is_scored_reference(normalize("Ah, uh-huh.", "open_asr_2026_08"))
