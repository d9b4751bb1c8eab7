"""Export the LLM of a trained language model (model_kind lm) as a `CausalLM.save` directory.

    python -m asrllm.bin.export_llm --model-dir exp/lm_tiny_pretrain --out-dir exp/lm_tiny_pretrain/llm \\
        [--checkpoint latest]

Writes `CausalLM.save(out_dir)` (asrllm.models.llm): `llm.yaml`, `model/` (an HF model dir),
`tokenizer/`. LoRA updates are merged into the base weights first, so `model/` is a complete
model. `CausalLM.load(out_dir)` reads the export back for scoring; another LM config starts
from it as a pre-trained LLM with `llm.source: <out_dir>` (how mini_synth fine-tunes its tiny LLM).
`out_dir/inputs.json` is the stage record (asrllm.provenance: `model_record`, the LM's config and the
exported weights' digest): an export from the same weights is skipped, from other weights it is an error
unless `--force`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from asrllm.config import ConfigError
from asrllm.models.lm_model import LMModel
from asrllm.models.trained import load_trained_model, model_record
from asrllm.provenance import RECORD_FILE, decide, write_record

log = logging.getLogger("asrllm.export_llm")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", required=True, type=Path, help="exp dir of the trained LM")
    parser.add_argument("--out-dir", required=True, type=Path, help="where the CausalLM.save dir is written")
    parser.add_argument("--checkpoint", default="latest", help="latest | average | step_<N> dir name")
    parser.add_argument("--force", action="store_true", help="re-export if the dir was made from other weights")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    record = args.out_dir / RECORD_FILE
    try:
        inputs = model_record(args.model_dir, args.checkpoint)
        if not decide(record, inputs, args.force, f"LLM export {args.out_dir}"):
            log.info("%s: exported already from the same weights; skipping", args.out_dir)
            return 0
        record.unlink(missing_ok=True)
        model = load_trained_model(args.model_dir, args.checkpoint, torch.device("cpu"))
        if not isinstance(model, LMModel):
            raise ConfigError(f"{args.model_dir}: {type(model).__name__} is not a language model (model_kind lm)")
    except (ConfigError, ValueError, OSError, RuntimeError) as e:
        log.error("%s", e)
        return 1
    model.llm.merged().save(args.out_dir)
    write_record(record, inputs)
    log.info("exported the LLM of %s (%s) to %s", args.model_dir, args.checkpoint, args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
