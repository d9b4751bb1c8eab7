"""train_log.jsonl reading (restarts supersede records) and the learning-curve PNG."""

from __future__ import annotations

import json
from pathlib import Path

from asrllm.train.plot import plot_learning_curve, read_log


def _write(path: Path, records: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_restart_drops_records_after_its_step_and_plot_is_written(tmp_path: Path) -> None:
    log = tmp_path / "train_log.jsonl"
    train = lambda step, loss: {"split": "train", "step": step, "epoch": 1, "loss": loss, "lr": 0.1}  # noqa: E731
    _write(log, [
        {"event": "start", "step": 0}, train(1, 3.0), train(2, 2.0),
        {"split": "valid", "step": 2, "epoch": 1, "loss": 2.5}, train(3, 9.0),  # step 3 was lost in a crash
        {"event": "start", "step": 2}, train(3, 1.5), train(4, 1.0),
    ])
    records = read_log(log)
    assert [(r["split"], r["step"], r["loss"]) for r in records] == [
        ("train", 1, 3.0), ("train", 2, 2.0), ("valid", 2, 2.5), ("train", 3, 1.5), ("train", 4, 1.0)]
    plot_learning_curve(log, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
