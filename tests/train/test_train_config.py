"""TrainerConfig / OptimConfig: YAML loading and validation messages that name the option."""

from __future__ import annotations

import dataclasses
import doctest

import pytest

from asrllm.config import ConfigError, from_dict
from asrllm.train import checkpoint, config, schedule, trainer
from asrllm.train.config import OptimConfig, TrainerConfig


def test_from_yaml_dict() -> None:
    cfg = from_dict(OptimConfig, {"lr": 1, "betas": [0.9, 0.95], "schedule": "one_cycle"})
    assert cfg == OptimConfig(lr=1.0, betas=(0.9, 0.95), schedule="one_cycle")
    with pytest.raises(ConfigError, match="'acum_grad'"):
        from_dict(TrainerConfig, {"acum_grad": 2})
    with pytest.raises(ConfigError, match="amp"):
        from_dict(TrainerConfig, {"amp": "fp16"})


@pytest.mark.parametrize(
    ("cls", "kwargs", "option"),
    [
        (TrainerConfig, {"max_epochs": None, "max_steps": None}, "trainer.max_epochs/trainer.max_steps"),
        (TrainerConfig, {"max_steps": 0}, "trainer.max_steps"),
        (TrainerConfig, {"accum_grad": 0}, "trainer.accum_grad"),
        (TrainerConfig, {"keep_last": 0}, "trainer.keep_last"),
        (TrainerConfig, {"save_every_steps": 0}, "trainer.save_every_steps"),
        (TrainerConfig, {"device": "tpu"}, "trainer.device"),
        (OptimConfig, {"lr": 0.0}, "optim.lr"),
        (OptimConfig, {"betas": (0.9, 1.0)}, "optim.betas"),
        (OptimConfig, {"total_steps": 0}, "optim.total_steps"),
        (OptimConfig, {"min_lr_ratio": 2.0}, "optim.min_lr_ratio"),
    ],
)
def test_invalid_values_name_the_option(cls: type, kwargs: dict[str, object], option: str) -> None:
    with pytest.raises(ValueError, match=f"^{option} "):
        cls(**kwargs)


def test_overrides_are_validated() -> None:
    with pytest.raises(ValueError, match="trainer.accum_grad"):
        dataclasses.replace(TrainerConfig(), accum_grad=-1)


@pytest.mark.parametrize("module", [config, schedule, checkpoint, trainer])
def test_doctests(module: object) -> None:
    assert doctest.testmod(module).failed == 0  # type: ignore[arg-type]


def test_lr_scales_make_parameter_groups_and_a_misspelt_pattern_is_named() -> None:
    import pytest
    import torch

    from asrllm.train.config import OptimConfig
    from asrllm.train.schedule import build_scheduler
    from asrllm.train.trainer import build_optimizer

    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    opt = build_optimizer(model, OptimConfig(lr=1e-3, lr_scales={"1.*": 10.0}, warmup_steps=0))
    lrs = sorted({round(g["lr"], 6) for g in opt.param_groups})
    assert lrs == [0.001, 0.01]
    fast = {id(p) for g in opt.param_groups if round(g["lr"], 6) == 0.01 for p in g["params"]}
    assert fast == {id(p) for p in model[1].parameters()}
    sched = build_scheduler(opt, OptimConfig(lr=1e-3, lr_scales={"1.*": 10.0}, schedule="constant", warmup_steps=0), 10)
    sched.step()
    assert sorted(round(g["lr"], 6) for g in opt.param_groups) == [0.001, 0.001, 0.01, 0.01]  # the schedule keeps the ratio
    with pytest.raises(ValueError, match=r"optim.lr_scales: \['encodr.\*'\] match no trainable parameter"):
        build_optimizer(model, OptimConfig(lr_scales={"encodr.*": 2.0}))
    with pytest.raises(ValueError, match=r"optim.lr_scales\['x'\] must be > 0"):
        OptimConfig(lr_scales={"x": 0.0})
