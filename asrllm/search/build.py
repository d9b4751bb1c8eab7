"""The one place that reads search config and wires search objects (STYLE.md R1, R14).

Registries map config strings to classes; an unknown name is a `ValueError` that lists the known
ones. The search loops themselves never see a config object.

>>> search = build_search(SearchConfig(beam=4), blank_id=0)
>>> type(search).__name__, search.beam
('CTCTimeSyncSearch', 4)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, get_args

from torch import Tensor

from asrllm.search.config import FusionConfig, MethodName, ScheduleName, SearchConfig
from asrllm.search.fusion import FusionSchedule, LabelPrior, LabelWiseFusion, NoFusion
from asrllm.search.greedy import CTCGreedySearch
from asrllm.search.hyps import NBestEntry
from asrllm.search.scorer import Scorer
from asrllm.search.time_sync import CTCTimeSyncSearch


class CTCSearch(Protocol):
    """What every CTC search object does: log-probs (B, T, V), lens (B,) -> per utterance its N-best."""

    def __call__(self, log_probs: Tensor, lens: Tensor, utt_ids: list[str] | None = None) -> list[list[NBestEntry]]: ...


SEARCHES: dict[MethodName, type] = {
    "ctc_greedy": CTCGreedySearch,
    "ctc_time_sync": CTCTimeSyncSearch,
}

SCHEDULES: dict[ScheduleName, type] = {  # values: FusionSchedule subclasses
    "none": NoFusion,
    "label_wise": LabelWiseFusion,
}

# The config's Literal names are what the YAML loader accepts: each must have a class here.
assert set(SEARCHES) == set(get_args(MethodName)), (sorted(SEARCHES), get_args(MethodName))
assert set(SCHEDULES) == set(get_args(ScheduleName)), (sorted(SCHEDULES), get_args(ScheduleName))


def _lookup(registry: Mapping[Any, type], name: str, option: str) -> type:
    if name not in registry:
        raise ValueError(f"{option}={name!r} is unknown (known: {', '.join(sorted(registry))})")
    return registry[name]


def build_schedule(
    cfg: FusionConfig,
    log_prior: Tensor | None = None,
    scorers: Mapping[str, Scorer] | None = None,
    vocab_size: int | None = None,
) -> FusionSchedule:
    """The fusion schedule of `cfg` over the named `scorers` (each name of cfg.weights needs one).

    log_prior (V,) is required when cfg.prior_scale > 0. vocab_size: the AM's V; every scorer a
    label-wise schedule fuses must have the same (one label space), else a ValueError that says
    what to do.
    """
    cls = _lookup(SCHEDULES, cfg.schedule, "fusion.schedule")
    prior = None
    if cfg.prior_scale > 0:
        if log_prior is None:
            raise ValueError(f"fusion.prior_scale={cfg.prior_scale} needs a label prior, but none was given")
        prior = LabelPrior(log_prior=log_prior, scale=cfg.prior_scale)
    scorers = dict(scorers or {})
    if cls is NoFusion:
        if cfg.weights:
            raise ValueError(
                f"fusion.weights={cfg.weights} given, but fusion.schedule='none' combines no scorers"
            )
        return NoFusion(prior)
    if not cfg.weights:
        raise ValueError(f"fusion.schedule={cfg.schedule!r} needs fusion.weights for the scorers it fuses")
    missing = sorted(set(cfg.weights) - set(scorers))
    if missing:
        raise ValueError(f"fusion.weights names {missing}, but no scorer of that name was given "
                         f"(given: {', '.join(sorted(scorers)) or 'none'})")
    chosen = {name: scorers[name] for name in cfg.weights}
    if cls is LabelWiseFusion:
        for name, scorer in chosen.items():
            if vocab_size is not None and scorer.vocab_size() != vocab_size:
                raise ValueError(
                    f"fusion scorer {name!r} has {scorer.vocab_size()} labels but the AM has {vocab_size}: "
                    "label-wise fusion needs one vocabulary (an LM in the AM's labels: re-vocabularise the "
                    "LLM to the AM tokenizer, or train the LM on it)"
                )
        return LabelWiseFusion(chosen, dict(cfg.weights), prior)
    raise AssertionError(f"no wiring for schedule class {cls.__name__}")  # registry and builder disagree


def build_search(
    cfg: SearchConfig,
    *,
    blank_id: int,
    log_prior: Tensor | None = None,
    detokenize: Callable[[list[int]], str] | None = None,
    scorers: Mapping[str, Scorer] | None = None,
    vocab_size: int | None = None,
) -> CTCSearch:
    """Wire the search `cfg` describes. blank_id comes from the tokenizer (never assumed);
    log_prior (V,) is the label log-prior for prior correction; detokenize turns labels into text;
    scorers: the named scorers (LMs) that cfg.fusion.weights may fuse; vocab_size: the AM's V.
    """
    cls = _lookup(SEARCHES, cfg.method, "search.method")
    if cls is CTCGreedySearch:
        if cfg.fusion != FusionConfig():
            raise ValueError(f"search.method='ctc_greedy' cannot use fusion (got fusion={cfg.fusion})")
        return CTCGreedySearch(blank_id=blank_id, detokenize=detokenize)
    if cls is CTCTimeSyncSearch:
        return CTCTimeSyncSearch(
            blank_id=blank_id,
            beam=cfg.beam,
            nbest=cfg.nbest,
            token_prune_topk=cfg.token_prune_topk,
            token_min_logp=cfg.token_min_logp,
            beam_threshold=cfg.beam_threshold,
            fusion=build_schedule(cfg.fusion, log_prior, scorers, vocab_size),
            detokenize=detokenize,
        )
    raise AssertionError(f"no wiring for search class {cls.__name__}")  # registry and builder disagree
