"""Average the weights of an experiment's newest or best checkpoints into one safetensors file.

    python -m asrllm.bin.average_checkpoints --exp-dir exp/ctc --last 5
    python -m asrllm.bin.average_checkpoints --exp-dir exp/ctc --best 5 --out exp/ctc/model_best5.safetensors

`--best` ranks checkpoints by the validation loss the trainer recorded at their step (every
epoch end, and every `valid_every_steps`). With fewer checkpoints than asked, the available ones
are averaged and a warning says so.

Stage record (`asrllm.provenance`): `<out stem>.inputs.json` next to the output
(`model_avg.inputs.json` by default) holds the names and content digests of the averaged
checkpoints' weights. The same checkpoints again: the output is up to date and nothing is done.
Other checkpoints (training went on, or was redone): the average is made again, WITHOUT needing
`--force`, unlike the stages whose outputs are expensive or hand-tuned: the average is a derived
file, a deterministic function of checkpoints that carry their own record (the trainer's
`train_inputs.json`), so remaking it can never lose anything, while keeping an average of
checkpoints that no longer exist would pair decoding with a model that training no longer
describes. The record is written after the output is in place; a crash in between only means
the next run averages again.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from asrllm.provenance import file_digest, read_record, write_record
from asrllm.train.checkpoint import MODEL_FILE, average_checkpoints, best_checkpoints, list_checkpoints, save_model_state

logger = logging.getLogger("asrllm.bin.average_checkpoints")


def record_path(out: Path) -> Path:
    """`model_avg.inputs.json` for `model_avg.safetensors`.

    >>> record_path(Path("exp/am/model_best5.safetensors")).as_posix()
    'exp/am/model_best5.inputs.json'
    """
    return out.with_name(f"{out.name.removesuffix('.safetensors')}.inputs.json")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp-dir", type=Path, required=True, help="experiment directory (holds checkpoints/)")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--last", type=int, metavar="N", help="average the N newest checkpoints")
    which.add_argument("--best", type=int, metavar="N", help="average the N checkpoints with the lowest valid loss")
    parser.add_argument("--out", type=Path, help="output file (default: EXP_DIR/model_avg.safetensors)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    root = args.exp_dir / "checkpoints"
    wanted = args.last if args.last is not None else args.best
    if wanted < 1:
        parser.error(f"--last/--best must be >= 1, got {wanted}")
    paths = list_checkpoints(root)[-wanted:] if args.last is not None else best_checkpoints(root, wanted)
    if not paths:
        parser.error(f"no complete checkpoints (with a valid loss, for --best) under {root}")
    if len(paths) < wanted:
        logger.warning("only %d checkpoints available, %d asked for", len(paths), wanted)
    out = args.out or args.exp_dir / "model_avg.safetensors"
    record = record_path(out)
    inputs = {"checkpoints": [p.name for p in paths], **{f"weights.{p.name}": file_digest(p / MODEL_FILE) for p in paths}}
    if out.is_file() and read_record(record) == inputs:
        logger.info("%s: averaged already from %s; nothing to do", out, ", ".join(p.name for p in paths))
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    save_model_state(average_checkpoints(paths), tmp)
    tmp.replace(out)  # never leave a half-written model where decoding would pick it up
    write_record(record, inputs)
    logger.info("averaged %s -> %s", ", ".join(p.name for p in paths), out)


if __name__ == "__main__":
    main()
