"""Model kinds by name: `model.kind` in a training YAML -> (config dataclass, module class).

One explicit table (STYLE R14); the trainer builds `cls(from_dict(cfg_cls, yaml["model"]))`.
Every model's `forward(batch)` returns `(loss_sum, count, stats)` (docs/interfaces.md).

>>> cfg_cls, model_cls = MODELS["ctc"]
>>> cfg_cls.__name__, model_cls.__name__
('CTCModelConfig', 'CTCModel')
"""

from __future__ import annotations

from torch import nn

from asrllm.models.ctc_model import CTCModel, CTCModelConfig

MODELS: dict[str, tuple[type, type[nn.Module]]] = {
    "ctc": (CTCModelConfig, CTCModel),
}
