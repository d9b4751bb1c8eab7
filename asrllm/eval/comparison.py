"""The paper's question on one page: the best system of each kind, integration vs. combination.

A system's kind comes from its metrics.json ("model_kind", written by asrllm.bin.score from the
model's config.yaml, and "search"):

    CTC               a CTC AM alone (greedy or beam search, prior correction allowed)
    CTC + LM          a CTC AM with LMs: first-pass fusion or N-best rescoring (combination)
    speech LLM        a speech LLM's label-synchronous search (integration)
    speech LLM + CTC  the same, jointly with CTC prefix scores (search.ctc_weight > 0)
    AED / AED + CTC   an attention encoder-decoder, alone and jointly with CTC

The aux CTC head of a speech LLM or AED decoded alone has no kind here (it is neither system).
Per kind the best system is the one with the lowest WER on the selection set (dev): its row
reports every set, the probe set's hallucination metrics and RTFx, without looking at test.
The plot puts every system's WER on the plotted set against its RTFx.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

KINDS = ("CTC", "CTC + LM", "speech LLM", "speech LLM + CTC", "AED", "AED + CTC")


def system_kind(model_kind: str | None, search: Any) -> str | None:
    """The kind (one of KINDS) of a decode with this model kind and metrics.json "search"; None: none."""
    if not isinstance(search, dict) or model_kind is None:
        return None
    if model_kind == "ctc":
        if "rescoring" in search:
            return "CTC + LM"
        return "CTC + LM" if (search.get("fusion") or {}).get("weights") else "CTC"
    if model_kind in ("speech_llm", "aed") and search.get("method") == "label_sync":
        name = "speech LLM" if model_kind == "speech_llm" else "AED"
        return f"{name} + CTC" if (search.get("ctc_weight") or 0) > 0 else name
    return None


def best_per_kind(rows: Sequence[Any], select_on: str) -> list[tuple[str, Any]]:
    """(kind, row on the selection set) of the lowest-WER system per kind, in KINDS order; kinds
    without a row on `select_on` are left out. rows: results_table.ResultRow."""
    best: dict[str, Any] = {}
    for r in sorted(rows, key=lambda r: (r.model, r.method)):
        if r.kind is None or r.test_set != select_on or r.wer is None:
            continue
        if r.kind not in best or r.wer < best[r.kind].wer:
            best[r.kind] = r
    return [(kind, best[kind]) for kind in KINDS if kind in best]


def comparison_section(rows: Sequence[Any], sets: Sequence[str], select_on: str, probe: str | None,
                       plot_file: str | None) -> list[str]:
    """Markdown lines of the "integration vs. combination" table (and the plot's image link)."""
    chosen = best_per_kind(rows, select_on)
    if not chosen:
        return []
    by_key = {(r.model, r.method, r.test_set): r for r in rows}
    hall = ("over_long", "loops", "words_on_silence")
    columns = ["kind", "model", "method", *sets,
               *([f"{probe} over-long", f"{probe} loops", f"{probe} words on silence"] if probe else []), "RTFx"]
    lines = [f"| {' | '.join(columns)} |", "|" + "---|" * 3 + "---:|" * (len(columns) - 3)]
    for kind, pick in chosen:
        found = [by_key.get((pick.model, pick.method, s)) for s in sets]
        cells = [kind, pick.model, pick.method, *("–" if f is None or f.wer is None else f"{f.wer:.2f}" for f in found)]
        if probe:
            p = by_key.get((pick.model, pick.method, probe))
            cells += ["–" if p is None or p.hallucination.get(k) is None else f"{p.hallucination[k]:g}" for k in hall]
        rtfx = [f.rtfx for f in found if f is not None and f.rtfx is not None]
        cells.append(f"{sum(rtfx) / len(rtfx):.1f}" if rtfx else "–")
        lines.append(f"| {' | '.join(cells)} |")
    out = ["## Integration vs. combination: the best system of each kind", "",
           f"Best = lowest WER on {select_on} (WER [%]; over-long and loops in % of the {probe} set's utterances, "
           "words on silence = mean words on its noise-only ones; RTFx = mean over the sets).", "", *lines, ""]
    if plot_file:
        out += [f"![WER against RTFx of every system]({plot_file})", ""]
    return out


def plot_wer_rtfx(rows: Sequence[Any], test_set: str, out_path: str | Path) -> int:
    """Write a PNG of WER on `test_set` against RTFx (log axis), one marker per system of a kind,
    the best of each kind (by the same WER) labelled. Returns the number of systems plotted (0: no
    file written)."""
    points = [r for r in rows if r.kind is not None and r.test_set == test_set and r.wer is not None and r.rtfx]
    if not points:
        return 0  # nothing to plot: no file
    fig = Figure(figsize=(8, 5.5), layout="constrained")
    FigureCanvasAgg(fig)  # pyplot-free rendering: no global backend state
    ax = fig.subplots()
    markers = dict(zip(KINDS, ("o", "s", "^", "v", "D", "P")))
    for kind in KINDS:
        mine = [r for r in points if r.kind == kind]
        if not mine:
            continue
        ax.scatter([r.rtfx for r in mine], [r.wer for r in mine], marker=markers[kind], label=kind, alpha=0.75)
        best = min(mine, key=lambda r: r.wer)
        ax.annotate(f"{best.model}/{best.method}", (best.rtfx, best.wer), fontsize=7, xytext=(4, 4),
                    textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("RTFx (audio seconds / decoding seconds, log scale)")
    ax.set_ylabel(f"WER on {test_set} [%]")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    out_path = Path(out_path)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=100)
    os.replace(tmp, out_path)  # a viewer never sees a half-written image
    return len(points)
