"""Scale tuning on dev N-best lists (PAPER.md §5, RWTH practice): AM scale 1, LM and prior scales by
grid search and then refinement, objective = corpus WER.

Shapes: U utterances, N entries per utterance (padded), G grid points.

Each entry's word errors against its reference are counted ONCE (leaderboard normaliser, as in
scoring); a grid point is then a log-linear total per entry (`weighted_totals`, the search's own
combination: ctc + λ·lm − s·prior), an argmax per utterance and a sum of errors, for all grid
points at once. Refinement halves the step around the best point `refine_rounds` times. Ties go to
the smaller LM scale, then the smaller prior scale (the first in grid order).

>>> e = lambda r, text, ctc, lm: NBestEntry("u", r, [], text, ctc, {"ctc": ctc, "lm": lm, "prior": 0.0})
>>> nbest = [[e(0, "a b", -1.0, -9.0), e(1, "a c", -1.5, -2.0)]]
>>> result = tune_scales(nbest, {"u": "a c"}, "lm", lm_grid=[0.0, 0.5], prior_grid=[0.0], refine_rounds=0)
>>> result.lm_scale, result.prior_scale, result.wer
(0.5, 0.0, 0.0)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch

from asrllm.eval.normalizer import (
    DEFAULT_NORMALIZER,
    get_normalizer,
    is_scored_reference,
)
from asrllm.eval.wer import align
from asrllm.search.fusion import PRIOR
from asrllm.search.hyps import NBestEntry, weighted_totals


@dataclasses.dataclass(frozen=True)
class TuningResult:
    """The chosen scales, their dev WER (%), and every grid point tried as (lm_scale, prior_scale, wer %)."""

    lm_scale: float
    prior_scale: float
    wer: float
    baseline_wer: float  # the N-best lists as ranked (each utterance's first entry)
    grid: list[tuple[float, float, float]]
    num_utts: int
    ref_words: int


@dataclasses.dataclass(frozen=True)
class _Table:
    """The N-best lists as padded tensors."""

    columns: torch.Tensor  # (U, N, 3) float64 ctc, lm, prior; padding rows: ctc = -inf
    errors: torch.Tensor  # (U, N) int64 word errors of each entry
    ref_words: int


def _table(nbest: list[list[NBestEntry]], refs: dict[str, str], lm: str, normalizer: str) -> _Table:
    norm = get_normalizer(normalizer)
    kept = []
    for entries in nbest:
        if not entries:
            continue
        utt = entries[0].utt_id
        if utt not in refs:
            raise ValueError(f"tune_scales: utterance {utt!r} of the N-best lists has no reference")
        ref = norm(refs[utt])
        if is_scored_reference(ref):
            kept.append((ref, entries))
    if not kept:
        raise ValueError("tune_scales: no N-best list with a scored reference")
    n = max(len(entries) for _, entries in kept)
    columns = torch.zeros(len(kept), n, 3, dtype=torch.float64)
    columns[:, :, 0] = float("-inf")
    errors = torch.zeros(len(kept), n, dtype=torch.long)
    refs_flat, hyps_flat, where = [], [], []
    for u, (ref, entries) in enumerate(kept):
        for r, e in enumerate(entries):
            missing = [c for c in ("ctc", lm) if c not in e.scores]
            if missing:
                raise ValueError(f"tune_scales: entry {r} of {e.utt_id!r} has no scores {missing} "
                                 f"(its columns: {sorted(e.scores)}); rescore the N-best lists with LM {lm!r} first")
            columns[u, r] = torch.tensor([e.scores["ctc"], e.scores[lm], e.scores.get(PRIOR, 0.0)], dtype=torch.float64)
            refs_flat.append(ref)
            hyps_flat.append(norm(e.text))
            where.append((u, r))
    for (u, r), (_, sub, dele, ins) in zip(where, align(refs_flat, hyps_flat)):
        errors[u, r] = sub + dele + ins
    ref_words = sum(len(ref.split()) for ref, _ in kept)
    return _Table(columns, errors, ref_words)


def _wers(table: _Table, points: list[tuple[float, float]]) -> list[float]:
    """Corpus WER (%) of each (lm_scale, prior_scale) point."""
    w = torch.tensor([[1.0, lm, -prior] for lm, prior in points], dtype=torch.float64)  # (G, 3)
    totals = torch.stack([weighted_totals(table.columns, wg) for wg in w])  # (G, U, N)
    best = totals.argmax(dim=2)  # (G, U): first maximum = the better-ranked entry on ties
    errors = table.errors.gather(1, best.T).T.sum(dim=1)  # (G,)
    return (100.0 * errors.double() / max(table.ref_words, 1)).tolist()


def tune_scales(
    nbest: list[list[NBestEntry]],
    refs: dict[str, str],
    lm: str,
    lm_grid: Sequence[float],
    prior_grid: Sequence[float],
    refine_rounds: int = 2,
    normalizer: str = DEFAULT_NORMALIZER,
) -> TuningResult:
    """The (λ_lm, prior scale) of lowest dev WER for N-best lists with score columns ctc, `lm` and
    (for prior scales > 0) prior; refs: utterance id -> reference text."""
    if not lm_grid or not prior_grid or min(*lm_grid, *prior_grid) < 0:
        raise ValueError(f"tune_scales: grids must be non-empty and >= 0 (lm {list(lm_grid)}, prior {list(prior_grid)})")
    table = _table(nbest, refs, lm, normalizer)
    if any(p > 0 for p in prior_grid) and not any(PRIOR in e.scores for u in nbest for e in u):
        raise ValueError("tune_scales: prior scales > 0 need a prior column; rescore with the AM's prior")
    tried: dict[tuple[float, float], float] = {}

    def run(points: list[tuple[float, float]]) -> None:
        todo = [p for p in points if p not in tried]
        tried.update(zip(todo, _wers(table, todo)) if todo else [])

    run([(float(a), float(b)) for a in lm_grid for b in prior_grid])
    lm_step = _step(lm_grid)
    prior_step = _step(prior_grid)
    for _ in range(refine_rounds):
        best_lm, best_prior = _best(tried)
        lm_step, prior_step = lm_step / 2, prior_step / 2
        run([(round(best_lm + i * lm_step, 6), round(best_prior + j * prior_step, 6))
             for i in (-1, 0, 1) for j in (-1, 0, 1) if best_lm + i * lm_step >= 0 and best_prior + j * prior_step >= 0])
    best_lm, best_prior = _best(tried)
    baseline = float(100.0 * table.errors[:, 0].sum() / max(table.ref_words, 1))
    grid = sorted((a, b, w) for (a, b), w in tried.items())
    return TuningResult(best_lm, best_prior, tried[best_lm, best_prior], baseline, grid, int(table.errors.shape[0]),
                        table.ref_words)


def _step(grid: Sequence[float]) -> float:
    values = sorted(set(grid))
    return min((b - a for a, b in zip(values, values[1:])), default=0.1)


def _best(tried: dict[tuple[float, float], float]) -> tuple[float, float]:
    return min(tried, key=lambda p: (round(tried[p], 9), p))


def plot_grid(result: TuningResult, lm: str, path: str | Path) -> None:
    """PNG of dev WER over the (λ_lm, prior scale) points tried, the chosen one marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lms, priors, wers = zip(*result.grid)
    fig, ax = plt.subplots(figsize=(6.5, 5))
    # colours span the best WER + 3 points, so that the region that matters is not washed out
    sc = ax.scatter(lms, priors, c=wers, cmap="viridis_r", s=60, marker="s", vmin=result.wer, vmax=result.wer + 3)
    ax.scatter([result.lm_scale], [result.prior_scale], marker="x", c="red", s=120,
               label=f"best: λ={result.lm_scale:g}, prior {result.prior_scale:g}: WER {result.wer:.2f} %")
    fig.colorbar(sc, ax=ax, label="dev WER [%] (clipped at best + 3)")
    ax.set_xlabel(f"LM scale λ ({lm})")
    ax.set_ylabel("prior scale")
    ax.set_title(f"N-best scale tuning, {result.num_utts} utts (as ranked: {result.baseline_wer:.2f} %)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=8)
    fig.tight_layout()
    tmp = Path(f"{path}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
