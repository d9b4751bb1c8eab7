"""Both joint speech-LLM + CTC searches of benchmarks/bench_espnet_joint.py, in ONE process of the ESPnet venv.

    <ESPnet venv>/bin/python benchmarks/peers/espnet_joint.py SPEC.json OUT.json

Never run with the project's venv: it imports espnet (benchmarks/peers/requirements-espnet.txt).
The ESPnet venv has asrllm installed too, so that both searches decode the same encoder outputs
in the same process, each on `threads` torch threads, timed around the search calls only.

SPEC.json: {"recipe": dir, "model": exp dir relative to it, "checkpoint": str, "set": str,
"max_utts": int, "beams": [K], "pre_beams": [P, 0 = every label], "ctc_weights": [λ > 0],
"batch_utts": int, "max_length_ratio": float | null, "max_length": int | null, "threads": int}.
OUT.json: {"model", "parameters", "labels", "ctc_columns", "ctc_blank_id", "utts", "rows": [one per (λ, K, P)]}.

Shapes: B utterances of a batch, U speech vectors, D LLM dim, T CTC frames, V' CTC columns,
O ESPnet ids (= V'), L labels of a hypothesis.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from espnet.nets.batch_beam_search import BatchBeamSearch
from espnet.nets.scorers.ctc import CTCPrefixScorer as ESPnetCTCPrefixScorer
from espnet_scorers import GivenLogProbs, LabelMap, SearchRules, SpeechLLMDecoder

from asrllm.data.datadir import read_datadir
from asrllm.data.loader import inference_batches
from asrllm.models.speech_llm import SpeechLLM
from asrllm.models.trained import load_trained_model
from asrllm.search import SearchConfig, build_search
from asrllm.search.label_sync import LabelSyncSearch
from asrllm.search.model_scorers import SpeechLLMScorer, encoder_output
from asrllm.search.scorer import EncoderOutput

Hyp = tuple[list[int] | None, float]  # (labels, the search's own total score); None: no hypothesis


def single(enc: EncoderOutput, b: int) -> EncoderOutput:
    """Utterance b of a batch as a batch of one, cut to its own lengths."""
    u, t = int(enc.lens[b]), int(enc.ctc_lens[b])
    return EncoderOutput(lens=enc.lens[b : b + 1], states=enc.states[b : b + 1, :u],
                         ctc_log_probs=enc.ctc_log_probs[b : b + 1, :t], ctc_lens=enc.ctc_lens[b : b + 1])


def our_search(model: SpeechLLM, spec: dict, lam: float, beam: int, pre_beam: int) -> LabelSyncSearch:
    cfg = SearchConfig(method="label_sync", beam=beam, pre_beam=pre_beam or None, ctc_weight=lam,
                       max_length_ratio=spec["max_length_ratio"], max_length=spec["max_length"])
    return build_search(cfg, blank_id=model.ctc_blank_id, model_scorers={"speech_llm": SpeechLLMScorer(model)},
                        eos_id=model.eos_id)


def espnet_search(model: SpeechLLM, labels: LabelMap, lam: float, beam: int, pre_beam: int
                  ) -> tuple[BatchBeamSearch, SpeechLLMDecoder, SearchRules]:
    """ESPnet's BatchBeamSearch over the decoder (1 − λ), ESPnet's CTC prefix scorer (λ) and our rules (1)."""
    eos = labels.espnet(model.eos_id)
    decoder = SpeechLLMDecoder(model, labels)
    rules = SearchRules(labels.size, blank=0, eos=eos)
    ratio = pre_beam / beam
    if int(ratio * beam) != pre_beam:  # ESPnet takes int(ratio · beam): keep float truncation off P − 1
        ratio = math.nextafter(ratio, math.inf)
    search = BatchBeamSearch(
        scorers={"decoder": decoder, "ctc": ESPnetCTCPrefixScorer(GivenLogProbs(), eos), "rules": rules},
        weights={"decoder": 1.0 - lam, "ctc": lam, "rules": 1.0}, beam_size=beam, vocab_size=labels.size,
        sos=labels.espnet(model.bos_id), eos=eos, pre_beam_ratio=ratio if pre_beam else 1.0,
        pre_beam_score_key="full" if pre_beam else None,
    )
    assert not pre_beam or search.pre_beam_size == pre_beam, (search.pre_beam_size, pre_beam)
    return search, decoder, rules


def run_espnet(search: BatchBeamSearch, decoder: SpeechLLMDecoder, rules: SearchRules, labels: LabelMap,
               enc: EncoderOutput, max_length: int) -> tuple[Hyp, float]:
    """-> (best hypothesis in our label ids, search seconds) of one utterance (a batch of one)."""
    decoder.set_utterance(enc.states[0])
    rules.set_max_length(max_length)
    start = time.perf_counter()
    x = enc.ctc_log_probs[0].double()[:, labels.order]  # (T, O) blank first; float64 as our CTC scorer
    nbest = search(x, maxlenratio=-(max_length + 1), minlenratio=0.0)  # one step more: see SearchRules
    seconds = time.perf_counter() - start
    if not nbest or nbest[0].score == -math.inf:  # every hypothesis died, as in ours (SearchRules)
        return (None, -math.inf), seconds
    ids = labels.ours(nbest[0].yseq[1:]).tolist()  # without SOS; ESPnet may append a second EOS
    return (ids[: ids.index(decoder.model.eos_id)] if decoder.model.eos_id in ids else ids,
            float(nbest[0].score)), seconds


def objective(model: SpeechLLM, enc: EncoderOutput, hyp: list[int] | None, lam: float) -> float:
    """(1 − λ)·log p_LLM(hyp, EOS | speech) + λ·log p_CTC(hyp), by full forward passes: the sum both
    searches maximise, computed apart from either."""
    if hyp is None:
        return -math.inf
    tokens = torch.tensor([hyp or [0]])  # (1, max(L, 1))
    lengths = torch.tensor([len(hyp)])
    llm = model.transcript_log_probs(model.context(enc.states, enc.lens), tokens, lengths).double().sum()
    lp = enc.ctc_log_probs.double().transpose(0, 1)  # (T, 1, V')
    ctc = -F.ctc_loss(lp, torch.tensor(hyp, dtype=torch.long), enc.ctc_lens, lengths, blank=model.ctc_blank_id,
                      reduction="sum")
    return float((1 - lam) * llm + lam * ctc)


def encode(model: SpeechLLM, spec: dict) -> list[EncoderOutput]:
    """Encoder outputs of batches of `batch_utts` utterances sorted by duration (one encoder pass each)."""
    utts = read_datadir(Path(spec["recipe"]) / "data" / spec["set"])[: spec["max_utts"]]
    batches = []
    n = spec["batch_utts"]
    for batch in inference_batches(utts, 1e9):  # one sorted list, cut into equal-count batches below
        for i in range(0, len(batch), n):
            audio, alens = batch.audio[i : i + n], batch.audio_lens[i : i + n]
            batches.append(encoder_output(model, audio[:, : int(alens.max())], alens, batch.ids[i : i + n]))
    return batches


def setting(model: SpeechLLM, spec: dict, batches: list[EncoderOutput], labels: LabelMap, lam: float, beam: int,
            pre_beam: int) -> dict[str, Any]:
    """One (λ, K, P) row: our search on single utterances and batched, ESPnet's on single utterances."""
    ours = our_search(model, spec, lam, beam, pre_beam)
    theirs = espnet_search(model, labels, lam, beam, pre_beam)
    singles = [single(enc, b) for enc in batches for b in range(enc.batch_size)]
    t_single, t_batched, t_espnet = 0.0, 0.0, 0.0
    mine: list[Hyp] = []
    for enc in singles:
        start = time.perf_counter()
        entry = ours(enc)[0][0]
        t_single += time.perf_counter() - start
        mine.append((entry.tokens if entry.score > -math.inf else None, entry.score))
    batched: list[Hyp] = []
    for enc in batches:
        start = time.perf_counter()
        nbest = ours(enc)
        t_batched += time.perf_counter() - start
        batched += [(e[0].tokens if e[0].score > -math.inf else None, e[0].score) for e in nbest]
    peer: list[Hyp] = []
    for enc in singles:
        hyp, seconds = run_espnet(*theirs, labels, enc, int(ours.max_lengths(enc)[0]))
        t_espnet += seconds
        peer.append(hyp)
    obj_ours = [objective(model, enc, h, lam) for enc, (h, _) in zip(singles, mine)]
    obj_espnet = [objective(model, enc, h, lam) for enc, (h, _) in zip(singles, peer)]
    score_gap = max((abs(s - o) for hyps, objs in ((mine, obj_ours), (peer, obj_espnet))
                     for (_, s), o in zip(hyps, objs) if math.isfinite(o)), default=0.0)
    n = len(singles)
    both = [i for i in range(n) if mine[i][0] is not None and peer[i][0] is not None]  # sums over these
    return {
        "ctc_weight": lam, "beam": beam, "pre_beam": pre_beam or None, "utts": n,
        "identical_pct": 100.0 * sum(a[0] == b[0] for a, b in zip(mine, peer)) / n,
        "batched_identical_pct": 100.0 * sum(a[0] == b[0] for a, b in zip(mine, batched)) / n,
        "ours_better": sum(a > b + 1e-6 for a, b in zip(obj_ours, obj_espnet)),
        "espnet_better": sum(b > a + 1e-6 for a, b in zip(obj_ours, obj_espnet)),
        "no_hypothesis": {"ours": sum(h is None for h, _ in mine), "espnet": sum(h is None for h, _ in peer)},
        "both_ended": len(both),
        "score_sum": {"ours": sum(mine[i][1] for i in both), "espnet": sum(peer[i][1] for i in both)},
        "objective_sum": {"ours": sum(obj_ours[i] for i in both), "espnet": sum(obj_espnet[i] for i in both)},
        "max_score_objective_gap": score_gap,  # each search's own total vs the recomputed sum
        "seconds": {"ours_single": t_single, "ours_batched": t_batched, "espnet": t_espnet},
        "speedup": {"single": t_espnet / t_single, "batched": t_espnet / t_batched},
    }


