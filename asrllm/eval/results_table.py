"""RESULTS.md from the metrics.json files of decode directories (STYLE.md R15, icefall RESULTS.md style).

Every number in the tables sits next to the exact command that produced it (metrics.json
"command"). Order is deterministic: test sets by name, rows by (model, method, directory).

Where a row's metrics.json lacks "test_set", "model" or "method", they are taken from the path
`<exp>/<model>/decode_<test_set...>/metrics.json` (test set = directory name after "decode_").
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True)
class ResultRow:
    """One decode directory's headline numbers (rates in %)."""

    decode_dir: str  # as given / found, POSIX form
    test_set: str
    model: str
    method: str
    wer: float | None
    sub: float | None
    dele: float | None
    ins: float | None
    rtfx: float | None
    num_utts: int | None
    command: str | None  # the decoding command
    train_command: str | None  # the command that trained the model
    num_params: int | None  # model parameters
    checkpoint: str | None  # which weights were decoded (e.g. "average")


def find_metrics(paths: Iterable[str | Path]) -> list[Path]:
    """metrics.json files under `paths`, sorted.

    A path may be a decode dir (holding metrics.json), a model dir (decode_*/metrics.json) or an
    experiment root (*/decode_*/metrics.json).
    """
    found: set[Path] = set()
    for p in map(Path, paths):
        if p.is_file() and p.name == "metrics.json":
            found.add(p)
        elif (p / "metrics.json").is_file():
            found.add(p / "metrics.json")
        else:
            found.update(p.glob("decode_*/metrics.json"))
            found.update(p.glob("*/decode_*/metrics.json"))
    return sorted(found)


def load_row(metrics_path: str | Path) -> ResultRow:
    """Read one metrics.json; errors name the file."""
    path = Path(metrics_path)
    try:
        m: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read metrics: {e}") from None
    decode_dir = path.parent
    dir_set = decode_dir.name[len("decode_") :] if decode_dir.name.startswith("decode_") else decode_dir.name
    return ResultRow(
        decode_dir=decode_dir.as_posix(),
        test_set=str(m.get("test_set") or dir_set),
        model=str(m.get("model") or decode_dir.parent.name),
        method=str(m.get("method") or "-"),
        wer=m.get("wer"),
        sub=m.get("sub"),
        dele=m.get("del"),
        ins=m.get("ins"),
        rtfx=m.get("rtfx"),
        num_utts=m.get("num_utts"),
        command=m.get("command"),
        train_command=m.get("train_command"),
        num_params=m.get("num_params"),
        checkpoint=m.get("checkpoint"),
    )


def _num(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _summary(rows: list[ResultRow], sets: list[str]) -> list[str]:
    """Model × test-set WER table with the unweighted mean (the leaderboard's average)."""
    systems = sorted({(r.model, r.method) for r in rows})
    best: dict[tuple[str, str, str], ResultRow] = {}
    for r in rows:  # several dirs for one (system, set): keep the first in order
        best.setdefault((r.model, r.method, r.test_set), r)
    lines = [
        "## Summary: WER [%] per test set",
        "",
        "| model | method | " + " | ".join(_cell(s) for s in sets) + " | mean |",
        "|---|---|" + "---:|" * (len(sets) + 1),
    ]
    for model, method in systems:
        wers = [best[(model, method, s)].wer if (model, method, s) in best else None for s in sets]
        mean = sum(wers) / len(wers) if all(w is not None for w in wers) else None  # type: ignore[misc]
        cells = [_num(w) for w in wers] + [_num(mean)]
        lines.append(f"| {_cell(model)} | {_cell(method)} | " + " | ".join(cells) + " |")
    note = "The mean is unweighted over the sets (as the Open ASR leaderboard averages); – = missing."
    return lines + ["", note, ""]


def _models(rows: list[ResultRow]) -> list[str]:
    """Per model: size, decoded checkpoint and the exact training command (icefall RESULTS.md style)."""
    out = ["## Models", ""]
    for model in sorted({r.model for r in rows}):
        r = next(r for r in rows if r.model == model)
        params = "–" if r.num_params is None else f"{r.num_params / 1e6:.2f}M"
        out += [f"- `{model}`: {params} parameters, checkpoint `{r.checkpoint or '–'}`, trained with", "",
                "  ```bash", f"  {r.train_command or '# command not recorded'}", "  ```", ""]
    return out


def render_results(rows: list[ResultRow], title: str = "RESULTS") -> str:
    """Markdown: a summary (when there are several test sets), then per test set a table + commands."""
    rows = sorted(rows, key=lambda r: (r.test_set, r.model, r.method, r.decode_dir))
    sets = sorted({r.test_set for r in rows})
    out = [
        f"# {title}",
        "",
        "Generated by `python -m asrllm.bin.make_results` from the decode directories' metrics.json; "
        "do not edit by hand.",
        "WER/Sub/Del/Ins in % of reference words after Whisper's English normalisation (Open ASR "
        "leaderboard scoring); RTFx = audio seconds / decoding seconds.",
        "",
    ]
    if not rows:
        return "\n".join(out + ["No results yet.", ""])
    if len(sets) > 1:
        out += _summary(rows, sets)
    out += _models(rows)
    for test_set in sets:
        group = [r for r in rows if r.test_set == test_set]
        out += [
            f"## {test_set}",
            "",
            "| # | model | method | WER | Sub | Del | Ins | RTFx | utts |",
            "|---:|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for n, r in enumerate(group, 1):
            cells = [_num(r.wer), _num(r.sub), _num(r.dele), _num(r.ins), _num(r.rtfx, 1),
                     "–" if r.num_utts is None else str(r.num_utts)]
            out.append(f"| {n} | {_cell(r.model)} | {_cell(r.method)} | " + " | ".join(cells) + " |")
        out.append("")
        for n, r in enumerate(group, 1):
            command = r.command or "# command not recorded"
            out += [f"{n}. `{r.decode_dir}`", "", "   ```bash", f"   {command}", "   ```", ""]
    return "\n".join(out)
