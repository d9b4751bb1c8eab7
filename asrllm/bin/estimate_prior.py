"""Estimate the CTC label prior of a trained acoustic model on a data set (usually its training data).

    python -m asrllm.bin.estimate_prior --model-dir exp/ctc --data data/train [--checkpoint average] \\
        [--out exp/ctc/prior.safetensors] [--batch-seconds 200] [--force]

Writes the mean CTC posterior over every valid frame (asrllm.models.ctc_prior) to `--out`
(default `<model-dir>/prior.safetensors`), then its stage record `<out>.inputs.json`
(asrllm.provenance: the model as decoded and the data's digest). Decoding subtracts it with
`fusion.prior_scale` of a decode config. A prior estimated from the same model and data is
skipped; from other ones it is an error unless `--force`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

from asrllm.config import ConfigError
from asrllm.data.datadir import DataError, read_datadir
from asrllm.data.loader import inference_batches
from asrllm.locking import DirLock, LockedError
from asrllm.models.ctc_prior import estimate_ctc_prior, save_prior
from asrllm.models.trained import load_trained_model, model_record
from asrllm.provenance import StaleOutputError, datadir_digest, decide, write_record

log = logging.getLogger("asrllm.estimate_prior")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", required=True, type=Path, help="experiment dir of the trained CTC model")
    parser.add_argument("--data", required=True, type=Path, help="data dir whose frames are averaged")
    parser.add_argument("--checkpoint", default="average", help="average | latest | step_<N> dir name")
    parser.add_argument("--out", type=Path, help="prior file (default: <model-dir>/prior.safetensors)")
    parser.add_argument("--batch-seconds", type=float, default=200.0, help="padded audio seconds per batch")
    parser.add_argument("--device", default="cpu", help="cpu | cuda[:i]")
    parser.add_argument("--force", action="store_true", help="re-estimate a prior made from another model or data")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = args.out or args.model_dir / "prior.safetensors"
    record = out.with_name(out.name + ".inputs.json")
    try:
        inputs = {**model_record(args.model_dir, args.checkpoint), "data": datadir_digest(args.data)}
        if not decide(record, inputs, args.force, f"prior {out}"):
            log.info("%s: estimated already from the same model and data; skipping", out)
            return 0
        with DirLock(out.parent, "prior estimation", f".{out.name}.lock"):
            record.unlink(missing_ok=True)
            utts = read_datadir(args.data)
            device = torch.device(args.device)
            model = load_trained_model(args.model_dir, args.checkpoint, device)
            start = time.perf_counter()
            batches = ((b.audio.to(device), b.audio_lens.to(device)) for b in inference_batches(utts, args.batch_seconds))
            probs, frames = estimate_ctc_prior(model, batches)
            tmp = out.with_name(f".{out.name}.tmp")  # written whole, then renamed: never half a prior
            save_prior(tmp, probs.cpu(), frames, len(utts))
            tmp.replace(out)
            write_record(record, inputs, num_frames=frames, num_utts=len(utts),
                         seconds=round(time.perf_counter() - start, 1))
    except (ConfigError, DataError, ValueError, OSError, LockedError, StaleOutputError) as e:
        log.error("%s", e)
        return 1
    top = probs.topk(min(3, probs.numel()))
    log.info("%s: prior over %d frames of %d utterances; largest %s", out, frames, len(utts),
             ", ".join(f"{i}: {p:.3f}" for p, i in zip(top.values.tolist(), top.indices.tolist())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