def main(spec_file: str, out_file: str) -> int:
    spec = json.loads(Path(spec_file).read_text(encoding="utf-8"))
    torch.set_num_threads(spec["threads"])
    logging.getLogger("espnet").setLevel(logging.ERROR)  # per-utterance info and "max length" warnings
    model = load_trained_model(Path(spec["recipe"]) / spec["model"], spec["checkpoint"], torch.device("cpu"))
    if not isinstance(model, SpeechLLM) or model.ctc_head is None:
        raise ValueError(f"{spec['model']}: a speech LLM trained with an aux CTC head (aux_ctc_weight > 0) is needed")
    with torch.inference_mode():
        batches = encode(model, spec)
        labels = LabelMap.blank_first(model.llm.vocab_size, batches[0].ctc_log_probs.shape[2], model.ctc_blank_id)
        rows = []
        for lam in spec["ctc_weights"]:
            for beam in spec["beams"]:
                for pre_beam in spec["pre_beams"]:
                    rows.append(row := setting(model, spec, batches, labels, lam, beam, pre_beam))
                    print(f"λ={lam:g} K={beam} P={pre_beam or 'all'}: identical {row['identical_pct']:.1f} %, "
                          f"search s asrllm {row['seconds']['ours_single']:.2f} (1 utt), ESPnet "
                          f"{row['seconds']['espnet']:.2f}", file=sys.stderr, flush=True)
    out = {"model": spec["model"], "parameters": sum(p.numel() for p in model.parameters()),
           "labels": model.llm.vocab_size, "ctc_columns": labels.size, "ctc_blank_id": model.ctc_blank_id,
           "utts": sum(enc.batch_size for enc in batches), "rows": rows}
    Path(out_file).write_text(json.dumps(out, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
