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

from asrllm.data.tokenizer import Tokenizer
from asrllm.search.config import FusionConfig, MethodName, ScheduleName, SearchConfig
from asrllm.search.ctc_prefix import CTCPrefixScorer
from asrllm.search.fusion import DelayedFusion, FusionSchedule, LabelPrior, LabelWiseFusion, NoFusion
from asrllm.search.greedy import CTCGreedySearch
from asrllm.search.hyps import NBestEntry
from asrllm.search.label_sync import LabelSyncSearch
from asrllm.search.lm_scorer import LMScorer
from asrllm.search.retokenize import WordRetokenizer
from asrllm.search.scorer import Scorer
from asrllm.search.speculative import CTCDraftSearch
from asrllm.search.time_sync import CTCTimeSyncSearch


class CTCSearch(Protocol):
    """What every CTC search object does: log-probs (B, T, V), lens (B,) -> per utterance its N-best."""

    def __call__(self, log_probs: Tensor, lens: Tensor, utt_ids: list[str] | None = None) -> list[list[NBestEntry]]: ...


SEARCHES: dict[MethodName, type] = {
    "ctc_greedy": CTCGreedySearch,
    "ctc_time_sync": CTCTimeSyncSearch,
    "label_sync": LabelSyncSearch,
}

SCHEDULES: dict[ScheduleName, type] = {  # values: FusionSchedule subclasses
    "none": NoFusion,
    "label_wise": LabelWiseFusion,
    "delayed": DelayedFusion,
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
    am_tokenizer: Tokenizer | None = None,
) -> FusionSchedule:
    """The fusion schedule of `cfg` over the named `scorers` (each name of cfg.weights needs one).

    log_prior (V,) is required when cfg.prior_scale > 0. vocab_size: the AM's V; every scorer a
    schedule fuses in AM labels (label-wise, delayed v1) must have the same (one label space), else
    a ValueError that says what to do. am_tokenizer: the AM's labels as text, needed by delayed
    fusion with re-tokenisation (whose LMs must be `LMScorer`s: they bring their own tokenizer).
    """
    cls = _lookup(SCHEDULES, cfg.schedule, "fusion.schedule")
    prior = None
    if cfg.prior_scale > 0:
        if log_prior is None:
            raise ValueError(f"fusion.prior_scale={cfg.prior_scale} needs a label prior, but none was given")
        prior = LabelPrior(log_prior=log_prior, scale=cfg.prior_scale)
    chosen = _named_fused(cfg, scorers or {})
    if cls is NoFusion:
        return NoFusion(prior)
    if cls is DelayedFusion and cfg.retokenize:
        if am_tokenizer is None:
            raise ValueError("fusion.retokenize=true needs the AM tokenizer (the AM labels are turned into words)")
        not_lms = sorted(name for name, s in chosen.items() if not isinstance(s, LMScorer))
        if not_lms:
            raise ValueError(f"fusion.retokenize=true: scorers {not_lms} are not LMs with a tokenizer of their own")
        retokenizers = {name: WordRetokenizer(am_tokenizer, s.tokenizer) for name, s in chosen.items()
                        if isinstance(s, LMScorer)}
        return DelayedFusion(chosen, dict(cfg.weights), prior, cfg.trigger, cfg.every, retokenizers)
    for name, scorer in chosen.items():
        if vocab_size is not None and scorer.vocab_size() != vocab_size:
            raise ValueError(
                f"fusion scorer {name!r} has {scorer.vocab_size()} labels but the AM has {vocab_size}: "
                f"fusion.schedule={cfg.schedule!r} scores AM labels and needs one vocabulary (an LM in the "
                "AM's labels: re-vocabularise the LLM to the AM tokenizer, or train the LM on it), or use "
                "schedule 'delayed' with retokenize: true, where the LM scores its own tokens"
            )
    if cls is LabelWiseFusion:
        return LabelWiseFusion(chosen, dict(cfg.weights), prior)
    if cls is DelayedFusion:
        return DelayedFusion(chosen, dict(cfg.weights), prior, cfg.trigger, cfg.every)
    raise AssertionError(f"no wiring for schedule class {cls.__name__}")  # registry and builder disagree


def build_search(
    cfg: SearchConfig,
    *,
    blank_id: int,
    log_prior: Tensor | None = None,
    detokenize: Callable[[list[int]], str] | None = None,
    scorers: Mapping[str, Scorer] | None = None,
    vocab_size: int | None = None,
    am_tokenizer: Tokenizer | None = None,
    model_scorers: Mapping[str, Scorer] | None = None,
    eos_id: int | None = None,
) -> CTCSearch | LabelSyncSearch | CTCDraftSearch:
    """Wire the search `cfg` describes. blank_id comes from the tokenizer (never assumed);
    log_prior (V,) is the label log-prior for prior correction; detokenize turns labels into text;
    scorers: the named scorers (LMs) that cfg.fusion.weights may fuse; vocab_size: the AM's V;
    am_tokenizer: for delayed fusion with re-tokenisation. label_sync: model_scorers, the main
    model as {name: scorer} (weight 1), and eos_id, the label that ends a hypothesis.
    """
    cls = _lookup(SEARCHES, cfg.method, "search.method")
    if cls is LabelSyncSearch:
        return build_label_sync(cfg, model_scorers or {}, scorers or {}, eos_id, detokenize,
                                blank_id if blank_id >= 0 else None)
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
            blank_collapse=cfg.blank_collapse,
            soft_collapse=cfg.soft_collapse,
            fusion=build_schedule(cfg.fusion, log_prior, scorers, vocab_size, am_tokenizer),
            detokenize=detokenize,
        )
    raise AssertionError(f"no wiring for search class {cls.__name__}")  # registry and builder disagree


