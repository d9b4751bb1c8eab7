"""Transcript and LM-text selection for the synthetic corpus (egs/mini_synth).

Public-domain English from Debian packages — the KJV Bible (bible-kjv), fortunes (fortune-mod) and
WordNet example sentences (wordnet-base) — is cut into utterance-sized chunks, normalised the way
LibriSpeech transcripts are (upper case, apostrophes only inside words, no punctuation, no digits),
and split into disjoint train/dev/test transcripts plus a wider LM text.

Pipeline (everything after `read_sources` is pure and deterministic in the seed):

    read_sources         source name -> raw passages (a verse, a fortune, a WordNet example)
    split_passage        passage -> cased word lists of at most `max_words` (punctuation-bounded)
    find_proper_names    words capitalised in most non-initial positions (KJV names, acronyms)
    build_vocabulary     the `vocab_size` most frequent non-name words, frequencies weighted
                         per source so that no source dominates the vocabulary
    select_transcripts   in-vocabulary chunks, quota per source, dev/test first, then train
                         without any chunk that contains a dev/test sentence
    build_lm_text        every normalised chunk (any vocabulary) minus anything that contains a
                         dev/test sentence

A transcript is a string of upper-case words separated by single spaces.

>>> [normalize_words(c) for c in split_passage("He said: 'Don't go -- it's late.'", 1, 20)]
["HE SAID DON'T GO", "IT'S LATE"]
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from asrllm.data.synth.normalize import ascii_fold, normalize_words, tokenize
from asrllm.data.synth.sources import DEFAULT_FORTUNE_FILES, read_fortunes, read_kjv, read_wordnet_examples

log = logging.getLogger(__name__)

SOURCES = ("kjv", "fortunes", "wordnet")
SUBSETS = ("train", "dev", "test")


@dataclasses.dataclass(frozen=True)
class SynthTextConfig:
    """Where the text comes from and which chunks qualify as transcripts.

    >>> SynthTextConfig(sources=("kjv", "wordnet")).weights()
    {'kjv': 0.5714285714285715, 'wordnet': 0.4285714285714286}
    """

    sources: tuple[str, ...] = SOURCES  # sources to read, any of kjv, fortunes, wordnet
    # Target share of the transcripts per source (renormalised over `sources`); a source that runs
    # short gives its remainder to the others. Also weights the word counts of the vocabulary.
    source_weights: dict[str, float] = dataclasses.field(
        default_factory=lambda: {"kjv": 0.4, "fortunes": 0.3, "wordnet": 0.3}
    )
    bible_command: str = "bible"  # bible-kjv's reader; prints the KJV from /usr/lib/bible.data
    fortunes_dir: str = "/usr/share/games/fortunes"  # fortune-mod's data directory
    fortune_files: tuple[str, ...] = DEFAULT_FORTUNE_FILES  # files of fortunes_dir to read
    wordnet_dir: str = "/usr/share/wordnet"  # wordnet-base's data.{noun,verb,adj,adv}
    min_words: int = 4  # shortest transcript, in words
    max_words: int = 20  # longest transcript (and LM line), in words
    vocab_size: int = 2000  # transcripts use only the this-many most frequent non-name words
    # A word is a proper name (and never used in transcripts) when more than this fraction of its
    # occurrences that are not sentence-initial are capitalised, or when it is never seen lowercase.
    name_capital_ratio: float = 0.5
    extra_names: tuple[str, ...] = ()  # more words to treat as names (any case)
    lm_min_words: int = 2  # shortest LM-text line, in words

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError("text.sources: give at least one source")
        for s in self.sources:
            if s not in SOURCES:
                raise ValueError(f"text.sources: unknown source {s!r} (known: {', '.join(SOURCES)})")
        if len(set(self.sources)) != len(self.sources):
            raise ValueError(f"text.sources: duplicate source in {list(self.sources)}")
        for s in self.sources:
            if self.source_weights.get(s, 0.0) <= 0.0:
                raise ValueError(f"text.source_weights: source {s!r} needs a weight > 0")
        for s, w in self.source_weights.items():
            if s not in SOURCES:
                raise ValueError(f"text.source_weights: unknown source {s!r}")
            if w < 0.0:
                raise ValueError(f"text.source_weights.{s}: must be >= 0, got {w}")
        if not 1 <= self.min_words <= self.max_words:
            raise ValueError(
                f"text.min_words={self.min_words}, text.max_words={self.max_words}: "
                "need 1 <= min_words <= max_words"
            )
        if not 1 <= self.lm_min_words <= self.max_words:
            raise ValueError(f"text.lm_min_words={self.lm_min_words}: must be in [1, max_words]")
        if self.vocab_size < 10:
            raise ValueError(f"text.vocab_size: must be >= 10, got {self.vocab_size}")
        if not 0.0 <= self.name_capital_ratio < 1.0:
            raise ValueError(f"text.name_capital_ratio: must be in [0, 1), got {self.name_capital_ratio}")

    def weights(self) -> dict[str, float]:
        """Source weights over `sources`, summing to 1."""
        total = sum(self.source_weights[s] for s in self.sources)
        return {s: self.source_weights[s] / total for s in self.sources}


@dataclasses.dataclass(frozen=True)
class Chunk:
    """One utterance-sized piece of source text.

    >>> Chunk("kjv", ("Thou", "art", "there")).text
    'THOU ART THERE'
    """

    source: str  # which source it came from
    words: tuple[str, ...]  # words as cased in the source; words[0] is sentence- or clause-initial

    @property
    def text(self) -> str:
        """The normalised transcript."""
        return normalize_words(self.words)


@dataclasses.dataclass(frozen=True)
class TextSelection:
    """What `select_text` chose: transcripts per subset, LM text, and the vocabulary behind them."""

    transcripts: dict[str, list[str]]  # subset -> transcripts, in selection order
    sources: dict[str, list[str]]  # subset -> source of each transcript
    lm_lines: list[str]  # LM text, one normalised line each, shuffled
    vocabulary: list[str]  # the candidate vocabulary, most frequent first
    num_names: int  # words rejected as proper names


# ---------------------------------------------------------------------------------------------
# Reading the sources (I/O: asrllm.data.synth.sources)


def read_sources(cfg: SynthTextConfig) -> dict[str, list[str]]:
    """Raw passages of every configured source."""
    readers = {
        "kjv": lambda: read_kjv(cfg.bible_command),
        "fortunes": lambda: read_fortunes(cfg.fortunes_dir, cfg.fortune_files),
        "wordnet": lambda: read_wordnet_examples(cfg.wordnet_dir),
    }
    raw = {s: readers[s]() for s in cfg.sources}
    for s, passages in raw.items():
        log.info("source %s: %d passages", s, len(passages))
    return raw


# ---------------------------------------------------------------------------------------------
# Chunking (pure; normalisation: asrllm.data.synth.normalize)

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')]*\s+|\s+--\s+")
_CLAUSE_END = re.compile(r"(?<=[,;:])\s+")


def _pack(pieces: list[list[str]], max_words: int) -> list[list[str]]:
    """Greedily join consecutive word lists into groups of at most `max_words` words.
    A piece longer than `max_words` on its own is dropped."""
    groups: list[list[str]] = []
    current: list[str] = []
    for piece in pieces:
        if len(piece) > max_words:
            if current:
                groups.append(current)
            current = []
        elif len(current) + len(piece) <= max_words:
            current = current + piece
        else:
            if current:
                groups.append(current)
            current = list(piece)
    if current:
        groups.append(current)
    return groups


def split_passage(passage: str, min_words: int, max_words: int) -> list[tuple[str, ...]]:
    """Cut a passage into chunks of `min_words`..`max_words` words at sentence ends; a sentence
    longer than `max_words` is cut at clause ends (, ; :) and its clauses are packed greedily.
    Sentences with digits or symbols are dropped. Words keep their source case.

    >>> for chunk in split_passage("I came. I saw the city, the river, and the sea; then I left.", 2, 6):
    ...     print(" ".join(chunk))
    I came
    I saw the city the river
    and the sea then I left
    """
    chunks: list[tuple[str, ...]] = []
    for sentence in _SENTENCE_END.split(ascii_fold(passage).strip()):
        words = tokenize(sentence)
        if not words:
            continue
        if len(words) <= max_words:
            groups = [words]
        else:
            clauses = [tokenize(c) or [] for c in _CLAUSE_END.split(sentence)]
            groups = _pack([c for c in clauses if c], max_words)
        chunks.extend(tuple(g) for g in groups if min_words <= len(g) <= max_words)
    return chunks


def chunk_sources(raw: dict[str, list[str]], min_words: int, max_words: int) -> list[Chunk]:
    """All chunks of all sources, in source and passage order."""
    return [
        Chunk(source, words)
        for source, passages in raw.items()
        for passage in passages
        for words in split_passage(passage, min_words, max_words)
    ]


# ---------------------------------------------------------------------------------------------
# Vocabulary (pure)


def _is_pronoun_i(word: str) -> bool:
    """'I', "I'm", "I'll", ... are capitalised everywhere but are not names."""
    up = word.upper()
    return up == "I" or up.startswith("I'")


def find_proper_names(chunks: Iterable[Chunk], capital_ratio: float) -> frozenset[str]:
    """Upper-cased words that look like proper names (or acronyms) in the source text.

    A capital at the start of a sentence or clause says nothing, so only other positions count as
    evidence for a capitalised word; a lower-case occurrence anywhere counts against it. A word is
    a name when more than `capital_ratio` of that evidence is capitalised, or when it is never
    seen in lower case. "I" and its contractions are never names.

    >>> c = [Chunk("x", ("And", "Moses", "spoke", "and", "wept")), Chunk("x", ("the", "lamb", "ran")),
    ...      Chunk("x", ("Lamb", "of", "Moses"))]
    >>> sorted(find_proper_names(c, 0.5))
    ['MOSES']
    """
    initial: Counter[str] = Counter()
    inner: Counter[str] = Counter()
    for chunk in chunks:
        initial[chunk.words[0]] += 1
        inner.update(chunk.words[1:])
    capital: Counter[str] = Counter()
    lower: Counter[str] = Counter()
    for w, n in inner.items():  # distinct cased forms: cheap
        if w.islower():
            lower[w.upper()] += n
        elif w[0].isupper():
            capital[w.upper()] += n
    for w, n in initial.items():
        if w.islower():
            lower[w.upper()] += n
    seen = {w.upper() for w in initial} | {w.upper() for w in inner}
    return frozenset(
        w
        for w in seen
        if not _is_pronoun_i(w) and (lower[w] == 0 or capital[w] > capital_ratio * (capital[w] + lower[w]))
    )


def build_vocabulary(
    chunks: Iterable[Chunk], weights: dict[str, float], names: frozenset[str], size: int
) -> list[str]:
    """The `size` non-name words with the highest weighted relative frequency.

    score(w) = sum over sources s of weights[s] * count_s(w) / tokens_s, so that a large source
    (the KJV) does not fill the vocabulary with its own words. Ties break alphabetically.

    >>> c = [Chunk("a", ("x", "y", "x", "y", "w", "w")), Chunk("b", ("z", "Q"))]
    >>> build_vocabulary(c, {"a": 0.5, "b": 0.5}, frozenset({"Q"}), 2)  # z: 0.5 * 1/2; w: 0.5 * 2/6
    ['Z', 'W']
    """
    counts: dict[str, Counter[str]] = {}
    for chunk in chunks:
        counts.setdefault(chunk.source, Counter()).update(w.upper() for w in chunk.words)
    score: dict[str, float] = {}
    for source, c in counts.items():
        total = sum(c.values())
        for w, n in c.items():
            if w not in names:
                score[w] = score.get(w, 0.0) + weights.get(source, 0.0) * n / total
    ranked = sorted(score.items(), key=lambda kv: (-kv[1], kv[0]))
    return [w for w, _ in ranked[:size]]


def oov_rate(sentences: Iterable[str], known: set[str] | frozenset[str]) -> float:
    """Fraction of running words of `sentences` that are not in `known` (0 for no words).

    >>> oov_rate(["A B C", "A D"], {"A", "B"})
    0.4
    """
    total = oov = 0
    for s in sentences:
        for w in s.split():
            total += 1
            oov += w not in known
    return oov / total if total else 0.0


# ---------------------------------------------------------------------------------------------
# Selection (pure)


class HeldOutSentences:
    """A set of held-out (dev/test) sentences that answers "does this line contain one of them as
    a contiguous run of words?" — exact-line exclusion alone would let a longer training or LM line
    carry a dev sentence inside it.

    >>> h = HeldOutSentences(["THE LORD SAID", "GO"])
    >>> h.occurs_in("AND THE LORD SAID UNTO HIM"), h.occurs_in("THE LORD SAIDST"), h.occurs_in("I GO")
    (True, False, True)
    """

    def __init__(self, sentences: Iterable[str]) -> None:
        self.sentences = frozenset(sentences)
        # first two words -> word counts of the held-out sentences that start with them
        self._lengths: dict[tuple[str, str], set[int]] = {}
        for s in self.sentences:
            words = s.split()
            if len(words) > 1:
                self._lengths.setdefault((words[0], words[1]), set()).add(len(words))

    def occurs_in(self, line: str) -> bool:
        """True if a contiguous word span of `line` is one of the held-out sentences."""
        words = line.split()
        for i, w in enumerate(words):
            if w in self.sentences:
                return True
            for n in self._lengths.get((w, words[i + 1]) if i + 1 < len(words) else ("", ""), ()):
                if i + n <= len(words) and " ".join(words[i : i + n]) in self.sentences:
                    return True
        return False


def _quotas(available: dict[str, int], weights: dict[str, float], total: int) -> dict[str, int]:
    """Split `total` over sources by `weights`, capped by what is `available`; a source that runs
    short hands its remainder to the others in proportion to their weights.

    >>> _quotas({"a": 10, "b": 100}, {"a": 0.5, "b": 0.5}, 40)
    {'a': 10, 'b': 30}
    """
    quota = dict.fromkeys(available, 0)
    open_sources = [s for s in available if available[s] > 0]
    left = total
    while left > 0 and open_sources:
        wsum = sum(weights[s] for s in open_sources)
        shares = {s: int(left * weights[s] / wsum) for s in open_sources}
        # Hand out rounding leftovers one by one, in source order, so that the sum is `left`.
        for s in open_sources[: left - sum(shares.values())]:
            shares[s] += 1
        for s in open_sources:
            take = min(shares[s], available[s] - quota[s])
            quota[s] += take
            left -= take
        open_sources = [s for s in open_sources if quota[s] < available[s]]
    return quota


def dedupe_chunks(chunks: Iterable[Chunk]) -> list[Chunk]:
    """First chunk of each distinct normalised text, in input order."""
    seen: set[str] = set()
    out = []
    for c in chunks:
        t = c.text
        if t not in seen:
            seen.add(t)
            out.append(c)
    return out


def select_transcripts(
    candidates: Sequence[Chunk],
    weights: dict[str, float],
    sizes: dict[str, int],
    seed: int,
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Disjoint transcripts per subset from deduplicated in-vocabulary `candidates`.

    Each source contributes by `weights`. Dev and test are drawn first; train then skips any
    candidate that contains a dev or test sentence, so no training transcript reveals one.
    Returns (subset -> transcripts, subset -> source of each transcript).
    """
    rng = np.random.default_rng([seed, 1])
    by_source: dict[str, list[Chunk]] = {s: [] for s in weights}
    for c in candidates:
        by_source[c.source].append(c)
    for s in by_source:
        order = rng.permutation(len(by_source[s]))
        by_source[s] = [by_source[s][i] for i in order]
    needed = sum(sizes.values())
    quota = _quotas({s: len(v) for s, v in by_source.items()}, weights, needed)
    # Extra candidates per source (beyond the quota) replace train sentences lost to leak filtering.
    picked = [c for s, v in by_source.items() for c in v[: quota[s]]]
    spare = [c for s, v in by_source.items() for c in v[quota[s] :]]
    picked = [picked[i] for i in rng.permutation(len(picked))]
    spare = [spare[i] for i in rng.permutation(len(spare))]
    if len(picked) < needed:
        raise ValueError(
            f"num_train + num_dev + num_test = {needed} but only {len(picked)} distinct "
            "in-vocabulary sentences exist; lower the sizes or raise text.vocab_size"
        )
    out: dict[str, list[Chunk]] = {}
    pos = 0
    for subset in ("dev", "test"):
        out[subset] = picked[pos : pos + sizes[subset]]
        pos += sizes[subset]
    held_out = HeldOutSentences(c.text for subset in ("dev", "test") for c in out[subset])
    train: list[Chunk] = []
    for c in picked[pos:] + spare:
        if len(train) == sizes["train"]:
            break
        if not held_out.occurs_in(c.text):
            train.append(c)
    if len(train) < sizes["train"]:
        raise ValueError(f"num_train: only {len(train)} training sentences are left after dev/test")
    out["train"] = train
    return (
        {s: [c.text for c in out[s]] for s in SUBSETS},
        {s: [c.source for c in out[s]] for s in SUBSETS},
    )


