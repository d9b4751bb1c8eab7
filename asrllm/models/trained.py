"""A trained model from its experiment dir: `config.yaml` (written by the train CLI) + chosen weights.

The one way every stage after training (decoding, perplexity, LLM export) gets a model back:

    model = load_trained_model(Path("exp/ctc"), "average", torch.device("cpu"))

`checkpoint` names the weights: "average" (`model_avg.safetensors`, asrllm.bin.average_checkpoints),
"latest" (the newest complete checkpoint) or a checkpoint dir name (`step_00001000`).
`weights_file` resolves that name without building the model, so a stage can hash the weights
(asrllm.provenance) before deciding whether it has anything to do.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from asrllm.config import ConfigError, from_dict, load_yaml
from asrllm.models.registry import MODELS
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
