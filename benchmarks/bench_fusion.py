"""Benchmark: the cost of CTC + LM combination per schedule, and the speed-ups' effect (issue 8, acceptance 4).

    python benchmarks/bench_fusion.py --recipe egs/mini_synth/asr1 [--set test] [--max-utts 300] \\
        [--smollm2 exp/smollm2_135m_lora --smollm2-utts 60] [--out /tmp/bench_fusion.md]

Needs the demo's stages 1-13 (AM, LMs, prior, tuned scales in exp/train_ctc_small/tune/) and, for
the SmolLM2 rows, stage 16 (exp/smollm2_135m_lora). The AM's log-probs of the set are computed
once; every variant then runs the same batched search on them (1 torch thread), so the columns
compare search cost alone: search seconds, RTFx of the search (audio s / search s), LLM forward
calls an utterance took part in and tokens fed per utterance (`LMCallStats`), and WER.

Tables: (1) label-wise vs. delayed v1 vs. delayed v2 (each trigger) vs. N-best rescoring, with the
tiny LLM on characters and in its own BPE; (2) the switchable speed-ups (frame collapse of blank runs
and of confident label runs, LM distribution caching, AM-score pruning) on label-wise and delayed
v2 fusion; (3) optional SmolLM2-135M + LoRA rows on the first --smollm2-utts utterances, its scales
tuned on as many dev utterances' 16-best lists.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import torch

from asrllm.bin.decode import DecodeConfig
from asrllm.config import load_config
from asrllm.data.datadir import read_datadir
from asrllm.data.loader import inference_batches
from asrllm.data.tokenizer import Tokenizer, load_tokenizer
from asrllm.eval.wer import score_corpus
from asrllm.models.ctc_prior import load_prior
from asrllm.models.trained import load_trained_model
from asrllm.search import FusionConfig, LabelPrior, SearchConfig, build_search
from asrllm.search.fusion import PRIOR
from asrllm.search.hyps import NBestEntry
from asrllm.search.lm_scorer import LMScorer, LMSpec, load_lm_scorer
from asrllm.search.rescoring import label_reader, rerank, rescore
from asrllm.search.tuning import tune_scales

Batches = list[tuple[torch.Tensor, torch.Tensor, list[str]]]  # (log_probs (B, T, V), lens (B,), ids)


@dataclasses.dataclass
class Row:
    name: str
    search: str
    wer: float
    seconds: float
    audio: float
    calls: float | None
    tokens: float | None

    def cells(self) -> list[str]:
        na = "–"
        return [self.name, self.search, f"{self.wer:.2f}", f"{self.seconds:.1f}", f"{self.audio / self.seconds:.0f}",
                na if self.calls is None else f"{self.calls:.1f}", na if self.tokens is None else f"{self.tokens:.1f}"]


def encode(recipe: Path, data: str, max_utts: int
           ) -> tuple[Batches, dict[str, str], dict[str, float], Tokenizer, torch.Tensor]:
    """The AM's log-probs of data/<data> (first max_utts utterances), refs, durations, tokenizer, log prior."""
    am = recipe / "exp/train_ctc_small"
    tokenizer = load_tokenizer(am / "tokenizer")
    model = load_trained_model(am, "average", torch.device("cpu"))
    utts = read_datadir(recipe / "data" / data)[:max_utts]
    batches: Batches = []
    durations = {}
    for batch in inference_batches(utts, 100.0):
        with torch.inference_mode():
            log_probs, lens = model.log_probs(batch.audio, batch.audio_lens, utt_ids=batch.ids)
        batches.append((log_probs.float(), lens, batch.ids))
        durations.update(zip(batch.ids, (batch.audio_lens.double() / 16000).tolist()))
    log_prior = LabelPrior.from_probs(load_prior(am / "prior.safetensors").float(), blank_id=tokenizer.blank_id).log_prior
    return batches, {u.id: u.text for u in utts}, durations, tokenizer, log_prior


def run(batches: Batches, cfg: SearchConfig, scorers: dict[str, LMScorer], tok: Tokenizer, log_prior: torch.Tensor
        ) -> tuple[list[list[NBestEntry]], float, dict[str, int]]:
    """-> N-best lists, search seconds, summed LMCallStats of the fused LMs."""
    search = build_search(cfg, blank_id=tok.blank_id, detokenize=tok.decode, log_prior=log_prior, scorers=scorers,
                          vocab_size=tok.vocab_size, am_tokenizer=tok)
    used = [scorers[n] for n in cfg.fusion.weights]
    for s in used:
        s.stats.reset()
    out: list[list[NBestEntry]] = []
    start = time.perf_counter()
    for log_probs, lens, ids in batches:
        out += search(log_probs, lens, utt_ids=ids)
    seconds = time.perf_counter() - start
    stats = {k: sum(getattr(s.stats, k) for s in used) for k in ("calls", "tokens", "utterance_calls")}
    return out, seconds, stats


