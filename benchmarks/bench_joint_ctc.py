"""Benchmark: joint speech-LLM + CTC decoding (issue 10) — its cost next to the decoder alone, the
speed-up of each optimisation against the naive search, and the CTC prefix scorer's memory per step.

    cd egs/mini_synth/asr1 && python ../../../benchmarks/bench_joint_ctc.py --recipe . --model exp/sllm_interface_prefix \\
        [--set test] [--max-utts 40] [--beam 4] [--ctc-weight 0.3] [--batch-utts 8] [--out /tmp/joint.md]

One encoder pass per batch (the speech vectors and the aux CTC head's log-probs), shared by every
setting; then each setting decodes the same batches on one torch thread:
- decoder alone (`ctc_weight` 0);
- naive joint search: CTC prefix scores for EVERY label of every hypothesis (no pre-beam);
- the pre-beam P (the decoder proposes P labels, only those get CTC prefix scores): 64 (the
  authors'), 16, 8, and 8 with EOS always among them (`pre_beam_eos`);
- the score threshold T = 2 on P = 64 and 8 (`pre_beam_threshold`: only pre-beam labels within T
  of their hypothesis' best get CTC prefix scores; the block is as wide as its widest row);
- P = 8 with utterances decoded one at a time (batch 1) instead of batched.
Reuse of the parent prefix's CTC variables (a hypothesis's r and ψ come from its parent's
candidate extension, never recomputed) and the exact early stop are always on: they are how the
search works, not options. Columns: search seconds, RTFx (audio / (encoder + search) seconds),
speed-up against the naive search, hypotheses identical to the naive search (%), the mean
candidates per hypothesis S of the CTC prefix calls, and the largest
(N, S, T) CTC candidate block of one step (elements and MB of its float64 r variables; one step's
temporaries are a few blocks of that size): it grows with the candidates S, never with V unless
S = V.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time
from pathlib import Path

import torch
from encoded import encoded_batches  # benchmarks/encoded.py (same directory: sys.path[0])

from asrllm.data.datadir import read_datadir
from asrllm.models.speech_llm import SpeechLLM
from asrllm.models.trained import load_trained_model
from asrllm.search import SearchConfig, build_search
from asrllm.search.ctc_prefix import CTCPrefixScorer
from asrllm.search.model_scorers import SpeechLLMScorer

_largest = {"elements": 0, "bytes": 0}  # the largest candidate block of the running setting
_widths: list[int] = []  # S, the candidates per hypothesis, of every CTC prefix call of the running setting


def _recording(score_partial):
    def wrapped(self, tokens, lengths, cand, state):
        logp, new_state = score_partial(self, tokens, lengths, cand, state)
        _widths.append(cand.shape[1])
        if new_state.cand_r.numel() // 2 > _largest["elements"]:
            _largest.update(elements=new_state.cand_r.numel() // 2, bytes=new_state.cand_r.nbytes)
        return logp, new_state
    return wrapped


def settings(beam: int, ctc_weight: float) -> dict[str, tuple[SearchConfig, bool]]:
    """name -> (search config, batched over utterances)."""
    base = SearchConfig(method="label_sync", beam=beam, max_length_ratio=1.0)
    joint = dataclasses.replace(base, ctc_weight=ctc_weight)
    return {
        "decoder alone": (base, True),
        "joint, naive (every label)": (joint, True),
        "joint, P = 64": (dataclasses.replace(joint, pre_beam=64), True),
        "joint, P = 64, T = 2": (dataclasses.replace(joint, pre_beam=64, pre_beam_threshold=2.0), True),
        "joint, P = 16": (dataclasses.replace(joint, pre_beam=16), True),
        "joint, P = 8": (dataclasses.replace(joint, pre_beam=8), True),
        "joint, P = 8, T = 2": (dataclasses.replace(joint, pre_beam=8, pre_beam_threshold=2.0), True),
        "joint, P = 8 + EOS": (dataclasses.replace(joint, pre_beam=8, pre_beam_eos=True), True),
        "joint, P = 8, one utterance at a time": (dataclasses.replace(joint, pre_beam=8), False),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", required=True, type=Path)
    parser.add_argument("--model", required=True, help="speech-LLM exp dir (with an aux CTC head), relative to --recipe")
    parser.add_argument("--checkpoint", default="average")
    parser.add_argument("--set", default="test")
    parser.add_argument("--max-utts", type=int, default=40)
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--ctc-weight", type=float, default=0.3)
    parser.add_argument("--batch-utts", type=int, default=8)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_trained_model(args.recipe / args.model, args.checkpoint, torch.device("cpu"))
    assert isinstance(model, SpeechLLM) and model.ctc_head is not None, "a speech LLM with an aux CTC head"
    utts = read_datadir(args.recipe / "data" / args.set)[: args.max_utts]
    batches, encoder_seconds, audio_seconds = encoded_batches(model, utts, args.batch_utts)
    CTCPrefixScorer.score_partial = _recording(CTCPrefixScorer.score_partial)
    rows, naive_hyps, naive_seconds = [], None, None
    for name, (cfg, batched) in settings(args.beam, args.ctc_weight).items():
        search = build_search(cfg, blank_id=model.ctc_blank_id, model_scorers={"speech_llm": SpeechLLMScorer(model)},
                              eos_id=model.eos_id)
        _largest.update(elements=0, bytes=0)
        _widths.clear()
        hyps, seconds = [], 0.0
        with torch.inference_mode():
            for enc in batches:
                parts = [enc] if batched else [enc.rows([b]) for b in range(enc.batch_size)]
                for part in parts:
                    start = time.perf_counter()
                    hyps += [entries[0].tokens for entries in search(part)]
                    seconds += time.perf_counter() - start
        if name.startswith("joint, naive"):
            naive_hyps, naive_seconds = hyps, seconds
        same = "–" if naive_hyps is None else f"{100 * sum(a == b for a, b in zip(hyps, naive_hyps)) / len(hyps):.1f}"
        speed = "–" if naive_seconds is None or name == "decoder alone" else f"{naive_seconds / seconds:.1f}×"
        block = "–" if not _largest["elements"] else f"{_largest['elements']:,} / {_largest['bytes'] / 2**20:.1f}"
        width = "–" if not _widths else f"{sum(_widths) / len(_widths):.1f}"
        rows.append(f"| {name} | {seconds:.1f} | {audio_seconds / (encoder_seconds + seconds):.1f} | {speed} | {same} | "
                    f"{width} | {block} |")
        print(rows[-1], flush=True)
    header = [f"Model `{args.model}` ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
              f"{model.llm.vocab_size} labels), {len(utts)} utterances of {args.set} ({audio_seconds:.0f} s) in batches "
              f"of {args.batch_utts}, beam {args.beam}, λ = {args.ctc_weight}; encoder {encoder_seconds:.1f} s; "
              f"{platform.processor() or platform.machine()}, 1 torch thread.", "",
              "| setting | search s | RTFx | speed-up vs naive | identical to naive % | mean S | "
              "largest CTC block: N·S·T / MB |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    text = "\n".join(header + rows) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
