"""Learning-rate schedules as pure functions of the optimizer step.

`step` counts optimizer updates from 0: `lr_at(step, ...)` is the learning rate used by update
number `step + 1`. Each schedule is a pure function with its exact formula in the docstring;
`build_scheduler` wraps the configured one in a `LambdaLR` so that its position is saved and
restored with the optimizer. The LambdaLR holds a plain closure, so its state_dict carries only
numbers (`torch.load(weights_only=True)` reads it) and the formula is always rebuilt from config.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from asrllm.train.config import OptimConfig


def warmup_cosine(step: int, peak: float, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up to `peak`, then half-cosine decay to `peak * min_ratio` at step `total`.

    lr = peak * (step + 1) / warmup                                   for step < warmup
    lr = floor + (peak - floor) * (1 + cos(pi * p)) / 2                otherwise, with
         floor = peak * min_ratio, p = min(1, (step - warmup) / max(1, total - warmup))

    >>> [round(warmup_cosine(s, 1.0, 2, 6, 0.0), 3) for s in range(7)]
    [0.5, 1.0, 1.0, 0.854, 0.5, 0.146, 0.0]
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    floor = peak * min_ratio
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (peak - floor) * (1 + math.cos(math.pi * progress)) / 2


def one_cycle(step: int, peak: float, rise: int, total: int, div_factor: float, final_div_factor: float) -> float:
    """Smith's one-cycle policy with cosine annealing, identical to `torch.optim.lr_scheduler.OneCycleLR`
    with `pct_start = rise / total` (and the default `anneal_strategy="cos"`).

    start = peak / div_factor, end = start / final_div_factor, cos_anneal(a, b, p) = b + (a - b) * (1 + cos(pi * p)) / 2
    lr = cos_anneal(start, peak, step / (rise - 1))                           for step <= rise - 1
    lr = cos_anneal(peak, end, min(1, (step - rise + 1) / max(1, total - rise)))   afterwards
    With rise <= 1 there is no rising phase: lr = cos_anneal(peak, end, min(1, step / max(1, total - 1))).

    >>> [round(one_cycle(s, 1.0, 3, 5, 10.0, 1.0), 3) for s in range(6)]
    [0.1, 0.55, 1.0, 0.55, 0.1, 0.1]
    """
    start = peak / div_factor
    end = start / final_div_factor
    rise_end = max(0, rise - 1)  # last step of the rising phase, where lr == peak
    if step <= rise_end and rise_end > 0:
        return _cos_anneal(start, peak, step / rise_end)
    progress = min(1.0, (step - rise_end) / max(1, total - 1 - rise_end))
    return _cos_anneal(peak, end, progress)


def constant(step: int, peak: float, warmup: int) -> float:
    """Linear warm-up to `peak`, then constant.

    lr = peak * (step + 1) / warmup for step < warmup, else peak

    >>> [constant(s, 1.0, 2) for s in range(4)]
    [0.5, 1.0, 1.0, 1.0]
    """
    return peak * (step + 1) / warmup if step < warmup else peak


def _cos_anneal(start: float, end: float, progress: float) -> float:
    return end + (start - end) * (1 + math.cos(math.pi * progress)) / 2


def lr_at(step: int, cfg: OptimConfig, total_steps: int) -> float:
    """The learning rate of update `step + 1` under `cfg.schedule`; `total_steps` is used when
    `cfg.total_steps` is None (the trainer passes its planned number of steps)."""
    total = cfg.total_steps if cfg.total_steps is not None else total_steps
    return _SCHEDULES[cfg.schedule](step, cfg, total)


_SCHEDULES: dict[str, Callable[[int, OptimConfig, int], float]] = {
    "warmup_cosine": lambda s, c, t: warmup_cosine(s, c.lr, c.warmup_steps, t, c.min_lr_ratio),
    "one_cycle": lambda s, c, t: one_cycle(s, c.lr, c.warmup_steps, t, c.div_factor, c.final_div_factor),
    "constant": lambda s, c, t: constant(s, c.lr, c.warmup_steps),
}


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR that sets every param group's lr to `lr_at(step, cfg, total_steps)`; call `.step()`
    once per optimizer update. The groups' initial lr must be `cfg.lr`."""

    def factor(step: int) -> float:
        return lr_at(step, cfg, total_steps) / cfg.lr

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
