"""Word error rates with jiwer alignments, scored the way the Open ASR leaderboard scores.

Both sides are normalised by a named leaderboard normaliser (`asrllm.eval.normalizer`, the March
2026 one by default), utterances whose normalised reference is empty are dropped and counted, and the
corpus WER is (S + D + I) / (C + S + D) over the remaining utterances — jiwer's corpus WER, the
leaderboard's number (before ×100). The result keeps the normaliser's name: a WER means nothing
without it.

>>> r = score_corpus({"a": "the cat sat", "b": "uh", "c": "hello"}, {"a": "the cat sad", "b": "", "c": ""})
>>> round(r.wer, 4), r.dropped, r.normalizer
(0.5, ['b'], 'open_asr_2026_03')
"""

from __future__ import annotations

import dataclasses

import jiwer

from asrllm.eval.normalizer import DEFAULT_NORMALIZER, get_normalizer, is_scored_reference


@dataclasses.dataclass(frozen=True)
class UttErrors:
    """Alignment counts of one utterance (normalised text)."""

    utt_id: str
    ref: str  # normalised reference
    hyp: str  # normalised hypothesis
    corr: int
    sub: int
    dele: int  # deletions ("del" is a Python keyword)
    ins: int

    @property
    def ref_words(self) -> int:
        return self.corr + self.sub + self.dele

    @property
    def errors(self) -> int:
        return self.sub + self.dele + self.ins


@dataclasses.dataclass(frozen=True)
class CorpusErrors:
    """Per-utterance counts (sorted by id), the ids dropped for an empty normalised reference, and the
    name of the normaliser both sides went through (None: whitespace only)."""

    utts: list[UttErrors]
    dropped: list[str]
    normalizer: str | None

    @property
    def ref_words(self) -> int:
        return sum(u.ref_words for u in self.utts)

    def total(self, field: str) -> int:
        """Sum of `corr`, `sub`, `dele` or `ins` over utterances."""
        return sum(getattr(u, field) for u in self.utts)

    @property
    def wer(self) -> float:
        """Corpus WER as a fraction; 0 when nothing is scored and nothing was inserted."""
        errors = sum(u.errors for u in self.utts)
        words = self.ref_words
        if words == 0:
            return 0.0 if errors == 0 else float("inf")
        return errors / words

    @property
    def sentence_errors(self) -> int:
        return sum(1 for u in self.utts if u.errors > 0)


def align(refs: list[str], hyps: list[str]) -> list[tuple[int, int, int, int]]:
    """(corr, sub, del, ins) per pair of already normalised texts, from `jiwer.process_words`."""
    if not refs:
        return []
    out = jiwer.process_words(refs, hyps)
    counts = []
    for chunks in out.alignments:
        c = {"equal": 0, "substitute": 0, "delete": 0, "insert": 0}
        for ch in chunks:
            c[ch.type] += max(ch.ref_end_idx - ch.ref_start_idx, ch.hyp_end_idx - ch.hyp_start_idx)
        counts.append((c["equal"], c["substitute"], c["delete"], c["insert"]))
    return counts


def score_corpus(
    refs: dict[str, str], hyps: dict[str, str], normalizer: str | None = DEFAULT_NORMALIZER
) -> CorpusErrors:
    """Align hypotheses to references by utterance id after normalising both with the normaliser of
    that name (None: whitespace only, no normalisation).

    Every reference needs a hypothesis and vice versa (an empty string is a valid hypothesis);
    a missing or extra id, or an unknown normaliser, is a `ValueError` naming it.
    """
    norm = get_normalizer(normalizer) if normalizer is not None else (lambda s: " ".join(s.split()))
    missing = sorted(set(refs) - set(hyps))
    if missing:
        raise ValueError(f"no hypothesis for {len(missing)} utterance(s), e.g. {missing[0]!r}")
    extra = sorted(set(hyps) - set(refs))
    if extra:
        raise ValueError(f"hypothesis without reference for {len(extra)} utterance(s), e.g. {extra[0]!r}")
    kept, dropped = [], []
    for utt_id in sorted(refs):
        ref = norm(refs[utt_id])
        if is_scored_reference(ref):
            kept.append((utt_id, ref, norm(hyps[utt_id])))
        else:
            dropped.append(utt_id)
    counts = align([r for _, r, _ in kept], [h for _, _, h in kept])
    utts = [UttErrors(i, r, h, *c) for (i, r, h), c in zip(kept, counts)]
    return CorpusErrors(utts=utts, dropped=dropped, normalizer=normalizer)


def character_error_rate(corpus: CorpusErrors) -> float | None:
    """Corpus CER over the scored (normalised) utterances; None when nothing is scored."""
    if not corpus.utts or sum(len(u.ref) for u in corpus.utts) == 0:
        return None
    return float(jiwer.cer([u.ref for u in corpus.utts], [u.hyp for u in corpus.utts]))
