"""A training experiment: the YAML resolved into its dataclasses, and the exp dir's stage record.

`resolve_config` turns a training YAML (five sections: `model_kind`, `model`, `data`, `trainer`,
`optim`) plus `key.path=value` overrides into a `ResolvedExperiment`. It is library code so that
every CLI, test and benchmark that needs a training config imports it from here, never from
another CLI.

The record. `<exp_dir>/train_inputs.json` (`asrllm.provenance`) holds what the model is made
from: the resolved config flattened to `config.<dotted key>`, less `RUN_OPTIONS` (and, where the
LR schedule does not depend on them, `RUN_LENGTH_OPTIONS`), and the content digests of the train
data (`train_data`), the valid data (`valid_data`) and the AM tokenizer dir (`tokenizer`). Unlike
other stages' records it is written when training STARTS fresh (before the first checkpoint):
training is resumable, so the record means "made from", and how far training got is what the
checkpoints say. Files that a model config names by path (`PATH_FIELDS`: an LLM dir or GGUF file,
an HF tokenizer, `model.am_tokenizer`) are recorded by path AND content digest (`<key>@content`):
a fine-tuning run on the stage 7 export is stale once the export is redone. Hashing costs about
1 s per GB on each re-run of the stage. `prepare_exp_dir` applies the one re-run rule:

    no record, no checkpoints       -> fresh: write the record, train from step 0
    same inputs                     -> resume from the newest checkpoint (a finished run ends at
                                       once and changes nothing)
    different inputs, --force       -> remove `TRAIN_OUTPUTS`, write the new record, train afresh
    different inputs, no --force    -> `StaleOutputError` naming every differing key
    checkpoints but no record       -> as different inputs (made before records existed, or by
                                       hand: nothing says what they were trained on)
    a record but no checkpoint yet  -> nothing was trained from the old inputs: start afresh

Run-length options. `trainer.max_epochs` and `trainer.max_steps` only say where to stop, so a
finished run can be continued for more epochs, or a run stopped early by `max_steps` continued.
But when `optim.total_steps` is null the trainer plans the LR schedule over all steps of the run,
so they also set the schedule's length: a run extended from 8 to 10 epochs would go on with a
schedule it did not start with, and end as a model that neither config describes (the LR would
jump back up). They are therefore left out of the record only where the schedule does not
depend on them (`optim.total_steps` set, or the `constant` schedule, which has no length): then
changing them resumes; otherwise it is a difference like any other (`--force` retrains; to
continue instead, pin `optim.total_steps` from the start).

>>> sorted(RUN_OPTIONS)[:3]
['data.num_workers', 'trainer.device', 'trainer.find_unused_parameters']
>>> RUN_LENGTH_OPTIONS
('trainer.max_epochs', 'trainer.max_steps')
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from asrllm.config import ConfigError, apply_overrides, from_dict, load_yaml, parse_overrides, to_dict
from asrllm.models.registry import MODELS, TrainData
from asrllm.provenance import (
    StaleOutputError,
    datadir_digest,
    decide,
    file_digest,
    flatten,
    read_record,
    without_defaults,
    write_record,
)
from asrllm.train.checkpoint import latest_checkpoint
from asrllm.train.config import InitConfig, OptimConfig, TrainerConfig

logger = logging.getLogger(__name__)

RECORD_FILE = "train_inputs.json"

# Options that do not change the trained weights, left out of the record (keys below `config.`).
# Each one only says how long to run, where, or what to write for people to look at:
RUN_OPTIONS: tuple[str, ...] = (
    "trainer.resume",  # whether to continue: the rule above decides
    "trainer.device",  # where; CPU and GPU differ in float rounding only
    "trainer.num_threads",  # CPU threads; float rounding only
    "trainer.find_unused_parameters",  # DDP bookkeeping
    "trainer.log_every_steps",  # what is logged (logging draws no random numbers)
    "trainer.valid_every_steps",  # validation runs in eval mode and draws no random numbers
    "trainer.save_every_steps",  # which states are checkpointed (saving draws no random numbers)
    "trainer.keep_last",  # which checkpoints are kept
    "trainer.keep_epochs",  # likewise
    "trainer.progress_bar",  # terminal output
    "trainer.tensorboard",  # TensorBoard events
    "trainer.plot",  # learning_curve.png
    "data.num_workers",  # prefetch only: batches and their order do not depend on it (asrllm.data.loader)
)
# Where to stop; left out of the record too unless they set the LR schedule's length (module docstring).
RUN_LENGTH_OPTIONS: tuple[str, ...] = ("trainer.max_epochs", "trainer.max_steps")

# What training writes into the exp dir (names or glob patterns), removed by --force when the inputs
# changed. Not `logs/` (the running job's own log) nor decode dirs (their records find them stale).
TRAIN_OUTPUTS: tuple[str, ...] = (
    "checkpoints",  # first: a crash while removing leaves the old record, so the rule still holds
    "config.yaml",
    "train_log.jsonl",
    "tensorboard",
    "learning_curve.png",
    "model_avg.safetensors",  # asrllm.bin.average_checkpoints, and its record
    "model_avg.inputs.json",
    "tokenizer",  # the AM tokenizer copy (TrainData.save_assets)
    "filtered_utts.*.txt",  # utterances the loaders left out (asrllm.data.loader)
    RECORD_FILE,  # last
)


@dataclasses.dataclass(frozen=True)
class TrainExperimentConfig:
    """The whole training YAML. `model` and `data` stay mappings until `model_kind` picks their dataclasses."""

    model_kind: str  # key of asrllm.models.registry.MODELS
    model: dict[str, Any]  # that kind's config (e.g. vocab_size is filled in from the AM tokenizer)
    data: dict[str, Any] = dataclasses.field(default_factory=dict)  # batching: the kind's train_data.config_cls
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    init: InitConfig = dataclasses.field(default_factory=InitConfig)  # initial weights from a trained model


@dataclasses.dataclass(frozen=True)
class ResolvedExperiment:
    """A training YAML with every section turned into its dataclass, and the kind's data pipeline."""

    config: TrainExperimentConfig  # fully resolved (model and data as plain dicts), as saved in the exp dir
    model: Any  # the kind's model config dataclass
    data: Any  # the kind's data config dataclass (`data:` section)
    train_data: TrainData  # reads data paths and builds loaders for this kind of model
    model_cls: type[torch.nn.Module]


