"""Learning curves from `exp_dir/train_log.jsonl`.

Each line of the log is one JSON record written by the trainer on rank 0:
`{"split": "train" | "valid", "step": int, "epoch": int, "loss": float, "lr": float, ...}`, or
`{"event": "start", "step": k, "command": ...}` when a run starts (k = 0) or resumes from its
checkpoint at step k, and `{"event": "end", "step": n}` when it finishes; every record has its
wall-clock `time` (unix seconds). Records with step > k that precede a start were written by a run
that stopped after its last checkpoint; the new run repeats those steps, so `read_log` drops them
(the trainer also cuts them from the file when it resumes).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The scalar records of a train_log.jsonl, in order, without those a restart superseded."""
    records: list[dict[str, Any]] = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if record.get("event") == "start":
            records = [r for r in records if r["step"] <= record["step"]]
        elif "event" not in record:
            records.append(record)
    return records


def plot_learning_curve(log_path: str | Path, out_path: str | Path) -> None:
    """Write a PNG with train/valid loss (top) and learning rate (bottom) against the step."""
    records = read_log(log_path)
    train = [r for r in records if r.get("split") == "train"]
    valid = [r for r in records if r.get("split") == "valid"]
    fig = Figure(figsize=(8, 6), layout="constrained")
    FigureCanvasAgg(fig)  # pyplot-free rendering: no global backend state, safe in any process
    ax_loss, ax_lr = fig.subplots(2, 1, sharex=True)
    ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label="train")
    ax_loss.plot([r["step"] for r in valid], [r["loss"] for r in valid], "o-", label="valid")
    ax_loss.set_ylabel("loss per item")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    ax_lr.plot([r["step"] for r in train], [r["lr"] for r in train])
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("optimizer step")
    ax_lr.grid(alpha=0.3)
    out_path = Path(out_path)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=100)
    os.replace(tmp, out_path)  # a viewer never sees a half-written image
