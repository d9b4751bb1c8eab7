"""Decoding options: frozen dataclasses, validated once (STYLE.md R2).

Only `build.py` reads these; the search loops receive plain arguments. Names that pick a class
(`method`, `schedule`) are `Literal` types, so that the YAML loader rejects a misspelt one with
file, key path and the known names (`build.py` asserts that its registries cover them).

>>> SearchConfig(beam=4, nbest=2).beam
4
>>> try:
...     SearchConfig(beam=2, nbest=3)
... except ValueError as e:
...     print(e)
SearchConfig: nbest=3 must not exceed beam=2
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

from asrllm.provenance import flatten, without_defaults

MethodName = Literal["ctc_greedy", "ctc_time_sync", "label_sync"]  # keys of build.SEARCHES
ScheduleName = Literal["none", "label_wise", "delayed"]  # keys of build.SCHEDULES
TriggerName = Literal["every", "end", "shortest"]  # when a delayed schedule adds pending scores


@dataclasses.dataclass(frozen=True)
class FusionConfig:
    """When and how strongly label scores other than CTC join the search (PAPER.md §5)."""

    schedule: ScheduleName = "none"  # key in build.SCHEDULES: "none" (CTC alone, optionally with a prior),
    #                                   "label_wise" (each scorer's label score joins before pruning),
    #                                   "delayed" (scores join after pruning, when `trigger` says)
    weights: dict[str, float] = dataclasses.field(default_factory=dict)  # scorer name -> weight (λ)
    prior_scale: float = 0.0  # per emitted label add -prior_scale * log prior(label); 0 = off
    trigger: TriggerName = "every"  # delayed: "every" `every` frames, only at the "end", or "shortest"
    #                                 (once every live hypothesis of an utterance has something pending)
    every: int = 1  # delayed, trigger "every": frames between LM calls (the paper: 1, 5, 10, 20)
    retokenize: bool = False  # delayed v2: the LMs score their OWN tokens of completed words (any tokenizer)

    def __post_init__(self) -> None:
        if not self.schedule:
            raise ValueError("FusionConfig: schedule must be a non-empty name")
        for name, w in self.weights.items():
            if name in ("ctc", "prior"):
                raise ValueError(
                    f"FusionConfig: weights[{name!r}] is reserved; the CTC weight is 1 and the prior "
                    "weight is set by prior_scale"
                )
            if not math.isfinite(w) or w < 0:
                raise ValueError(f"FusionConfig: weights[{name!r}]={w} must be finite and >= 0")
        if not math.isfinite(self.prior_scale) or self.prior_scale < 0:
            raise ValueError(f"FusionConfig: prior_scale={self.prior_scale} must be finite and >= 0")
        if self.every < 1:
            raise ValueError(f"FusionConfig: every={self.every} must be >= 1 frame")
        delayed_only = {"trigger": self.trigger != "every", "every": self.every != 1, "retokenize": self.retokenize}
        misplaced = [name for name, set_ in delayed_only.items() if set_]
        if misplaced and self.schedule != "delayed":
            raise ValueError(f"FusionConfig: {', '.join(misplaced)} only apply to schedule='delayed' "
                             f"(schedule={self.schedule!r})")
        if self.every != 1 and self.trigger != "every":
            raise ValueError(f"FusionConfig: every={self.every} only applies to trigger='every' (trigger={self.trigger!r})")


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Options of the searches: CTC greedy and time-synchronous prefix beam search over a CTC model's
    frames, and the label-synchronous beam search of a speech LLM (`label_sync`). Options of one kind
    of search set on the other are errors, except `token_prune_topk` (CTC only, default 16)."""

    method: MethodName = "ctc_time_sync"  # key in build.SEARCHES: "ctc_greedy", "ctc_time_sync", "label_sync"
    beam: int = 8  # K: prefixes kept per utterance after every frame (CTC) or label (label_sync)
    nbest: int = 1  # entries returned per utterance (<= beam), best first
    # label_sync only
    length_norm: float = 0.0  # final ranking by total / (labels + 1)^length_norm: 0 = off, 1 = per label
    max_length_ratio: float | None = 1.0  # at most ceil(ratio · speech vectors) labels; None = no such bound
    max_length: int | None = None  # at most this many labels; None = no such bound (one of the two is needed)
    pre_beam: int | None = None  # P: labels per hypothesis the partial scorers (CTC prefix) score; None = all
    pre_beam_eos: bool = False  # the pre-beam is the best P labels other than EOS plus EOS: CTC can end a
    # hypothesis that the model ranks EOS low in (noise, truncated audio); False = ESPnet's pre-beam
    pre_beam_threshold: float | None = None  # T: of the pre-beam, only labels within T (log-prob) of the
    # hypothesis' best get partial scores (speed-up where the model is sure); None = all P
    free_eos: bool = False  # every hypothesis may end at every label without taking a beam slot (K slots for
    # continuing ones): finds short outputs that ESPnet's top K over all candidates prunes, e.g. the empty
    # one on noise (search/label_sync.py); with a pre_beam it needs pre_beam_eos. False = ESPnet's rule
    ctc_weight: float = 0.0  # λ: joint decoding, (1 − λ)·log p_model + λ·log p_CTC prefix (the model's CTC
    # head); 0 = off. Set pre_beam with it: only P candidates per hypothesis get CTC prefix scores
    ctc_window: int | None = None  # joint decoding: a label starts within this many CTC frames of its
    # prefix's peak (search/ctc_prefix.py); None = anywhere
    ctc_draft: float | None = None  # speed-up (self-speculative): an utterance whose every CTC frame has a best
    # posterior >= this takes its CTC greedy path if the model agrees with it everywhere (search/speculative.py)
    ctc_model: str | None = None  # joint decoding with a separate CTC AM of the same labels: a name of the
    # decode config's ctc_models; None = the model's own CTC head
    # CTC only
    token_prune_topk: int | None = 16  # S: non-blank labels tried per frame (best by frame log-prob); None = all
    token_min_logp: float | None = None  # labels with frame log-prob below this are not tried; None = off
    beam_threshold: float | None = None  # drop prefixes scoring more than this below the utterance's best
    blank_collapse: float | None = None  # speed-up: drop a frame repeating a blank of prob >= this (e.g. 0.999)
    soft_collapse: float | None = None  # speed-up: the same for a non-blank label (the authors': 0.8)
    fusion: FusionConfig = dataclasses.field(default_factory=FusionConfig)  # LM / prior combination

    def __post_init__(self) -> None:
        if not self.method:
            raise ValueError("SearchConfig: method must be a non-empty name")
        if self.beam < 1:
            raise ValueError(f"SearchConfig: beam={self.beam} must be >= 1")
        if not 1 <= self.nbest:
            raise ValueError(f"SearchConfig: nbest={self.nbest} must be >= 1")
        if self.nbest > self.beam:
            raise ValueError(f"SearchConfig: nbest={self.nbest} must not exceed beam={self.beam}")
        if self.token_prune_topk is not None and self.token_prune_topk < 1:
            raise ValueError(
                f"SearchConfig: token_prune_topk={self.token_prune_topk} must be >= 1 or null (= all labels)"
            )
        if self.token_min_logp is not None and self.token_min_logp > 0:
            raise ValueError(f"SearchConfig: token_min_logp={self.token_min_logp} is a log-prob and must be <= 0")
        if self.beam_threshold is not None and not self.beam_threshold > 0:
            raise ValueError(f"SearchConfig: beam_threshold={self.beam_threshold} must be > 0 or null")
        for name in ("blank_collapse", "soft_collapse"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= 1:
                raise ValueError(f"SearchConfig: {name}={value} is a probability threshold in (0, 1] or null (= off)")
        self._check_kind_options()
        if self.method == "ctc_greedy" and (self.beam != 1 or self.nbest != 1):
            raise ValueError(
                f"SearchConfig: method='ctc_greedy' keeps one path; beam={self.beam} and nbest={self.nbest} "
                "must both be 1"
            )

    def _check_kind_options(self) -> None:
        """Options of the other kind of search, and the label-synchronous ranges."""
        ctc_only = {name: getattr(self, name) for name in ("token_min_logp", "beam_threshold", "blank_collapse",
                                                             "soft_collapse")}
        label_only = {"length_norm": self.length_norm != 0.0, "max_length_ratio": self.max_length_ratio != 1.0,
                      "max_length": self.max_length is not None, "pre_beam": self.pre_beam is not None,
                      "pre_beam_eos": self.pre_beam_eos, "free_eos": self.free_eos,
                      "pre_beam_threshold": self.pre_beam_threshold is not None,
                      "ctc_weight": self.ctc_weight != 0.0, "ctc_window": self.ctc_window is not None,
                      "ctc_model": self.ctc_model is not None, "ctc_draft": self.ctc_draft is not None}
        if self.method == "label_sync":
            misplaced = sorted(name for name, value in ctc_only.items() if value is not None)
            if misplaced:
                raise ValueError(f"SearchConfig: {', '.join(misplaced)} only apply to the CTC searches (method='label_sync')")
            if self.fusion.schedule == "delayed" or self.fusion.prior_scale > 0:
                raise ValueError("SearchConfig: method='label_sync' adds every scorer per label: use fusion.schedule "
                                 f"'label_wise' (or 'none') and no prior_scale (got {self.fusion.schedule!r}, "
                                 f"prior_scale={self.fusion.prior_scale})")
            if not math.isfinite(self.length_norm) or self.length_norm < 0:
                raise ValueError(f"SearchConfig: length_norm={self.length_norm} must be finite and >= 0")
            if self.max_length_ratio is None and self.max_length is None:
                raise ValueError("SearchConfig: method='label_sync' needs max_length_ratio or max_length (a search must end)")
            if self.max_length_ratio is not None and not self.max_length_ratio > 0:
                raise ValueError(f"SearchConfig: max_length_ratio={self.max_length_ratio} must be > 0 or null")
            if self.max_length is not None and self.max_length < 1:
                raise ValueError(f"SearchConfig: max_length={self.max_length} must be >= 1 or null")
            if not 0 <= self.ctc_weight < 1:
                raise ValueError(f"SearchConfig: ctc_weight={self.ctc_weight} must lie in [0, 1) (the model keeps 1 − λ)")
            if self.ctc_window is not None and (self.ctc_weight == 0 or self.ctc_window < 0):
                raise ValueError(f"SearchConfig: ctc_window={self.ctc_window} needs ctc_weight > 0 and must be >= 0 "
                                 f"frames (ctc_weight={self.ctc_weight})")
            if self.ctc_draft is not None and not 0 <= self.ctc_draft <= 1:
                raise ValueError(f"SearchConfig: ctc_draft={self.ctc_draft} is a posterior probability in [0, 1] or null")
            if self.ctc_draft is not None and self.nbest != 1:
                raise ValueError(f"SearchConfig: ctc_draft gives one hypothesis per utterance (nbest={self.nbest})")
            if self.ctc_model is not None and self.ctc_weight == 0:
                raise ValueError(f"SearchConfig: ctc_model={self.ctc_model!r} needs ctc_weight > 0")
            if self.pre_beam is not None and self.pre_beam < 1:
                raise ValueError(f"SearchConfig: pre_beam={self.pre_beam} must be >= 1 or null (= all labels)")
            if self.free_eos and self.pre_beam is not None and self.ctc_weight > 0 and not self.pre_beam_eos:
                raise ValueError("SearchConfig: free_eos with a pre_beam needs pre_beam_eos=true (every hypothesis' EOS "
                                 "gets its CTC score)")
            if self.free_eos and self.ctc_draft is not None:
                raise ValueError("SearchConfig: ctc_draft and free_eos do not combine (a draft is verified against the search without free_eos)")
            if self.pre_beam_threshold is not None and (self.pre_beam is None or self.ctc_weight == 0
                                                        or not self.pre_beam_threshold >= 0):
                raise ValueError(f"SearchConfig: pre_beam_threshold={self.pre_beam_threshold} needs ctc_weight > 0 and a "
                                 "pre_beam, and must be >= 0")
            if self.pre_beam_eos and self.pre_beam is None:
                raise ValueError("SearchConfig: pre_beam_eos=true needs a pre_beam (without one every label is scored)")
        else:
            misplaced = sorted(name for name, set_ in label_only.items() if set_)
            if misplaced:
                raise ValueError(f"SearchConfig: {', '.join(misplaced)} only apply to method='label_sync' "
                                 f"(method={self.method!r})")


# Options added after decodes had been recorded, with the default that keeps the old behaviour: at
# that default they stay out of a decode's record (asrllm.provenance.without_defaults).
ADDED_LATER = {"search.free_eos": False, "search.pre_beam_threshold": None}


def search_record(cfg: SearchConfig) -> dict[str, Any]:
    """The `search.*` inputs of a decode's record (asrllm.provenance).

    >>> "search.free_eos" in search_record(SearchConfig()), search_record(SearchConfig(method="label_sync",
    ...     free_eos=True))["search.free_eos"]
    (False, True)
    """
    return without_defaults(flatten(cfg, "search"), ADDED_LATER)
