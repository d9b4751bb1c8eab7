"""Model kinds by name: `model_kind` in a training YAML -> (config dataclass, module class).

One explicit table (STYLE R14); the train CLI builds `cls(from_dict(cfg_cls, yaml["model"]))`.
Every model's `forward(batch)` returns `(loss_sum, count, stats)` (docs/interfaces.md), and its
class attribute `train_data` says where its batches come from (`TrainData`, below): the train CLI
asks it, never the kind's name.

>>> cfg_cls, model_cls = MODELS["ctc"]
>>> cfg_cls.__name__, model_cls.__name__, model_cls.train_data.__name__
('CTCModelConfig', 'CTCModel', 'AudioData')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Protocol

from torch import nn

from asrllm.models.aed import AED, AEDConfig
from asrllm.models.ctc_model import CTCModel, CTCModelConfig
from asrllm.models.lm_model import LMModel, LMModelConfig
from asrllm.models.speech_llm import SpeechLLM, SpeechLLMConfig


class TrainData(Protocol):
    """How a model kind's training data becomes the trainer's loaders (`asrllm.data.loader.AudioData`,
    `asrllm.data.text.TextData`). Built with the train CLI's `--tokenizer` (None when not given)."""

    config_cls: ClassVar[type]  # dataclass of the training YAML's `data:` section

    def __init__(self, tokenizer_dir: str | None) -> None: ...

    def complete_model_config(self, model: dict[str, Any]) -> dict[str, Any]:
        """The `model:` section with what the data decides filled in (e.g. the vocabulary size) (required)."""
        ...

    def read(self, path: str) -> list[Any]:
        """The items of a data path (`--train-data`, `--valid-data`); errors name the item (required)."""
        ...

    def loader(self, items: list[Any], model: nn.Module, cfg: Any, train: bool, rank: int, world_size: int) -> Any:
        """A `asrllm.train.trainer.TrainLoader` over `items`: shuffled when `train` (required)."""
        ...

    def save_assets(self, exp_dir: Path) -> None:
        """Copy into the experiment dir what decoding needs besides config and weights (required)."""
        ...


MODELS: dict[str, tuple[type, type[nn.Module]]] = {
    "aed": (AEDConfig, AED),
    "ctc": (CTCModelConfig, CTCModel),
    "lm": (LMModelConfig, LMModel),
    "speech_llm": (SpeechLLMConfig, SpeechLLM),
}
