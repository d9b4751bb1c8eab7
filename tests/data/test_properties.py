"""Property-based tests (hypothesis) of the tokenizers and the data-dir parser.

- Character and SentencePiece tokenizers: decode(encode(text)) == text for single-spaced text over
  their alphabet; exactly one word-start token per word; `word_start_mask` agrees with
  `is_word_start`; characters outside the alphabet, and only those, are found as unknown.
- Data dirs: whatever `write_datadir` accepts, `read_datadir` gives back exactly; any line added to
  any file of a valid dir either leaves it valid (a blank line) or raises `DataError` naming that
  file, never another exception.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asrllm.data.checks import unknown_characters
from asrllm.data.datadir import DATADIR_FILES, DataError, Utterance, check_utterances, read_datadir, write_datadir
from asrllm.data.tokenizer import WORD_START, SentencePieceTokenizer, Tokenizer, TokenizerConfig, train_tokenizer

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# one character of a word: no whitespace, not the word-start marker, no surrogates
WORD_CHAR = st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc"), blacklist_characters=WORD_START)


def _text_over(alphabet: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Single-spaced text: 1-6 words of 1-8 characters of `alphabet`."""
    word = st.text(alphabet, min_size=1, max_size=8)
    return st.lists(word, min_size=1, max_size=6).map(" ".join)


def _check_words(tok: Tokenizer, text: str) -> None:
    ids = tok.encode(text)
    assert tok.decode(ids) == text, (text, ids)
    assert sum(tok.is_word_start(i) for i in ids) == len(text.split()), (text, [tok.pieces[i] for i in ids])
    mask = tok.word_start_mask()
    assert all(bool(mask[i]) == tok.is_word_start(i) for i in ids)


@FAST
@given(st.data())
def test_char_tokenizer_round_trip_and_word_starts(data: st.DataObject) -> None:
    alphabet = data.draw(st.lists(WORD_CHAR, min_size=1, max_size=20, unique=True), label="alphabet")
    train_texts = [alphabet[i : i + 5] for i in range(0, len(alphabet), 5)]
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "text").write_text("".join(" ".join(t) + "\n" for t in train_texts), encoding="utf-8")
        tok = train_tokenizer(TokenizerConfig(kind="char"), Path(d) / "text", Path(d) / "tok")
    assert sorted(tok.pieces[4:]) == sorted(alphabet)
    text = data.draw(_text_over(st.sampled_from(alphabet)), label="text")
    _check_words(tok, text)
    assert tok.unk_id not in tok.encode(text)
    extra = data.draw(WORD_CHAR.filter(lambda c: c not in alphabet), label="unknown char")
    mixed = f"{text} {extra}{text.split()[0]}"
    assert unknown_characters(tok, [("u", mixed), ("v", text)]).utts == {"u": [extra]}


SPM_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ'"


@pytest.fixture(scope="module")
def spm_tok(tmp_path_factory: pytest.TempPathFactory) -> SentencePieceTokenizer:
    d = tmp_path_factory.mktemp("spm")
    words = ["THE", "QUICK", "BROWN", "FOX", "JUMPS", "OVER", "LAZY", "DOG'S", "WIZARD", "VEX"]
    lines = [" ".join(words[(i + k) % len(words)] for k in range(1 + i % 5)) for i in range(200)]
    (d / "text").write_text("\n".join(lines) + "\n" + " ".join(SPM_ALPHABET) + "\n", encoding="utf-8")
    tok = train_tokenizer(TokenizerConfig(kind="sentencepiece", vocab_size=60), d / "text", d / "tok")
    assert isinstance(tok, SentencePieceTokenizer)
    return tok


@FAST
@given(text=_text_over(st.sampled_from(SPM_ALPHABET)))
def test_sentencepiece_round_trip_and_word_starts(spm_tok: SentencePieceTokenizer, text: str) -> None:
    _check_words(spm_tok, text)
    assert spm_tok.unk_id not in spm_tok.encode(text)
    assert unknown_characters(spm_tok, [("u", text)]).utts == {}


@FAST
@given(extra=WORD_CHAR.filter(lambda c: c not in SPM_ALPHABET))
def test_sentencepiece_unknown_characters(spm_tok: SentencePieceTokenizer, extra: str) -> None:
    assert unknown_characters(spm_tok, [("u", f"THE {extra}FOX"), ("v", "THE FOX")]).utts == {"u": [extra]}


# --- data dirs -------------------------------------------------------------------------------

NO_SPACE = st.text(WORD_CHAR, min_size=1, max_size=12)
VALUE = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), min_size=1, max_size=30)


@st.composite
def utterance_lists(draw: st.DrawFn) -> list[Utterance]:
    ids = draw(st.lists(NO_SPACE, min_size=1, max_size=6, unique=True))
    utts = []
    for utt_id in ids:
        audio = draw(VALUE.filter(lambda v: v.strip() == v))
        text = draw(VALUE.filter(lambda v: v.strip() == v))
        duration = draw(st.floats(min_value=1e-6, max_value=1e5, allow_nan=False, allow_infinity=False))
        utts.append(Utterance(utt_id, audio, duration, text, draw(NO_SPACE)))
    return utts


@FAST
@given(utts=utterance_lists())
def test_datadir_round_trip(utts: list[Utterance]) -> None:
    with tempfile.TemporaryDirectory() as d:
        write_datadir(d, utts)
        assert read_datadir(d) == sorted(utts, key=lambda u: u.id)


@FAST
@given(utts=utterance_lists(), field=st.sampled_from(["id", "audio", "text", "speaker"]), value=st.text(max_size=10))
def test_write_accepts_only_what_reads_back(utts: list[Utterance], field: str, value: str) -> None:
    """Any value: either write_datadir refuses it with DataError, or it reads back unchanged."""
    changed = [dataclasses.replace(utts[0], **{field: value}), *utts[1:]]
    try:
        check_utterances(changed)
    except DataError:
        return
    with tempfile.TemporaryDirectory() as d:
        write_datadir(d, changed)
        assert read_datadir(d) == sorted(changed, key=lambda u: u.id)


@FAST
@given(
    utts=utterance_lists(),
    name=st.sampled_from(DATADIR_FILES),
    line=st.one_of(st.binary(max_size=40), st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass"))),
    where=st.integers(min_value=0, max_value=10),
)
def test_any_added_line_is_valid_or_a_data_error_naming_the_file(
    utts: list[Utterance], name: str, line: bytes, where: int
) -> None:
    with tempfile.TemporaryDirectory() as d:
        write_datadir(d, utts)
        path = Path(d) / name
        lines = path.read_bytes().splitlines(keepends=True)
        lines.insert(where % (len(lines) + 1), line + b"\n")
        path.write_bytes(b"".join(lines))
        try:
            read_datadir(d)
        except DataError as e:
            assert str(path) in str(e), (str(e), name)
        else:  # only a blank line (Unicode whitespace included) leaves the dir valid
            assert not line.decode("utf-8").strip(), line
