"""Benchmark: CTC acoustic-model training throughput and CTC decoding RTFx on a data dir.

    python benchmarks/bench_ctc.py --recipe egs/mini_synth/asr1 [--train-steps 30] [--threads 2]

Uses the recipe's training config (conf/train_ctc_small.yaml), data dirs and tokenizer (stages
1-2 must have run) and, for decoding, its trained model (exp/train_ctc_small, stage 3).
Training throughput = seconds of audio consumed per wall-clock second (forward, backward and
optimizer step, data loading included) over `--train-steps` steps after `--warmup-steps`.
Decoding RTFx = audio seconds / (encoder + search) seconds over the whole test set, per method
of conf/decode_ctc.yaml. Prints one markdown table to paste into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import time
from pathlib import Path

import torch

from asrllm.bin.decode import DecodeConfig
from asrllm.models.trained import load_trained_model
from asrllm.train.experiment import resolve_config
from asrllm.config import load_config
from asrllm.data.audio import read_audio
from asrllm.data.datadir import read_datadir
from asrllm.data.loader import collate
from asrllm.data.sampler import pack_batches
from asrllm.data.tokenizer import load_tokenizer
from asrllm.search import build_search
from asrllm.train.config import OptimConfig
from asrllm.train.trainer import build_optimizer


def train_throughput(recipe: Path, steps: int, warmup: int) -> tuple[float, float]:
    """-> (audio seconds per second, parameters in millions) for the recipe's CTC config."""
    exp = resolve_config(recipe / "conf/train_ctc_small.yaml", [], str(recipe / "data/token/char"))
    model = exp.model_cls(exp.model).train()
    optimizer = build_optimizer(model, OptimConfig(lr=exp.config.optim.lr))
    loader = exp.train_data.loader(exp.train_data.read(str(recipe / "data/train")), model, exp.data, True, 0, 1)
    batches = loader.epoch_batches(1)
    audio_seconds, start = 0.0, 0.0
    for i, batch in enumerate(itertools.islice(batches, warmup + steps)):
        if i == warmup:
            audio_seconds, start = 0.0, time.perf_counter()
        loss_sum, count, _ = model(batch)
        optimizer.zero_grad()
        (loss_sum / count).backward()
        optimizer.step()
        audio_seconds += float(batch.audio_lens.sum()) / 16000
    return audio_seconds / (time.perf_counter() - start), sum(p.numel() for p in model.parameters()) / 1e6


def decode_rtfx(recipe: Path, test_set: str) -> dict[str, float]:
    """-> RTFx per decoding method of the recipe's decode config, on data/<test_set>."""
    cfg = load_config(DecodeConfig, recipe / "conf/decode_ctc.yaml")
    model_dir = recipe / "exp/train_ctc_small"
    tokenizer = load_tokenizer(model_dir / "tokenizer")
    model = load_trained_model(model_dir, "average", torch.device("cpu"))
    utts = read_datadir(recipe / "data" / test_set)
    durations = [u.duration for u in utts]
    batches = []
    for idx in pack_batches(sorted(range(len(utts)), key=durations.__getitem__), durations, cfg.batch_seconds):
        chunk = [utts[i] for i in idx]
        batches.append(collate([u.id for u in chunk], [read_audio(u.audio, u.id) for u in chunk], [[]] * len(chunk), [""] * len(chunk)))
    rtfx = {}
    for name, scfg in cfg.methods.items():
        search = build_search(scfg, blank_id=tokenizer.blank_id, detokenize=tokenizer.decode)
        start = time.perf_counter()
        for batch in batches:
            with torch.inference_mode():
                log_probs, lens = model.log_probs(batch.audio, batch.audio_lens)
            search(log_probs, lens, utt_ids=batch.ids)
        rtfx[name] = sum(durations) / (time.perf_counter() - start)
    return rtfx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, default=Path("egs/mini_synth/asr1"))
    parser.add_argument("--test-set", default="test")
    parser.add_argument("--train-steps", type=int, default=30)
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training")
    parser.add_argument("--decode-threads", type=int, default=1, help="torch threads for decoding")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    speed, params = train_throughput(args.recipe, args.train_steps, args.warmup_steps)
    torch.set_num_threads(args.decode_threads)
    rtfx = decode_rtfx(args.recipe, args.test_set)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} decode threads, "
          f"{args.threads} train threads, torch {torch.__version__}")
    print("| measurement | value |\n|---|---:|")
    print(f"| CTC AM training ({params:.2f}M params), audio s / s | {speed:.1f} |")
    for name, value in rtfx.items():
        print(f"| CTC decoding RTFx, {name} ({args.test_set}) | {value:.0f} |")


if __name__ == "__main__":
    main()