def wer(nbest: list[list[NBestEntry]], refs: dict[str, str]) -> float:
    hyps = {u[0].utt_id: u[0].text for u in nbest if u}
    hyps.update({utt: "" for utt in refs if utt not in hyps})
    return 100.0 * score_corpus(refs, hyps).wer


def describe(cfg: SearchConfig) -> str:
    from asrllm.eval.results_table import describe_search

    return describe_search(dataclasses.asdict(cfg))


def decode_row(name: str, batches: Batches, cfg: SearchConfig, scorers: dict[str, LMScorer], tok: Tokenizer,
               log_prior: torch.Tensor, refs: dict[str, str], audio: float) -> Row:
    nbest, seconds, stats = run(batches, cfg, scorers, tok, log_prior)
    n = len(refs)
    lm = bool(cfg.fusion.weights)
    return Row(name, describe(cfg), wer(nbest, refs), seconds, audio,
               stats["utterance_calls"] / n if lm else None, stats["tokens"] / n if lm else None)


def rescoring_row(name: str, batches: Batches, lm: str, scales: tuple[float, float], scorers: dict[str, LMScorer],
                  tok: Tokenizer, log_prior: torch.Tensor, refs: dict[str, str], audio: float, nbest: int = 16) -> Row:
    """First pass beam = nbest, then the LM and the prior rescore the lists (time: both)."""
    lists, seconds, _ = run(batches, SearchConfig(beam=nbest, nbest=nbest), scorers, tok, log_prior)
    prior = LabelPrior(log_prior=log_prior)
    start = time.perf_counter()
    scored, costs = rescore(lists, {lm: scorers[lm], PRIOR: prior},
                            {lm: label_reader(scorers[lm], tok), PRIOR: list})
    ranked = rerank(scored, {"ctc": 1.0, lm: scales[0], PRIOR: -scales[1]})
    seconds += time.perf_counter() - start
    n = len(refs)
    return Row(name, f"rescoring {nbest}-best: {lm} {scales[0]:g}, prior {scales[1]:g}", wer(ranked, refs), seconds,
               audio, costs[lm].utterance_calls / n, costs[lm].tokens / n)


def with_fusion(cfg: SearchConfig, **changes: object) -> SearchConfig:
    return dataclasses.replace(cfg, fusion=dataclasses.replace(cfg.fusion, **changes))


