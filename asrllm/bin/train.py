"""Train a model from a YAML experiment config (stage 3 of the recipes).

    python -m asrllm.bin.train --config conf/train_ctc.yaml --train-data data/train \\
        --valid-data data/dev --tokenizer data/token/char --exp-dir exp/ctc [key.path=value ...]
    python -m asrllm.bin.train --config conf/lm/tiny_llm_pretrain.yaml --train-data data/lm \\
        --valid-data data/dev --exp-dir exp/tiny_llm_pretrain [key.path=value ...]

Run it under `torchrun --nproc_per_node N` for DDP. The YAML has five sections: `model_kind`
(a key of `asrllm.models.registry.MODELS`), `model` (that kind's config), `data` (batching),
`trainer` and `optim`. What the data paths hold and how they become batches is the model class's
`train_data` (`asrllm.models.registry.TrainData`), so this CLI has no per-kind code: acoustic
models read Kaldi data dirs with the AM tokenizer of `--tokenizer` (which also sets
`model.vocab_size`); language models read text files or data dirs with their own tokenizer. The
fully resolved config is written to `<exp-dir>/config.yaml`, together with what the kind needs
besides (the AM tokenizer), so that the experiment directory alone is enough to decode.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import Any

import torch

from asrllm.config import ConfigError, apply_overrides, from_dict, keyed, load_yaml, parse_overrides, to_dict
from asrllm.models.registry import MODELS, TrainData
from asrllm.train import distributed as dist
from asrllm.train.checkpoint import seed_everything
from asrllm.train.config import OptimConfig, TrainerConfig
from asrllm.train.trainer import Trainer

log = logging.getLogger("asrllm.train")


@dataclasses.dataclass(frozen=True)
class TrainExperimentConfig:
    """The whole training YAML. `model` and `data` stay mappings until `model_kind` picks their dataclasses."""

    model_kind: str  # key of asrllm.models.registry.MODELS
    model: dict[str, Any]  # that kind's config (e.g. vocab_size is filled in from the AM tokenizer)
    data: dict[str, Any] = dataclasses.field(default_factory=dict)  # batching: the kind's train_data.config_cls
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)


@dataclasses.dataclass(frozen=True)
class ResolvedExperiment:
    """A training YAML with every section turned into its dataclass, and the kind's data pipeline."""

    config: TrainExperimentConfig  # fully resolved (model and data as plain dicts), as saved in the exp dir
    model: Any  # the kind's model config dataclass
    data: Any  # the kind's data config dataclass (`data:` section)
    train_data: TrainData  # reads data paths and builds loaders for this kind of model
    model_cls: type[torch.nn.Module]


def resolve_config(path: str | Path, overrides: list[str], tokenizer_dir: str | None) -> ResolvedExperiment:
    """Read the YAML, apply `key.path=value` overrides, let the kind's data fill in the model config."""
    raw = load_yaml(path)
    apply_overrides(raw, parse_overrides(overrides), path)
    try:
        exp = from_dict(TrainExperimentConfig, raw)
        if exp.model_kind not in MODELS:
            raise ConfigError(f"model_kind: unknown {exp.model_kind!r} (known: {', '.join(sorted(MODELS))})")
        cfg_cls, model_cls = MODELS[exp.model_kind]
        train_data: TrainData = model_cls.train_data(tokenizer_dir)  # type: ignore[attr-defined]
        model_cfg = from_dict(cfg_cls, train_data.complete_model_config(dict(exp.model)), "model")
        data_cfg = from_dict(train_data.config_cls, exp.data, "data")
    except (ConfigError, ValueError) as e:
        raise ConfigError(f"{path}: {e}") from None
    config = dataclasses.replace(exp, model=to_dict(model_cfg), data=to_dict(data_cfg))
    return ResolvedExperiment(config, model_cfg, data_cfg, train_data, model_cls)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="training YAML")
    parser.add_argument("--train-data", required=True, help="training data: a data dir (or, for LMs, a text file)")
    parser.add_argument("--valid-data", help="data for the validation loss, like --train-data")
    parser.add_argument("--tokenizer", help="AM tokenizer dir (data/token/<name>) of models that need one")
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
        overrides = list(args.overrides) + (["trainer.resume=false"] if args.no_resume else [])
        exp = resolve_config(args.config, overrides, args.tokenizer)
        train_items = exp.train_data.read(args.train_data)
        valid_items = exp.train_data.read(args.valid_data) if args.valid_data else None
    except (ConfigError, ValueError, OSError) as e:
        log.error("%s", e)
        return 1

    cfg = exp.config
    dist.init_distributed(cfg.trainer.device)  # before the loaders, which shard by rank
    exp_dir = Path(args.exp_dir)
    if dist.is_main():
        exp_dir.mkdir(parents=True, exist_ok=True)
        exp.train_data.save_assets(exp_dir)
    seed_everything(cfg.trainer.seed)  # the initial weights are a function of the seed too
    try:
        model = exp.model_cls(exp.model)
    except ConfigError as e:  # found while building (e.g. a missing model.llm.source): name file and key
        log.error("%s: %s", args.config, keyed(e, exp.model, "model"))
        return 1
    log.info("model %s: %.2fM parameters", cfg.model_kind, sum(p.numel() for p in model.parameters()) / 1e6)
    rank, world_size = dist.rank(), dist.world_size()
    trainer = Trainer(
        model,
        exp.train_data.loader(train_items, model, exp.data, True, rank, world_size),
        exp.train_data.loader(valid_items, model, exp.data, False, rank, world_size) if valid_items else None,
        cfg.trainer,
        cfg.optim,
        exp_dir,
        config_to_save=cfg,
    )
    trainer.fit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
