"""Train a model from a YAML experiment config (stage 3 of the recipes).

    python -m asrllm.bin.train --config conf/train_ctc.yaml --train-data data/train \\
        --valid-data data/dev --tokenizer data/token/char --exp-dir exp/ctc [key.path=value ...]

Run it under `torchrun --nproc_per_node N` for DDP. The YAML has five sections: `model_kind`
(a key of `asrllm.models.registry.MODELS`), `model` (that kind's config; `vocab_size` comes from
the tokenizer), `data` (batching), `trainer` and `optim`. The fully resolved config is written to
`<exp-dir>/config.yaml`, together with a copy of the tokenizer, so that the experiment directory
alone is enough to decode.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from asrllm.config import ConfigError, from_dict, load_yaml, parse_overrides, to_dict
from asrllm.data.datadir import Utterance, read_datadir
from asrllm.data.loader import BatchLoader
from asrllm.data.sampler import BucketingSampler
from asrllm.data.tokenizer import Tokenizer, load_tokenizer
from asrllm.models.registry import MODELS
from asrllm.train import distributed as dist
from asrllm.train.checkpoint import seed_everything
from asrllm.train.config import OptimConfig, TrainerConfig
from asrllm.train.trainer import Trainer

log = logging.getLogger("asrllm.train")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Batching of the training and validation data (`data:` section)."""

    max_batch_seconds: float = 200.0  # padded audio seconds per GLOBAL batch (all ranks together)
    num_buckets: int = 10  # duration buckets: more means less padding, less randomness
    max_duration: float | None = 30.0  # longer training utterances are left out (logged); None keeps all
    num_workers: int = 0  # data-loading worker processes per rank
    seed: int = 0  # batch order is a function of (seed, epoch)


@dataclasses.dataclass(frozen=True)
class TrainExperimentConfig:
    """The whole training YAML. `model` stays a mapping until `model_kind` picks its dataclass."""

    model_kind: str  # key of asrllm.models.registry.MODELS
    model: dict[str, Any]  # that kind's config; vocab_size is filled in from the tokenizer
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)


def resolve_config(path: str | Path, overrides: list[str], tokenizer: Tokenizer) -> tuple[TrainExperimentConfig, Any]:
    """Read the YAML, apply `key.path=value` overrides, fill in the vocabulary; -> (config, model config)."""
    raw = load_yaml(path)
    for dotted, value in parse_overrides(overrides).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    try:
        exp = from_dict(TrainExperimentConfig, raw)
        if exp.model_kind not in MODELS:
            raise ConfigError(f"model_kind: unknown {exp.model_kind!r} (known: {', '.join(sorted(MODELS))})")
        model_raw = dict(exp.model)
        if model_raw.setdefault("vocab_size", tokenizer.vocab_size) != tokenizer.vocab_size:
            raise ConfigError(f"model.vocab_size={model_raw['vocab_size']} but the tokenizer has {tokenizer.vocab_size}")
        model_cfg = from_dict(MODELS[exp.model_kind][0], model_raw, "model")
    except (ConfigError, ValueError) as e:
        raise ConfigError(f"{path}: {e}") from None
    return dataclasses.replace(exp, model=to_dict(model_cfg)), model_cfg


def make_loader(
    utts: list[Utterance], tokenizer: Tokenizer, cfg: DataConfig, train: bool
) -> BatchLoader:
    """Bucketed, shuffled batches for training; sorted, unfiltered batches for validation."""
    sampler = BucketingSampler(
        [u.duration for u in utts],
        max_batch_seconds=cfg.max_batch_seconds,
        num_buckets=cfg.num_buckets,
        seed=cfg.seed,
        shuffle=train,
        max_duration=cfg.max_duration if train else None,
        world_size=dist.world_size(),
    )
    return BatchLoader(
        utts, tokenizer, sampler, rank=dist.rank(), world_size=dist.world_size(), num_workers=cfg.num_workers
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="training YAML")
    parser.add_argument("--train-data", required=True, help="Kaldi-style data dir of the training set")
    parser.add_argument("--valid-data", help="data dir for the validation loss")
    parser.add_argument("--tokenizer", required=True, help="tokenizer dir (data/token/<name>)")
    parser.add_argument("--exp-dir", required=True, help="output directory")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint (default)")
    parser.add_argument("--no-resume", action="store_true", help="refuse to start if checkpoints exist")
    parser.add_argument("overrides", nargs="*", help="key.path=value config overrides")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s [rank {os.environ.get('RANK', '0')}] %(levelname)s %(name)s: %(message)s"
    )

    try:
        tokenizer = load_tokenizer(args.tokenizer)
        overrides = list(args.overrides) + (["trainer.resume=false"] if args.no_resume else [])
        exp, model_cfg = resolve_config(args.config, overrides, tokenizer)
        train_utts = read_datadir(args.train_data)
        valid_utts = read_datadir(args.valid_data) if args.valid_data else None
    except (ConfigError, ValueError, OSError) as e:
        log.error("%s", e)
        return 1

    dist.init_distributed(exp.trainer.device)  # before the loaders, which shard by rank
    exp_dir = Path(args.exp_dir)
    if dist.is_main():
        exp_dir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(args.tokenizer, exp_dir / "tokenizer", dirs_exist_ok=True)
    seed_everything(exp.trainer.seed)  # the initial weights are a function of the seed too
    model = MODELS[exp.model_kind][1](model_cfg)
    log.info("model %s: %.2fM parameters", exp.model_kind, sum(p.numel() for p in model.parameters()) / 1e6)
    trainer = Trainer(
        model,
        make_loader(train_utts, tokenizer, exp.data, train=True),
        make_loader(valid_utts, tokenizer, exp.data, train=False) if valid_utts else None,
        exp.trainer,
        exp.optim,
        exp_dir,
        config_to_save=exp,
    )
    trainer.fit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
