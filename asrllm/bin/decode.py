"""Decode a data dir with a trained CTC model: every method of the decode config from ONE encoder pass.

    python -m asrllm.bin.decode --config conf/decode_ctc.yaml --model-dir exp/ctc \\
        --data data/test [--checkpoint average] [--num-jobs 4 --job 0]

For method M, the part of job J of NJ goes to `<model-dir>/decode_<set>_<M>/parts/J-of-NJ.*`
(hyp.txt, nbest.jsonl, info.json: timing and the exact command); `asrllm.bin.score` merges the
parts and scores them. A job whose parts exist already is skipped, so a crashed stage resumes.

Timing (RTFx): each method is charged the shared encoder time plus its own search time, i.e. what
decoding with that method alone would have cost.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
import sys
import time
from pathlib import Path

import torch

from asrllm.config import ConfigError, atomic_write_text, from_dict, load_config, load_yaml
from asrllm.data.audio import read_audio
from asrllm.data.datadir import Utterance, read_datadir
from asrllm.data.loader import collate
from asrllm.data.sampler import pack_batches
from asrllm.data.tokenizer import load_tokenizer
from asrllm.models.registry import MODELS
from asrllm.search import NBestEntry, SearchConfig, build_search, write_nbest_jsonl
from asrllm.train.checkpoint import MODEL_FILE, latest_checkpoint, load_checkpoint_state_dict, load_model_state

log = logging.getLogger("asrllm.decode")


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
    """The decode YAML: batching, threads, and the methods to run on each encoder output."""

    methods: dict[str, SearchConfig]  # output name -> search options; names become decode dir suffixes
    batch_seconds: float = 100.0  # padded audio seconds per decoding batch
    num_threads: int | None = 1  # torch threads; 1 avoids oversubscription when several jobs share a CPU
    device: str = "cpu"  # "cpu" or "cuda[:i]"

    def __post_init__(self) -> None:
        if not self.methods:
            raise ValueError("DecodeConfig: methods must name at least one search")
        if self.batch_seconds <= 0:
            raise ValueError(f"DecodeConfig: batch_seconds={self.batch_seconds} must be > 0")


def load_model(model_dir: Path, checkpoint: str, device: torch.device) -> torch.nn.Module:
    """The model of `model_dir/config.yaml` with the weights named by `checkpoint`.

    checkpoint: "average" (model_avg.safetensors), "latest", or a checkpoint dir name (step_00001000).
    """
    exp = load_yaml(model_dir / "config.yaml")
    kind = exp.get("model_kind")
    if kind not in MODELS:
        raise ConfigError(f"{model_dir / 'config.yaml'}: model_kind {kind!r} is not one of {sorted(MODELS)}")
    cfg_cls, model_cls = MODELS[kind]
    model = model_cls(from_dict(cfg_cls, exp["model"], "model"))
    if checkpoint == "average":
        weights = model_dir / "model_avg.safetensors"
    elif checkpoint == "latest":
        latest = latest_checkpoint(model_dir / "checkpoints")
        if latest is None:
            raise FileNotFoundError(f"no complete checkpoint under {model_dir / 'checkpoints'}")
        weights = latest / MODEL_FILE
    else:
        weights = model_dir / "checkpoints" / checkpoint / MODEL_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint!r}: {weights} does not exist")
    load_checkpoint_state_dict(model, load_model_state(weights), weights)
    log.info("loaded %s (%s)", weights, kind)
    return model.to(device).eval()


def job_slice(utts: list[Utterance], num_jobs: int, job: int) -> list[Utterance]:
    """Job `job`'s share of the (id-sorted) utterances: every num_jobs-th one, so durations balance."""
    return utts[job::num_jobs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="decode YAML (DecodeConfig)")
    parser.add_argument("--model-dir", required=True, type=Path, help="experiment dir of the trained model")
    parser.add_argument("--checkpoint", default="average", help="average | latest | step_<N> dir name")
    parser.add_argument("--data", required=True, type=Path, help="Kaldi-style data dir to decode")
    parser.add_argument("--num-jobs", type=int, default=1, help="total number of decoding jobs")
    parser.add_argument("--job", type=int, default=0, help="this job's index, 0-based")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "-m", "asrllm.bin.decode", *argv])

    try:
        if not 0 <= args.job < args.num_jobs:
            raise ValueError(f"--job {args.job} must lie in [0, --num-jobs={args.num_jobs})")
        cfg = load_config(DecodeConfig, args.config)
        tokenizer = load_tokenizer(args.model_dir / "tokenizer")
        searches = {
            name: build_search(scfg, blank_id=tokenizer.blank_id, detokenize=tokenizer.decode)
            for name, scfg in cfg.methods.items()
        }
        utts = job_slice(read_datadir(args.data), args.num_jobs, args.job)
    except (ConfigError, ValueError, OSError) as e:
        log.error("%s", e)
        return 1

    set_name = args.data.name
    part = f"{args.job}-of-{args.num_jobs}"
    out_dirs = {name: args.model_dir / f"decode_{set_name}_{name}" for name in searches}
    if all((d / "parts" / f"{part}.info.json").is_file() for d in out_dirs.values()):
        log.info("job %s of %s is decoded already; skipping", part, set_name)
        return 0
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    device = torch.device(cfg.device)
    model = load_model(args.model_dir, args.checkpoint, device)

    results: dict[str, list[list[NBestEntry]]] = {name: [] for name in searches}
    search_seconds = dict.fromkeys(searches, 0.0)
    encoder_seconds = 0.0
    durations = [u.duration for u in utts]
    for batch_idx in pack_batches(sorted(range(len(utts)), key=durations.__getitem__), durations, cfg.batch_seconds):
        chunk = [utts[i] for i in batch_idx]
        batch = collate(
            [u.id for u in chunk], [read_audio(u.audio, u.id) for u in chunk], [[] for _ in chunk], [u.text for u in chunk]
        ).to(device)
        start = time.perf_counter()
        with torch.inference_mode():
            log_probs, lens = model.log_probs(batch.audio, batch.audio_lens)  # (B, T, V), (B,)
        log_probs = log_probs.float()
        encoder_seconds += time.perf_counter() - start
        for name, search in searches.items():
            start = time.perf_counter()
            results[name].extend(search(log_probs, lens, utt_ids=batch.ids))
            search_seconds[name] += time.perf_counter() - start

    audio_seconds = sum(durations)
    for name, out_dir in out_dirs.items():
        nbest = sorted(results[name], key=lambda entries: entries[0].utt_id)
        prefix = out_dir / "parts" / part
        atomic_write_text(f"{prefix}.hyp.txt", "".join(f"{e[0].utt_id} {e[0].text}\n" for e in nbest))
        write_nbest_jsonl(f"{prefix}.nbest.jsonl", [entry for entries in nbest for entry in entries])
        info = {
            "command": command,
            "method": name,
            "search": dataclasses.asdict(cfg.methods[name]),
            "checkpoint": args.checkpoint,
            "num_params": sum(p.numel() for p in model.parameters()),
            "num_utts": len(utts),
            "audio_seconds": audio_seconds,
            "encoder_seconds": encoder_seconds,
            "search_seconds": search_seconds[name],
            "decode_seconds": encoder_seconds + search_seconds[name],
        }
        atomic_write_text(f"{prefix}.info.json", json.dumps(info, indent=2) + "\n")  # written last: marks the part done
        log.info(
            "%s %s: %d utts, %.1f s audio, RTFx %.0f",
            set_name,
            name,
            len(utts),
            audio_seconds,
            audio_seconds / max(info["decode_seconds"], 1e-9),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