def build_label_sync(
    cfg: SearchConfig,
    model_scorers: Mapping[str, Scorer],
    scorers: Mapping[str, Scorer],
    eos_id: int | None,
    detokenize: Callable[[list[int]], str] | None = None,
    ctc_blank_id: int | None = None,
) -> LabelSyncSearch | CTCDraftSearch:
    """The label-synchronous search of `cfg`: the main model (weight 1, or 1 − λ with cfg.ctc_weight
    λ > 0) plus the scorers that cfg.fusion.weights names (LMs in the model's labels: shallow fusion on
    a speech LLM), plus with λ > 0 the CTC prefix scores ("ctc", weight λ) of the model's CTC head,
    whose blank is ctc_blank_id (None: the model has no CTC head); with cfg.ctc_draft, wrapped in
    the self-speculative `CTCDraftSearch`."""
    if len(model_scorers) != 1 or eos_id is None:
        raise ValueError("search.method='label_sync' decodes a label-synchronous model (a speech LLM); "
                         "this model has none: use a CTC search")
    (main, model_scorer), = model_scorers.items()
    fused = _named_fused(cfg.fusion, scorers, main)
    for name, scorer in fused.items():
        if scorer.vocab_size() != model_scorer.vocab_size():
            raise ValueError(f"fusion scorer {name!r} has {scorer.vocab_size()} labels but the model has "
                             f"{model_scorer.vocab_size()}: label-synchronous fusion needs one vocabulary (an LM "
                             "trained or re-vocabularised on the model's labels)")
    weights = {main: 1.0 - cfg.ctc_weight, **{name: cfg.fusion.weights[name] for name in fused}}
    every = {main: model_scorer, **fused}
    if (cfg.ctc_weight > 0 or cfg.ctc_draft is not None) and ctc_blank_id is None:
        raise ValueError(f"search.ctc_weight={cfg.ctc_weight}, ctc_draft={cfg.ctc_draft}: this model has no CTC head "
                         "to decode with (train one: a speech LLM with model.aux_ctc_weight > 0, an AED with "
                         "model.ctc_weight > 0)")
    if cfg.ctc_weight > 0:
        assert ctc_blank_id is not None  # checked above
        if "ctc" in every:
            raise ValueError("fusion.weights names a scorer 'ctc': that name is the joint CTC prefix scorer's")
        every["ctc"] = CTCPrefixScorer(model_scorer.vocab_size(), ctc_blank_id, eos_id, cfg.ctc_window)
        weights["ctc"] = cfg.ctc_weight
    search = LabelSyncSearch(
        every, weights,
        eos_id=eos_id, beam=cfg.beam, nbest=cfg.nbest, length_norm=cfg.length_norm,
        max_length_ratio=cfg.max_length_ratio, max_length=cfg.max_length, pre_beam=cfg.pre_beam,
        pre_beam_eos=cfg.pre_beam_eos, pre_beam_threshold=cfg.pre_beam_threshold, free_eos=cfg.free_eos,
        detokenize=detokenize,
    )
    if cfg.ctc_draft is None:
        return search
    assert ctc_blank_id is not None  # checked above
    return CTCDraftSearch(search, ctc_blank_id, cfg.ctc_draft)


def _named_fused(cfg: FusionConfig, scorers: Mapping[str, Scorer], main: str | None = None) -> dict[str, Scorer]:
    """The scorers cfg.weights names; weights with schedule 'none', none with another schedule, a
    name without a scorer, or the main model's name are errors."""
    if cfg.schedule == "none" and cfg.weights:
        raise ValueError(f"fusion.weights={cfg.weights} given, but fusion.schedule='none' combines no scorers")
    if cfg.schedule != "none" and not cfg.weights:
        raise ValueError(f"fusion.schedule={cfg.schedule!r} needs fusion.weights for the scorers it fuses")
    if main is not None and main in cfg.weights:
        raise ValueError(f"fusion.weights[{main!r}]: the main model's weight is 1; weight the other scorers")
    missing = sorted(set(cfg.weights) - set(scorers))
    if missing:
        raise ValueError(f"fusion.weights names {missing}, but no scorer of that name was given "
                         f"(given: {', '.join(sorted(scorers)) or 'none'})")
    return {name: scorers[name] for name in cfg.weights}
