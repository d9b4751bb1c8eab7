"""LR schedules: exact values, torch's OneCycleLR as an oracle, the LambdaLR wrapper and its state."""

from __future__ import annotations

import io
import math

import pytest
import torch

from asrllm.train.config import OptimConfig
from asrllm.train.schedule import build_scheduler, constant, lr_at, one_cycle, warmup_cosine


def test_warmup_cosine_values() -> None:
    assert warmup_cosine(0, 2.0, 4, 10, 0.1) == pytest.approx(0.5)
    assert warmup_cosine(3, 2.0, 4, 10, 0.1) == pytest.approx(2.0)
    assert warmup_cosine(4, 2.0, 4, 10, 0.1) == pytest.approx(2.0)  # decay starts at progress 0
    assert warmup_cosine(7, 2.0, 4, 10, 0.1) == pytest.approx(0.2 + 1.8 * (1 + math.cos(math.pi / 2)) / 2)
    assert warmup_cosine(10, 2.0, 4, 10, 0.1) == pytest.approx(0.2)
    assert warmup_cosine(50, 2.0, 4, 10, 0.1) == pytest.approx(0.2)  # held at the floor past the end
    assert warmup_cosine(0, 2.0, 0, 10, 0.0) == pytest.approx(2.0)  # no warm-up


@pytest.mark.parametrize(("rise", "total"), [(2, 10), (3, 5), (30, 100)])
def test_one_cycle_matches_torch(rise: int, total: int) -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    ref = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=3.0, total_steps=total, pct_start=rise / total, div_factor=25.0, final_div_factor=1e4
    )
    for step in range(total):
        assert one_cycle(step, 3.0, rise, total, 25.0, 1e4) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
        opt.step()
        if step < total - 1:
            ref.step()


def test_one_cycle_without_rising_phase() -> None:
    # torch divides by zero here; asrllm starts the decay from the peak
    assert one_cycle(0, 3.0, 1, 7, 25.0, 1e4) == pytest.approx(3.0)
    assert one_cycle(6, 3.0, 1, 7, 25.0, 1e4) == pytest.approx(3.0 / 25 / 1e4)


def test_constant() -> None:
    assert [constant(s, 0.3, 3) for s in range(5)] == pytest.approx([0.1, 0.2, 0.3, 0.3, 0.3])
    assert constant(0, 0.3, 0) == 0.3


def test_lr_at_prefers_configured_total_steps() -> None:
    cfg = OptimConfig(lr=1.0, warmup_steps=0, total_steps=4)
    assert lr_at(2, cfg, total_steps=1000) == pytest.approx(warmup_cosine(2, 1.0, 0, 4, 0.0))


@pytest.mark.parametrize("name", ["warmup_cosine", "one_cycle", "constant"])
def test_scheduler_sets_lr_at_every_step_and_round_trips(name: str) -> None:
    cfg = OptimConfig(lr=0.5, warmup_steps=3, schedule=name)  # type: ignore[arg-type]
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=cfg.lr)
    sched = build_scheduler(opt, cfg, total_steps=10)
    for step in range(5):
        assert opt.param_groups[0]["lr"] == pytest.approx(lr_at(step, cfg, 10), rel=1e-12)
        opt.step()
        sched.step()
    buf = io.BytesIO()
    torch.save(sched.state_dict(), buf)
    buf.seek(0)
    opt2 = torch.optim.AdamW([param], lr=cfg.lr)
    sched2 = build_scheduler(opt2, cfg, total_steps=10)
    sched2.load_state_dict(torch.load(buf, weights_only=True))
    opt2.step()
    sched2.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(lr_at(6, cfg, 10), rel=1e-12)