def build_lm_text(
    chunks: Iterable[Chunk], held_out: HeldOutSentences, min_words: int, seed: int
) -> list[str]:
    """Distinct normalised chunks of at least `min_words` words, any vocabulary, minus every line
    that contains a `held_out` sentence; shuffled with `seed`."""
    lines = []
    seen: set[str] = set()
    for c in chunks:
        if len(c.words) < min_words:
            continue
        t = c.text
        if t in seen:
            continue
        seen.add(t)
        if not held_out.occurs_in(t):
            lines.append(t)
    order = np.random.default_rng([seed, 2]).permutation(len(lines))
    return [lines[i] for i in order]


def select_text(
    cfg: SynthTextConfig, raw: dict[str, list[str]], sizes: dict[str, int], seed: int
) -> TextSelection:
    """Transcripts per subset and LM text from raw source passages (see the module docstring)."""
    weights = cfg.weights()
    chunks = chunk_sources(raw, min(cfg.lm_min_words, cfg.min_words), cfg.max_words)
    names = find_proper_names(chunks, cfg.name_capital_ratio) | {w.upper() for w in cfg.extra_names}
    vocab = build_vocabulary(chunks, weights, names, cfg.vocab_size)
    vocab_set = set(vocab)
    candidates = dedupe_chunks(
        c for c in chunks if len(c.words) >= cfg.min_words and all(w.upper() in vocab_set for w in c.words)
    )
    log.info(
        "%d chunks, %d proper names, %d in-vocabulary candidates (%s)",
        len(chunks),
        len(names),
        len(candidates),
        ", ".join(f"{s}: {sum(c.source == s for c in candidates)}" for s in weights),
    )
    transcripts, sources = select_transcripts(candidates, weights, sizes, seed)
    held_out = HeldOutSentences(transcripts["dev"] + transcripts["test"])
    lm_lines = build_lm_text(chunks, held_out, cfg.lm_min_words, seed)
    return TextSelection(transcripts, sources, lm_lines, vocab, len(names))
