"""A trained model from its experiment dir: `config.yaml` (written by the train CLI) + chosen weights.

The one way every stage after training (decoding, perplexity, LLM export) gets a model back:

    model = load_trained_model(Path("exp/ctc"), "average", torch.device("cpu"))

`checkpoint` names the weights: "average" (`model_avg.safetensors`, asrllm.bin.average_checkpoints),
"latest" (the newest complete checkpoint) or a checkpoint dir name (`step_00001000`).
`weights_file` resolves that name without building the model, so a stage can hash the weights
(asrllm.provenance) before deciding whether it has anything to do.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from asrllm.config import ConfigError, from_dict, load_yaml
from asrllm.models.registry import MODELS
from asrllm.provenance import file_digest, flatten
from asrllm.train.checkpoint import MODEL_FILE, latest_checkpoint, load_checkpoint_state_dict, load_model_state

logger = logging.getLogger(__name__)

AVERAGE_FILE = "model_avg.safetensors"


def weights_file(model_dir: Path, checkpoint: str) -> Path:
    """The safetensors file that `checkpoint` names in `model_dir`; a missing one is a FileNotFoundError."""
    if checkpoint == "average":
        weights = model_dir / AVERAGE_FILE
    elif checkpoint == "latest":
        latest = latest_checkpoint(model_dir / "checkpoints")
        if latest is None:
            raise FileNotFoundError(f"--checkpoint latest: no complete checkpoint under {model_dir / 'checkpoints'}")
        weights = latest / MODEL_FILE
    else:
        weights = model_dir / "checkpoints" / checkpoint / MODEL_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"--checkpoint {checkpoint}: {weights} does not exist")
    return weights


def model_record(model_dir: Path, checkpoint: str) -> dict[str, Any]:
    """The model as a stage input (asrllm.provenance): its kind and architecture (for a readable
    difference), the digests of the weights `checkpoint` names and of its tokenizer, and that name."""
    exp = load_yaml(model_dir / "config.yaml")
    tokenizer = model_dir / "tokenizer"
    return {
        "model_kind": exp.get("model_kind"),
        **flatten(exp.get("model", {}), "model"),
        "model.weights": file_digest(weights_file(model_dir, checkpoint)),
        "model.tokenizer": file_digest(tokenizer) if tokenizer.exists() else None,
        "checkpoint": checkpoint,
    }


def load_trained_model(model_dir: Path, checkpoint: str, device: torch.device) -> torch.nn.Module:
    """The model of `model_dir/config.yaml` with the weights `checkpoint` names, in eval mode on `device`."""
    exp = load_yaml(model_dir / "config.yaml")
    kind = exp.get("model_kind")
    if kind not in MODELS:
        raise ConfigError(f"{model_dir / 'config.yaml'}: model_kind {kind!r} is not one of {sorted(MODELS)}")
    cfg_cls, model_cls = MODELS[kind]
    model = model_cls(from_dict(cfg_cls, exp["model"], "model"))
    weights = weights_file(model_dir, checkpoint)
    load_checkpoint_state_dict(model, load_model_state(weights), weights)
    logger.info("loaded %s (%s)", weights, kind)
    return model.to(device).eval()


def model_kind(model_dir: Path) -> str | None:
    """The `model_kind` of `model_dir/config.yaml` (None without one: a model not trained here)."""
    config = model_dir / "config.yaml"
    return load_yaml(config).get("model_kind") if config.is_file() else None


def read_train_log(model_dir: Path) -> tuple[str | None, float | None]:
    """(command, training seconds) of the model in `model_dir`, from the trainer's own
    `train_log.jsonl` (asrllm.train.plot describes it), not from a job runner's log, which a re-run
    that finds the model trained already would overwrite. The command is that of the last run that
    trained; the seconds sum every run's time from its start to its last record (a resumed run's
    time counts once per run, the gap between a crash and the restart not at all). Either is None
    where the log lacks it (no log; seconds: the run has not finished)."""
    path = model_dir / "train_log.jsonl"
    if not path.is_file():
        return None, None
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    command, seconds, start, last = None, 0.0, None, None
    for r in records:
        if r.get("event") == "start":
            if start is not None and last is not None:
                seconds += last - start
            command = r.get("command") or command
            start = last = r.get("time")
        elif "time" in r:
            last = r["time"]
    if start is not None and last is not None:
        seconds += last - start
    finished = bool(records) and records[-1].get("event") == "end"
    return command, (round(seconds, 1) if finished else None)
