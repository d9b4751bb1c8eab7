"""Benchmark: asrllm's label-synchronous beam search vs. HF `generate()` on a trained speech LLM
(issue 9, acceptance 2).

    python benchmarks/bench_speech_llm.py --recipe egs/mini_synth/asr1 --model exp/sllm_tiny_prefix \\
        [--set test] [--max-utts 100] [--beams 1 4] [--batch-utts 8] [--max-length 60] [--out /tmp/b.md]

The encoder runs once per batch; both searches then decode the same speech vectors of the same
batches (prefix interface: HF has no merged attention) with the same beam and maximum length, on
one torch thread. HF gets the prompt/speech/BOS input vectors left-padded with an attention mask
(its batched `inputs_embeds` path) and `length_penalty=0` (the summed log-probability, as ours with
length_norm 0), `early_stopping=True`. Columns: search seconds, speed ratio (HF / ours), hypotheses
identical (%), and the sum of log-probabilities of each side's best hypothesis under the model
(summed over utterances: which search found the better objective where they differ).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
from encoded import encoded_batches  # benchmarks/encoded.py (same directory: sys.path[0])

from asrllm.data.datadir import read_datadir
from asrllm.models.speech_llm import SpeechLLM
from asrllm.models.trained import load_trained_model
from asrllm.search.label_sync import LabelSyncSearch
from asrllm.search.model_scorers import SpeechLLMScorer


def hf_inputs(model: SpeechLLM, speech: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded [prompt; speech; prompt; BOS] input vectors (B, C, D) and their attention mask (B, C)."""
    llm = model.llm
    before, after = llm.embed(model.prompt_before), llm.embed(torch.cat([model.prompt_after, torch.tensor([model.bos_id])]))
    rows = [torch.cat([before, speech[b, : int(lens[b])], after]) for b in range(speech.shape[0])]
    width = max(r.shape[0] for r in rows)
    embeds = torch.zeros(len(rows), width, rows[0].shape[1], dtype=speech.dtype)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for b, r in enumerate(rows):
        embeds[b, width - r.shape[0]:] = r
        mask[b, width - r.shape[0]:] = 1
    return embeds, mask


def hf_decode(model: SpeechLLM, speech, lens, beam: int, max_length: int) -> list[list[int]]:
    embeds, mask = hf_inputs(model, speech, lens)
    out = model.llm.hf_model.generate(
        inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_length + 1, do_sample=False, num_beams=beam,
        length_penalty=0.0, early_stopping=True, eos_token_id=model.eos_id, pad_token_id=model.eos_id,
    )
    hyps = []
    for row in out.tolist():
        hyps.append(row[: row.index(model.eos_id)] if model.eos_id in row else row[:max_length])
    return hyps


def objective(model: SpeechLLM, speech, lens, hyps: list[list[int]]) -> float:
    """Sum over utterances of log p(hypothesis, EOS | speech) under the model (full forward)."""
    width = max(max(len(h) for h in hyps), 1)
    tokens = torch.tensor([h + [0] * (width - len(h)) for h in hyps])
    lengths = torch.tensor([len(h) for h in hyps])
    return float(model.transcript_log_probs(model.context(speech, lens), tokens, lengths).double().sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", required=True, type=Path)
    parser.add_argument("--model", required=True, help="speech-LLM exp dir, relative to --recipe")
    parser.add_argument("--checkpoint", default="average")
    parser.add_argument("--set", default="test")
    parser.add_argument("--max-utts", type=int, default=100)
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--batch-utts", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=60, help="labels per hypothesis at most (both searches)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_trained_model(args.recipe / args.model, args.checkpoint, torch.device("cpu"))
    assert isinstance(model, SpeechLLM) and model.cfg.interface == "prefix", "a prefix-interface speech LLM"
    utts = read_datadir(args.recipe / "data" / args.set)[: args.max_utts]
    batches, _, _ = encoded_batches(model, utts, args.batch_utts)
    rows = []
    for beam in args.beams:
        search = LabelSyncSearch({"speech_llm": SpeechLLMScorer(model)}, {"speech_llm": 1.0}, eos_id=model.eos_id,
                                 beam=beam, max_length=args.max_length, max_length_ratio=None)
        ours, theirs, t_ours, t_hf, same, obj_ours, obj_hf = [], [], 0.0, 0.0, 0, 0.0, 0.0
        with torch.inference_mode():
            for enc in batches:
                start = time.perf_counter()
                mine = [entries[0].tokens for entries in search(enc)]
                t_ours += time.perf_counter() - start
                start = time.perf_counter()
                hf = hf_decode(model, enc.states, enc.lens, beam, args.max_length)
                t_hf += time.perf_counter() - start
                same += sum(a == b for a, b in zip(mine, hf))
                obj_ours += objective(model, enc.states, enc.lens, mine)
                obj_hf += objective(model, enc.states, enc.lens, hf)
                ours += mine
                theirs += hf
        rows.append(f"| {beam} | {t_ours:.1f} | {t_hf:.1f} | {t_hf / t_ours:.1f}× | {100 * same / len(ours):.1f} | "
                    f"{obj_ours:.1f} | {obj_hf:.1f} |")
        print(rows[-1], flush=True)
    header = [f"Model `{args.model}` ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters), "
              f"{len(utts)} utterances of {args.set} in batches of {args.batch_utts}, max {args.max_length} labels; "
              f"{platform.processor() or platform.machine()}, 1 torch thread.", "",
              "| beam | asrllm s | HF generate s | speed-up | identical % | Σ log p asrllm | Σ log p HF |",
              "|---:|---:|---:|---:|---:|---:|---:|"]
    text = "\n".join(header + rows) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