def resolve_config(path: str | Path, overrides: list[str], tokenizer_dir: str | None) -> ResolvedExperiment:
    """Read the YAML, apply `key.path=value` overrides, let the kind's data fill in the model config.

    Errors are `ConfigError`s that name the file and the key.
    """
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


def not_recorded(config: TrainExperimentConfig) -> tuple[str, ...]:
    """The options of `config` that the record leaves out (module docstring).

    >>> "trainer.max_epochs" in not_recorded(TrainExperimentConfig("ctc", {}))  # planned LR schedule
    False
    >>> "trainer.max_epochs" in not_recorded(TrainExperimentConfig("ctc", {}, optim=OptimConfig(total_steps=900)))
    True
    """
    fixed_schedule = config.optim.total_steps is not None or config.optim.schedule == "constant"
    return RUN_OPTIONS + (RUN_LENGTH_OPTIONS if fixed_schedule else ())


PATH_FIELDS = ("source", "gguf", "tokenizer", "am_tokenizer")  # model config leaves that may name local files


def path_digests(model: dict[str, Any]) -> dict[str, str]:
    """`config.model.<key>@content` -> digest, for the `PATH_FIELDS` of a model config that name an
    existing local file or dir (a hub id or a packaged GGUF name is recorded by its name only)."""
    out = {}
    for key, value in flatten(model, "config.model").items():
        if key.rsplit(".", 1)[-1] in PATH_FIELDS and isinstance(value, str) and Path(value).exists():
            out[f"{key}@content"] = file_digest(value)
    return out


def training_inputs(
    config: TrainExperimentConfig,
    train_data: str | Path,  # data dir or text file
    valid_data: str | Path | None,
    tokenizer_dir: str | Path | None,
) -> dict[str, Any]:
    """The inputs of the training record (module docstring); errors name the missing path."""
    left_out = not_recorded(config)
    kept = {k: v for k, v in flatten(config, "config").items() if k.removeprefix("config.") not in left_out}
    if config.init == InitConfig():  # random init: recorded as before the init section existed
        kept = {k: v for k, v in kept.items() if not k.startswith("config.init.")}
    elif config.init.include == ["*"]:  # the default: recorded as before the option existed
        kept = {k: v for k, v in kept.items() if not k.startswith("config.init.include")}
    kept = without_defaults(kept, {"config.optim.lr_scales": {}, "config.data.nonspeech": []})  # likewise
    init = config.init.from_model
    return {
        **kept,
        **path_digests(config.model),
        **({"config.init.from_model@content": file_digest(init)} if init is not None else {}),
        "train_data": datadir_digest(train_data),
        "valid_data": datadir_digest(valid_data) if valid_data is not None else None,
        "tokenizer": file_digest(tokenizer_dir) if tokenizer_dir is not None else None,
    }


def prepare_exp_dir(exp_dir: str | Path, inputs: dict[str, Any], force: bool) -> bool:
    """Apply the re-run rule (module docstring) to `exp_dir` before anything is written into it.

    Returns True when training starts afresh (the record has just been written), False when it
    resumes (or finds the run finished). Raises `StaleOutputError` when the inputs differ and not
    `force`. Call it on one process only, holding the exp dir's lock.
    """
    exp_dir = Path(exp_dir)
    record = exp_dir / RECORD_FILE
    trained = latest_checkpoint(exp_dir / "checkpoints") is not None
    old = read_record(record)
    what = f"the model in {exp_dir}"
    if trained and old is None:
        if not force:
            raise StaleOutputError(
                f"{what} has checkpoints but no record of what they were trained from ({record} is missing); "
                "re-run with --force true to train it again, or use another exp dir"
            )
        logger.warning("%s has checkpoints but no record of their inputs: training again (--force)", what)
    elif trained and not decide(record, inputs, force, what):
        return False  # same inputs: resume (or find the run finished)
    # here: nothing trained yet (a first run, or one stopped before its first checkpoint), or --force
    remove_training_outputs(exp_dir)
    write_record(record, inputs)
    return True


def remove_training_outputs(exp_dir: Path) -> None:
    """Delete what `TRAIN_OUTPUTS` names in `exp_dir`, in that order."""
    entries = sorted(exp_dir.iterdir()) if exp_dir.is_dir() else []
    for pattern in TRAIN_OUTPUTS:
        for path in entries:
            if fnmatch.fnmatchcase(path.name, pattern) and (path.exists() or path.is_symlink()):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                logger.info("removed %s", path)
