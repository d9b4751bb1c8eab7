"""Fusion schedules: WHEN label scores other than CTC join a time-synchronous CTC search.

Shapes: B utterances, K beam, N = B·K hypotheses (hypothesis n belongs to utterance n // K),
S candidate labels per frame, L label length, V vocabulary.

The time-synchronous search (`time_sync.py`) keeps the acoustic CTC score of every prefix apart
from the other scores, and calls its `FusionSchedule` at three points of every frame (PAPER.md §5):

  (a) `extend`       when prefixes are extended by candidate labels, BEFORE pruning.
                     Label-wise fusion returns here the LM log-prob of each new label, so it takes
                     part in the pruning decision.
  (b) `after_prune`  after that frame's pruning, once the surviving prefixes are known (and after
                     `select_state` reordered the schedule's state). Delayed fusion v1 returns here
                     the LM log-prob of the labels just emitted; delayed fusion v2 scores all
                     pending LM tokens every N frames; label-wise fusion advances its LM state.
  (c) `final`        once at the end: end-of-sentence scores (LM EOS; pending delayed scores).

Every hook returns UNWEIGHTED scores keyed by scorer name; the search multiplies them by
`weights[name]`, adds them to the running total, and records the per-name sums in
`NBestEntry.scores`, so that N-best lists can be re-weighted (scale tuning) without decoding again.

A label prior is a static score per label (`LabelPrior`); every schedule takes one and adds it in
step with its LM scores (label-wise: in (a); a delayed schedule delays it in sync, PAPER.md §5).
The default `NoFusion` has no LM and adds the prior, if any, label-wise.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

from asrllm.batched import BatchedState
from asrllm.search.scorer import EncoderOutput, PartialScorer, Scorer

PRIOR = "prior"  # score name under which the label prior is recorded


@dataclasses.dataclass(frozen=True, eq=False)
class LabelPrior(PartialScorer):
    """Static label log-prior, for prior correction of CTC scores (hybrid-style "divide by the prior").

    The fused score of a prefix gets weight·log_prior[label] for every emitted label, with
    weight = -scale: the prior is subtracted. Stateless; usable as a `PartialScorer` by any search.

    >>> prior = LabelPrior.from_probs(torch.tensor([0.5, 0.25, 0.25]), blank_id=0, scale=0.3)
    >>> prior.log_prior.exp(), prior.weight
    (tensor([1.0000, 0.5000, 0.5000]), -0.3)
    """

    log_prior: Tensor  # (V,) log p(label); the blank's entry is 0 and never used
    scale: float = 1.0  # >= 0; the score added per label is -scale * log_prior[label]

    def __post_init__(self) -> None:
        if self.log_prior.ndim != 1:
            raise ValueError(f"LabelPrior: log_prior must have shape (V,), got {tuple(self.log_prior.shape)}")
        if not bool(torch.isfinite(self.log_prior).all()):
            raise ValueError("LabelPrior: log_prior has non-finite entries (a label with prior 0?)")
        if not (self.scale >= 0 and math.isfinite(self.scale)):
            raise ValueError(f"LabelPrior: scale={self.scale} must be finite and >= 0")

    @classmethod
    def from_probs(cls, probs: Tensor, blank_id: int, scale: float = 1.0, floor: float = 1e-12) -> LabelPrior:
        """From mean CTC softmax outputs (V,): blank removed, renormalised, floored, logged."""
        p = probs.double().clone()
        p[blank_id] = 0.0
        p = (p / p.sum()).clamp(min=floor)
        log_prior = p.log().float()
        log_prior[blank_id] = 0.0
        return cls(log_prior=log_prior, scale=scale)

    @property
    def weight(self) -> float:
        """The weight the search applies to the recorded (unweighted) prior score."""
        return -self.scale

    def vocab_size(self) -> int:
        return int(self.log_prior.shape[0])

    def init_state(self, batch_size: int, beam: int, enc: EncoderOutput | None) -> None:
        return None

    def score_partial(
        self, tokens: Tensor, lengths: Tensor, cand: Tensor, state: BatchedState | None
    ) -> tuple[Tensor, None]:
        return self.log_prior.to(cand.device)[cand], None  # (N, S)


class FusionSchedule:
    """Base of all schedules; every hook is (optional) and by default adds nothing.

    Subclasses set `weights` (scorer name -> weight, insertion order = record order) and override
    the hooks they need. Hooks never modify their inputs; per-search state lives in the returned
    `BatchedState`, never in `self` (A4).
    """

    def __init__(self, prior: LabelPrior | None = None) -> None:
        self.prior = prior
        self.weights: dict[str, float] = {} if prior is None else {PRIOR: prior.weight}

    def init_state(self, batch_size: int, beam: int, device: torch.device) -> BatchedState | None:
        """(optional) State for N = batch_size·beam empty prefixes."""
        return None

    def extend(
        self, tokens: Tensor, lengths: Tensor, cand: Tensor, state: BatchedState | None
    ) -> tuple[dict[str, Tensor], BatchedState | None]:
        """(optional) Hook (a): scores of appending cand (N, S) to prefixes tokens (N, L), lengths (N,).

        Returns name -> (N, S) unweighted log-scores, added before pruning, and the state after
        scoring (e.g. an LM cache that now holds the prefixes). Default: the prior, state unchanged.
        """
        if self.prior is None:
            return {}, state
        scores, _ = self.prior.score_partial(tokens, lengths, cand, None)
        return {PRIOR: scores}, state

    def select_state(self, state: BatchedState | None, src: Tensor, labels: Tensor | None = None) -> BatchedState | None:
        """(optional) Reorder after pruning: new hypothesis n continues old hypothesis src[n] (N,),
        having appended labels[n] (-1: none)."""
        return None if state is None else state.select(src)

    def after_prune(
        self,
        tokens: Tensor,
        lengths: Tensor,
        is_new: Tensor,
        active: Tensor,
        frame: int,
        state: BatchedState | None,
    ) -> tuple[dict[str, Tensor], BatchedState | None]:
        """(optional) Hook (b), after the pruning of frame `frame`.

        tokens (N, L), lengths (N,): the surviving prefixes; is_new (N,) bool: the prefix emitted
        its last label at this frame; active (N,) bool: the utterance still has frames (padded
        frames change nothing). Returns name -> (N,) unweighted scores to add, and the new state.
        """
        return {}, state

    def final(self, tokens: Tensor, lengths: Tensor, state: BatchedState | None) -> dict[str, Tensor]:
        """(optional) Hook (c): end-of-sentence scores, name -> (N,) unweighted. Default: none."""
        return {}


class NoFusion(FusionSchedule):
    """CTC alone; a label prior, if given, is added label-wise (it is static: nothing to delay).

    >>> NoFusion().weights
    {}
    """


@dataclasses.dataclass
class ScorerStates(BatchedState):
    """The states of a schedule's named scorers, each reordered by its own scorer's `select_state`."""

    states: dict[str, BatchedState | None]  # scorer name -> its state (hypothesis dimension first)

    def select(self, src: Tensor) -> BatchedState:
        raise TypeError("ScorerStates are reordered by LabelWiseFusion.select_state: each scorer reorders its own")


class LabelWiseFusion(FusionSchedule):
    """Label-wise fusion (PAPER.md §5): every named scorer's log-score of each candidate label joins
    the candidate's score BEFORE the frame's pruning (hook a), and its end-of-sentence score at the
    end (hook c); a prior, if given, is added in step.

    A `PartialScorer` scores only the S candidates; a full `Scorer` scores the whole vocabulary once
    per prefix, from which the candidates are gathered. Scorer states advance lazily: after pruning
    each surviving prefix keeps its parent's state (`select_state` with the appended label), and the
    next `score` call feeds what the state has not seen (one label for an extended prefix, none for
    one that stayed), in one batched call for all N hypotheses of all utterances.

    The schedule owns no model: `build.py` hands it named scorers and their weights.
    """

    def __init__(self, scorers: dict[str, Scorer], weights: dict[str, float], prior: LabelPrior | None = None) -> None:
        super().__init__(prior)
        if set(scorers) != set(weights) or PRIOR in scorers:
            raise ValueError(f"LabelWiseFusion: scorers {sorted(scorers)} and weights {sorted(weights)} must name "
                             f"the same scorers (and not {PRIOR!r}, which comes with the prior)")
        self.scorers = dict(scorers)
        self.weights = {**weights, **self.weights}  # scorers first, then the prior

    def init_state(self, batch_size: int, beam: int, device: torch.device) -> ScorerStates:
        return ScorerStates({name: s.init_state(batch_size, beam, None) for name, s in self.scorers.items()})

    def extend(
        self, tokens: Tensor, lengths: Tensor, cand: Tensor, state: BatchedState | None
    ) -> tuple[dict[str, Tensor], ScorerStates]:
        assert isinstance(state, ScorerStates), type(state)
        scores, _ = super().extend(tokens, lengths, cand, None)  # the prior, if any
        states = {}
        for name, scorer in self.scorers.items():
            if isinstance(scorer, PartialScorer):
                scores[name], states[name] = scorer.score_partial(tokens, lengths, cand, state.states[name])
            else:
                logp, states[name] = scorer.score(tokens, lengths, state.states[name])  # (N, V)
                scores[name] = logp.gather(1, cand)  # (N, S)
        return scores, ScorerStates(states)

    def select_state(self, state: BatchedState | None, src: Tensor, labels: Tensor | None = None) -> ScorerStates:
        assert isinstance(state, ScorerStates), type(state)
        return ScorerStates({n: s.select_state(state.states[n], src, labels) for n, s in self.scorers.items()})

    def final(self, tokens: Tensor, lengths: Tensor, state: BatchedState | None) -> dict[str, Tensor]:
        assert isinstance(state, ScorerStates), type(state)
        return {name: s.final_score(tokens, lengths, state.states[name]) for name, s in self.scorers.items()}
