"""Hallucination metrics of a decode: what speech LLMs do wrong that WER alone hides (PAPER.md §7).

Computed on the normalised texts of every utterance, also those whose reference normalises to
nothing (noise-only audio of a probe set), which WER leaves out:

    over_long   % of utterances whose hypothesis has more than 1.5x the reference's words
                (any word counts as over-long when the reference is empty)
    loops       % of hypotheses with a looping n-gram: some run of 1 to 4 words repeated at
                least 3 times in a row ("a b a b a b"; "very very very" counts too: rare in read speech)
    empty       % of utterances with a non-empty reference and an empty hypothesis
    words_on_silence  mean hypothesis words of the utterances with an empty reference (None if none)

The insertion rate is the scoring's own `ins` (% of reference words).

>>> m = hallucination_metrics(["the cat", "", "a dog"], ["the cat sat on the mat", "uh", "a b a b a b"])
>>> m["over_long"], m["loops"], m["empty"], m["words_on_silence"]
(100.0, 33.33, 0.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

OVER_LONG_RATIO = 1.5  # hypothesis words / reference words above which a hypothesis is over-long
LOOP_MAX_NGRAM = 4  # longest repeated word run looked for
LOOP_MIN_REPEATS = 3  # copies in a row that make a loop


def has_loop(words: Sequence[str], max_ngram: int = LOOP_MAX_NGRAM, min_repeats: int = LOOP_MIN_REPEATS) -> bool:
    """True when some n-gram (1 <= n <= max_ngram) occurs min_repeats times in a row.

    >>> has_loop("i think i think i think so".split()), has_loop("one two three one two".split())
    (True, False)
    """
    for n in range(1, max_ngram + 1):
        for start in range(len(words) - n * min_repeats + 1):
            gram = words[start : start + n]
            if all(words[start + k * n : start + (k + 1) * n] == gram for k in range(1, min_repeats)):
                return True
    return False


def hallucination_metrics(refs: Sequence[str], hyps: Sequence[str]) -> dict[str, Any]:
    """The metrics above for normalised references and hypotheses, in utterance order."""
    assert len(refs) == len(hyps), (len(refs), len(hyps))
    n = len(refs)
    ref_words = [r.split() for r in refs]
    hyp_words = [h.split() for h in hyps]
    over_long = sum(len(h) > OVER_LONG_RATIO * len(r) for r, h in zip(ref_words, hyp_words))
    loops = sum(has_loop(h) for h in hyp_words)
    empty = sum(bool(r) and not h for r, h in zip(ref_words, hyp_words))
    silence = [len(h) for r, h in zip(ref_words, hyp_words) if not r]

    def pct(count: int) -> float:
        return round(100.0 * count / n, 2) if n else 0.0

    return {
        "over_long": pct(over_long),
        "loops": pct(loops),
        "empty": pct(empty),
        "words_on_silence": round(sum(silence) / len(silence), 2) if silence else None,
    }