def table(title: str, rows: list[Row]) -> str:
    head = ["variant", "search", "WER %", "search s", "search RTFx", "LLM calls/utt", "LLM tokens/utt"]
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    return "\n".join(lines + ["| " + " | ".join(r.cells()) + " |" for r in rows]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, default=Path("egs/mini_synth/asr1"))
    parser.add_argument("--set", default="test")
    parser.add_argument("--max-utts", type=int, default=300)
    parser.add_argument("--tuned", default="exp/train_ctc_small/tune/own_unigram256/decode_fusion.yaml",
                        help="the tuned fusion config of stage 12 (relative to --recipe)")
    parser.add_argument("--smollm2", default=None, help="LM exp dir of stage 16 (relative to --recipe), e.g. exp/smollm2_135m_lora")
    parser.add_argument("--smollm2-utts", type=int, default=60)
    parser.add_argument("--out", type=Path, default=None, help="also write the tables here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    recipe = args.recipe.resolve()
    import os

    os.chdir(recipe)  # LM dirs in the configs are relative to the recipe
    batches, refs, durations, tok, log_prior = encode(recipe, args.set, args.max_utts)
    audio = sum(durations.values())
    cfg = load_config(DecodeConfig, args.tuned, {})
    scorers = {name: load_lm_scorer(spec, torch.device("cpu")) for name, spec in cfg.lms.items()}
    lw_char, v2_bpe = cfg.methods["lw_tiny_char"], cfg.methods["v2e5_tiny_bpe2k"]
    tuning = {lm: json.loads(Path(f"exp/train_ctc_small/tune/{lm}/tuning.json").read_text()) for lm in ("tiny_char", "tiny_bpe2k")}

    def row(name: str, c: SearchConfig, sc: dict[str, LMScorer] = scorers) -> Row:
        r = decode_row(name, batches, c, sc, tok, log_prior, refs, audio)
        print(" | ".join(r.cells()), flush=True)
        return r

    schedules = [row("CTC beam 8", SearchConfig(beam=8))]
    for lm, base in (("tiny_char", lw_char), ("tiny_bpe2k", v2_bpe)):
        if lm == "tiny_char":
            schedules += [row("label-wise", base), row("delayed v1", with_fusion(base, schedule="delayed"))]
        v2 = with_fusion(base, schedule="delayed", retokenize=True)
        for every in (1, 5, 10, 20):
            schedules.append(row(f"delayed v2 every {every}", with_fusion(v2, trigger="every", every=every)))
        schedules += [row("delayed v2 at the end", with_fusion(v2, trigger="end", every=1)),
                      row("delayed v2 shortest hyp", with_fusion(v2, trigger="shortest", every=1))]
        t = tuning[lm]
        schedules.append(rescoring_row("16-best rescoring", batches, lm, (t["lm_scale"], t["prior_scale"]), scorers, tok,
                                       log_prior, refs, audio))
        print(flush=True)

    speedups = []
    for base in (lw_char, v2_bpe):
        speedups += [
            row("base", base),
            row("blank collapse 0.999", dataclasses.replace(base, blank_collapse=0.999)),
            row("blank collapse 0.99", dataclasses.replace(base, blank_collapse=0.99)),
            row("soft collapse 0.8", dataclasses.replace(base, soft_collapse=0.8)),
            row("blank 0.99 + soft 0.8", dataclasses.replace(base, blank_collapse=0.99, soft_collapse=0.8)),
            row("AM pruning: beam_threshold 10", dataclasses.replace(base, beam_threshold=10.0)),
            row("AM pruning: 8 labels/frame", dataclasses.replace(base, token_prune_topk=8)),
        ]
        lm = next(iter(base.fusion.weights))
        spec = cfg.lms[lm]
        uncached = {lm: load_lm_scorer(dataclasses.replace(spec, cache_distributions=False), torch.device("cpu"))}
        speedups.append(row("no LM distribution cache", base, uncached))

    smol = []
    if args.smollm2:
        lm = "smollm2"
        scorers_s = {lm: load_lm_scorer(LMSpec(args.smollm2), torch.device("cpu"))}
        dev, dev_refs, _, _, _ = encode(recipe, "dev", args.smollm2_utts)
        lists, _, _ = run(dev, SearchConfig(beam=16, nbest=16), {}, tok, log_prior)
        scored, _ = rescore(lists, {lm: scorers_s[lm], PRIOR: LabelPrior(log_prior=log_prior)},
                            {lm: label_reader(scorers_s[lm], tok), PRIOR: list})
        t = tune_scales(scored, dev_refs, lm, [0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2], [0, 0.2, 0.4, 0.6, 0.8], 1)
        print(f"SmolLM2 tuned on {args.smollm2_utts} dev utts: λ {t.lm_scale}, prior {t.prior_scale}, dev WER {t.wer:.2f}")
        sub = []
        left = args.smollm2_utts
        for lp, lens, ids in batches:  # the first --smollm2-utts utterances of the set
            if left <= 0:
                break
            sub.append((lp[:left], lens[:left], ids[:left]))
            left -= len(ids)
        sub_refs = {u: refs[u] for _, _, ids in sub for u in ids}
        sub_audio = sum(durations[u] for u in sub_refs)
        base = SearchConfig(beam=8, fusion=FusionConfig(schedule="delayed", retokenize=True, weights={lm: t.lm_scale},
                                                        prior_scale=t.prior_scale))
        for name, c in (("CTC beam 8", SearchConfig(beam=8)), ("delayed v2 every 5", with_fusion(base, every=5)),
                        ("delayed v2 every 20", with_fusion(base, every=20)),
                        ("delayed v2 at the end", with_fusion(base, trigger="end"))):
            r = decode_row(name, sub, c, scorers_s, tok, log_prior, sub_refs, sub_audio)
            print(" | ".join(r.cells()), flush=True)
            smol.append(r)
        smol.append(rescoring_row("16-best rescoring", sub, lm, (t.lm_scale, t.prior_scale), scorers_s, tok, log_prior,
                                  sub_refs, sub_audio))

    n = len(refs)
    header = (f"machine: {platform.machine()}, 1 torch thread, torch {torch.__version__}; {args.set}: {n} utterances, "
              f"{audio:.0f} s of audio; log-probs computed once (encoder time excluded)\n")
    text = header + "\n" + table(f"Schedules ({args.set}, tuned scales)", schedules) + "\n" + \
        table(f"Speed-ups ({args.set})", speedups)
    if smol:
        text += "\n" + table(f"SmolLM2-135M + LoRA ({args.set}, first {args.smollm2_utts} utterances)", smol)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
