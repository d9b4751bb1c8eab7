"""Scoring outputs of one decode directory (DESIGN.md "Data flow").

`write_scoring` writes, atomically:
  ref.txt, hyp.txt   Kaldi `id text`, raw (un-normalised) text, sorted by id
  per_utt.txt        tab-separated: id, #ref words, C S D I, normalised ref, normalised hyp;
                     then one `# dropped<TAB>id` line per utterance whose normalised reference is empty
  result.txt         sclite-style summary (Snt Wrd Corr Sub Del Ins Err S.Err, in % like sclite's .sys)
                     and the normaliser's name
  metrics.json       the numbers RESULTS.md is built from (rates in %; `hallucination`: the metrics of
                     asrllm.eval.hallucination over every utterance; `by_category`: the same per
                     category of the data dir's utt2category, when it has one), the scoring signature
                     `normalizer` (the name of the leaderboard normaliser, asrllm.eval.normalizer; as
                     sacreBLEU's signature names its tokeniser), plus the caller's `extra`
                     (command, model, method, beam, test_set, ...)
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from asrllm.config import atomic_write_text
from asrllm.eval.hallucination import hallucination_metrics
from asrllm.eval.normalizer import DEFAULT_NORMALIZER, get_normalizer
from asrllm.eval.wer import CorpusErrors, character_error_rate, score_corpus


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _kaldi_text(texts: dict[str, str]) -> str:
    return "".join(f"{i} {_one_line(texts[i])}".rstrip() + "\n" for i in sorted(texts))


def _pct(num: float, den: float) -> float:
    return 100.0 * num / den if den else 0.0


def sclite_summary(corpus: CorpusErrors, title: str) -> str:
    """An sclite `.sys`-style box: one Sum/Avg row, percentages of reference words (S.Err: of sentences)."""
    words, snt = corpus.ref_words, len(corpus.utts)
    c, s, d, i = (corpus.total(f) for f in ("corr", "sub", "dele", "ins"))
    row = [_pct(c, words), _pct(s, words), _pct(d, words), _pct(i, words), _pct(s + d + i, words)]
    row.append(_pct(corpus.sentence_errors, snt))
    header = f"| {'SPKR':<7} | {'# Snt':>6} {'# Wrd':>8} | " + " ".join(
        f"{h:>6}" for h in ("Corr", "Sub", "Del", "Ins", "Err", "S.Err")
    ) + " |"
    body = f"| {'Sum/Avg':<7} | {snt:>6} {words:>8} | " + " ".join(f"{v:6.1f}" for v in row) + " |"
    inner = len(header) - 2
    rule = "|" + "".join("+" if ch == "|" else "-" for ch in header[1:-1]) + "|"
    lines = [
        "," + "-" * inner + ".",
        "|" + title[:inner].center(inner) + "|",
        "|" + "-" * inner + "|",
        header,
        rule,
        body,
        "`" + "-" * inner + "'",
    ]
    lines.append(f"Dropped (empty normalised reference): {len(corpus.dropped)}")
    lines.append(f"Normaliser: {corpus.normalizer or 'none (whitespace only)'}")
    return "\n".join(lines) + "\n"


def _hallucination(corpus: CorpusErrors, hyps: dict[str, str]) -> dict[str, Any]:
    """`hallucination_metrics` over every utterance: the scored ones, and the dropped ones (empty
    normalised reference) with their hypothesis normalised the same way."""
    norm = get_normalizer(corpus.normalizer) if corpus.normalizer else (lambda s: " ".join(s.split()))
    pairs = [(u.ref, u.hyp) for u in corpus.utts] + [("", norm(hyps[i])) for i in corpus.dropped]
    return hallucination_metrics([r for r, _ in pairs], [h for _, h in pairs])


def _subset_metrics(refs: dict[str, str], hyps: dict[str, str], ids: list[str], normalizer: str) -> dict[str, Any]:
    """WER, Del, Ins and the hallucination metrics of the utterances `ids` alone."""
    corpus = score_corpus({u: refs[u] for u in ids}, {u: hyps[u] for u in ids}, normalizer=normalizer)
    d, i = corpus.total("dele"), corpus.total("ins")
    return {
        "num_utts": len(ids),
        "wer": round(100.0 * corpus.wer, 4) if corpus.ref_words and math.isfinite(corpus.wer) else None,
        "del": round(_pct(d, corpus.ref_words), 4),
        "ins": round(_pct(i, corpus.ref_words), 4),
        "hallucination": _hallucination(corpus, hyps),
    }


def write_scoring(
    out_dir: str | Path,
    refs: dict[str, str],
    hyps: dict[str, str],
    audio_seconds: float,
    decode_seconds: float,
    extra: dict[str, Any] | None = None,
    normalizer: str = DEFAULT_NORMALIZER,
    categories: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Score `hyps` against `refs` after the leaderboard normaliser named `normalizer` and write the
    files above; returns metrics.

    rtfx = audio_seconds / decode_seconds (None when decode_seconds is 0). Keys of `extra` must not
    collide with computed ones.
    """
    out_dir = Path(out_dir)
    corpus = score_corpus(refs, hyps, normalizer=normalizer)
    words = corpus.ref_words
    c, s, d, i = (corpus.total(f) for f in ("corr", "sub", "dele", "ins"))
    cer = character_error_rate(corpus)
    metrics: dict[str, Any] = {
        "normalizer": normalizer,
        "wer": round(100.0 * corpus.wer, 4) if math.isfinite(corpus.wer) else None,
        "cer": None if cer is None else round(100.0 * cer, 4),
        "sub": round(_pct(s, words), 4),
        "del": round(_pct(d, words), 4),
        "ins": round(_pct(i, words), 4),
        "sent_err": round(_pct(corpus.sentence_errors, len(corpus.utts)), 4),
        "counts": {"corr": c, "sub": s, "del": d, "ins": i, "ref_words": words},
        "num_utts": len(corpus.utts),
        "dropped_empty_refs": len(corpus.dropped),
        "dropped_ids": corpus.dropped,
        "audio_seconds": round(float(audio_seconds), 3),
        "decode_seconds": round(float(decode_seconds), 3),
        "rtfx": round(audio_seconds / decode_seconds, 2) if decode_seconds > 0 else None,
        "hallucination": _hallucination(corpus, hyps),
    }
    if categories is not None:
        metrics["by_category"] = {name: _subset_metrics(refs, hyps, [u for u in refs if categories[u] == name], normalizer)
                                  for name in sorted(set(categories.values()))}
    for key, value in (extra or {}).items():
        if key in metrics:
            raise ValueError(f"write_scoring: extra key {key!r} collides with a computed metric")
        metrics[key] = value

    per_utt = ["#id\tref_words\tcorr\tsub\tdel\tins\tref\thyp"]
    per_utt += [
        f"{u.utt_id}\t{u.ref_words}\t{u.corr}\t{u.sub}\t{u.dele}\t{u.ins}\t{u.ref}\t{u.hyp}" for u in corpus.utts
    ]
    per_utt += [f"# dropped\t{utt_id}" for utt_id in corpus.dropped]
    atomic_write_text(out_dir / "ref.txt", _kaldi_text(refs))
    atomic_write_text(out_dir / "hyp.txt", _kaldi_text(hyps))
    atomic_write_text(out_dir / "per_utt.txt", "\n".join(per_utt) + "\n")
    title = str((extra or {}).get("test_set", out_dir.name))
    atomic_write_text(out_dir / "result.txt", sclite_summary(corpus, title))
    metrics_text = json.dumps(metrics, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    atomic_write_text(out_dir / "metrics.json", metrics_text)
    return metrics
