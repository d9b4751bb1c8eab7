"""Corpus WER and per-utterance alignment counts against jiwer, plus leaderboard edge cases."""

from __future__ import annotations

import random

import jiwer
import pytest

from asrllm.eval.wer import align, character_error_rate, score_corpus

WORDS = ["a", "b", "c", "d", "e"]


def random_text(rng: random.Random, max_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, max_words)))


@pytest.mark.parametrize("seed", range(20))
def test_wer_equals_jiwer(seed: int) -> None:
    rng = random.Random(seed)
    refs = {f"u{i}": random_text(rng, 8) or "a" for i in range(rng.randint(1, 12))}
    hyps = {i: random_text(rng, 10) for i in refs}
    corpus = score_corpus(refs, hyps, normalizer=None)
    ids = sorted(refs)
    assert corpus.wer == pytest.approx(jiwer.wer([refs[i] for i in ids], [hyps[i] for i in ids]))
    for u in corpus.utts:  # per-utterance counts are consistent with the strings
        assert u.ref_words == len(refs[u.utt_id].split())
        assert u.corr + u.sub + u.ins == len(hyps[u.utt_id].split())
        assert u.errors == pytest.approx(jiwer.wer(refs[u.utt_id], hyps[u.utt_id]) * u.ref_words)


def test_hand_counted_alignment() -> None:
    assert align(["a b c d", "x y"], ["a q c d e", ""]) == [(3, 1, 0, 1), (0, 0, 2, 0)]


def test_empty_hypothesis_and_dropped_references() -> None:
    refs = {"a": "Hello there", "b": "Uh, um.", "c": "ignore time segment in scoring", "d": "The colour"}
    hyps = {"a": "", "b": "something", "c": "x", "d": "the color"}
    corpus = score_corpus(refs, hyps)
    assert corpus.dropped == ["b", "c"]  # insertions there are NOT counted, as on the leaderboard
    assert [u.utt_id for u in corpus.utts] == ["a", "d"]
    assert (corpus.total("corr"), corpus.total("dele"), corpus.total("ins")) == (2, 2, 0)
    assert corpus.wer == 0.5
    assert character_error_rate(corpus) == pytest.approx(jiwer.cer(["hello there", "the color"], ["", "the color"]))


def test_missing_or_extra_ids_are_named() -> None:
    with pytest.raises(ValueError, match="no hypothesis .* 'b'"):
        score_corpus({"a": "x", "b": "y"}, {"a": "x"})
    with pytest.raises(ValueError, match="without reference .* 'z'"):
        score_corpus({"a": "x"}, {"a": "x", "z": "y"})


def test_nothing_scored() -> None:
    corpus = score_corpus({"a": "uh"}, {"a": ""})
    assert corpus.utts == [] and corpus.wer == 0.0 and character_error_rate(corpus) is None



def test_normalizer_by_name() -> None:
    refs, hyps = {"a": "Ah, at 3:07 p.m."}, {"a": "ah at 3 7 pm"}
    assert score_corpus(refs, hyps).normalizer == "open_asr_2026_03"
    assert score_corpus(refs, hyps, normalizer=None).normalizer is None
    august = score_corpus(refs, hyps, normalizer="open_asr_2026_08")
    assert (august.normalizer, august.utts[0].ref, august.utts[0].hyp, august.wer) == ("open_asr_2026_08", "at 37 pm", "at 37 pm", 0.0)
    with pytest.raises(ValueError, match="unknown normalizer 'x'; known: open_asr_2026_03, open_asr_2026_08"):
        score_corpus(refs, hyps, normalizer="x")
