"""Train a model from a YAML experiment config (stage 3 of the recipes).

    python -m asrllm.bin.train --config conf/train_ctc.yaml --train-data data/train \\
        --valid-data data/dev --tokenizer data/token/char --exp-dir exp/ctc [key.path=value ...]
    python -m asrllm.bin.train --config conf/lm/tiny_llm_pretrain.yaml --train-data data/lm \\
        --valid-data data/dev --exp-dir exp/tiny_llm_pretrain [key.path=value ...]

Run it under `torchrun --nproc_per_node N` for DDP. The YAML has five sections: `model_kind`
(a key of `asrllm.models.registry.MODELS`), `model` (that kind's config), `data` (batching),
`trainer` and `optim` (`asrllm.train.experiment`). What the data paths hold and how they become
batches is the model class's `train_data` (`asrllm.models.registry.TrainData`), so this CLI has no
per-kind code: acoustic models read Kaldi data dirs with the AM tokenizer of `--tokenizer` (which
also sets `model.vocab_size`); language models read text files or data dirs with their own
tokenizer. The fully resolved config is written to `<exp-dir>/config.yaml`, together with what the
kind needs besides (the AM tokenizer), so that the experiment directory alone is enough to decode.

Re-runs follow the stage-record rule (`asrllm.train.experiment`): `<exp-dir>/train_inputs.json`
says what the model is made from; the same inputs resume (a finished run changes nothing),
different ones stop with an error naming them unless `--force`, which trains afresh. The whole
run holds the exp dir's lock: a second trainer on it refuses with the PID of the first. Nothing
is written into the exp dir before these checks.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from asrllm.config import ConfigError, keyed
from asrllm.data.datadir import DataError
from asrllm.locking import DirLock, LockedError
from asrllm.provenance import StaleOutputError
from asrllm.train import distributed as dist
from asrllm.train.checkpoint import init_from_model, seed_everything
from asrllm.train.experiment import ResolvedExperiment, prepare_exp_dir, resolve_config, training_inputs
from asrllm.train.trainer import Trainer

log = logging.getLogger("asrllm.train")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="training YAML")
    parser.add_argument("--train-data", required=True, help="training data: a data dir (or, for LMs, a text file)")
    parser.add_argument("--valid-data", help="data for the validation loss, like --train-data")
    parser.add_argument("--tokenizer", help="AM tokenizer dir (data/token/<name>) of models that need one")
    parser.add_argument("--exp-dir", required=True, help="output directory")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint (default)")
    parser.add_argument("--no-resume", action="store_true", help="refuse to start if checkpoints exist")
    parser.add_argument(
        "--force", action="store_true", help="if the exp dir was trained from other inputs, remove its outputs and train afresh"
    )
    parser.add_argument("overrides", nargs="*", help="key.path=value config overrides")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s [rank {os.environ.get('RANK', '0')}] %(levelname)s %(name)s: %(message)s"
    )

    try:
        overrides = list(args.overrides) + (["trainer.resume=false"] if args.no_resume else [])
        exp = resolve_config(args.config, overrides, args.tokenizer)
        train_items = exp.train_data.read(args.train_data)
        valid_items = exp.train_data.read(args.valid_data) if args.valid_data else None
        inputs = training_inputs(exp.config, args.train_data, args.valid_data, args.tokenizer)
    except (ConfigError, ValueError, OSError) as e:
        log.error("%s", e)
        return 1

    cfg = exp.config
    dist.init_distributed(cfg.trainer.device)  # before the loaders, which shard by rank
    exp_dir = Path(args.exp_dir)
    lock = DirLock(exp_dir, "training") if dist.is_main() else None
    try:
        if lock is not None:
            lock.acquire()  # held from the record check to the end of training
            prepare_exp_dir(exp_dir, inputs, args.force)
        dist.barrier()  # the other ranks read the exp dir only after rank 0 has checked it
        return _train(exp, train_items, valid_items, exp_dir, args.config, lock, _command(argv))
    except (LockedError, StaleOutputError) as e:
        log.error("%s", e)
        return 1
    finally:
        if lock is not None:
            lock.release()


def _command(argv: list[str] | None) -> str:
    """This job's command line, as train_log.jsonl records it (and RESULTS.md shows it)."""
    launcher = ["python"] if dist.world_size() == 1 else ["torchrun", "--nproc_per_node", str(dist.world_size())]
    return shlex.join([*launcher, "-m", "asrllm.bin.train", *(sys.argv[1:] if argv is None else argv)])


def _train(
    exp: ResolvedExperiment, train_items: list[Any], valid_items: list[Any] | None, exp_dir: Path, config: str,
    lock: DirLock | None, command: str,
) -> int:
    """Build the model and loaders and fit (the exp dir is checked and locked)."""
    cfg = exp.config
    seed_everything(cfg.trainer.seed)  # the initial weights are a function of the seed too
    try:
        model = exp.model_cls(exp.model)
    except ConfigError as e:  # found while building (e.g. a missing model.llm.source): name file and key
        log.error("%s: %s", config, keyed(e, exp.model, "model"))
        return 1
    except OSError as e:  # a file the model config names is missing or unreadable (e.g. an LLM's tokenizer)
        log.error("%s: model: %s", config, e)
        return 1
    log.info("model %s: %.2fM parameters", cfg.model_kind, sum(p.numel() for p in model.parameters()) / 1e6)
    if cfg.init.from_model is not None:  # a resumed run then loads its own checkpoint over these
        try:
            copied, excluded = init_from_model(model, cfg.init.from_model, cfg.init.exclude, cfg.init.include)
        except (ValueError, OSError) as e:
            log.error("%s: %s", config, e)
            return 1
        log.info("initialised %d weights from %s (%d left as built)", copied, cfg.init.from_model, excluded)
    rank, world_size = dist.rank(), dist.world_size()
    try:  # the data checks (filtering, unknown characters) and the resume check name what is wrong
        train_loader = exp.train_data.loader(train_items, model, exp.data, True, rank, world_size, report_dir=exp_dir)
        valid_loader = (
            exp.train_data.loader(valid_items, model, exp.data, False, rank, world_size, report_dir=exp_dir)
            if valid_items else None
        )
        trainer = Trainer(
            model, train_loader, valid_loader, cfg.trainer, cfg.optim, exp_dir,
            config_to_save=cfg, save_assets=exp.train_data.save_assets, exp_lock=lock, command=command,
        )
        trainer.fit()
    except DataError as e:
        log.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
