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
from typing import Literal, get_args

import torch
from torch import Tensor

from asrllm.batched import BatchedState
from asrllm.search.retokenize import WordRetokenizer
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

    def score_sequence(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """(N,) float64 sum of log_prior over each sequence's labels (no end-of-sentence term)."""
        valid = torch.arange(tokens.shape[1], device=tokens.device) < lengths[:, None]  # (N, L)
        return (self.log_prior.to(tokens.device)[tokens.clamp(min=0)] * valid).double().sum(dim=1)


class FusionSchedule:
    """Base of all schedules; every hook is (optional) and by default adds nothing.

    Subclasses set `weights` (scorer name -> weight, insertion order = record order) and override
    the hooks they need. Hooks never modify their inputs; per-search state lives in the returned
    `BatchedState`, never in `self` (A4).
    """

    def __init__(self, prior: LabelPrior | None = None) -> None:
        self.prior = prior
        self.weights: dict[str, float] = {} if prior is None else {PRIOR: prior.weight}

    def _named_scorers(self, scorers: dict[str, Scorer], weights: dict[str, float]) -> dict[str, Scorer]:
        """Check that `scorers` and `weights` name the same scorers; set `weights` (scorers first, then
        the prior) and return the scorers."""
        if set(scorers) != set(weights) or PRIOR in scorers:
            raise ValueError(f"{type(self).__name__}: scorers {sorted(scorers)} and weights {sorted(weights)} must "
                             f"name the same scorers (and not {PRIOR!r}, which comes with the prior)")
        self.weights = {**weights, **self.weights}
        return dict(scorers)

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
        alive: Tensor,
        frame: int,
        state: BatchedState | None,
    ) -> tuple[dict[str, Tensor], BatchedState | None]:
        """(optional) Hook (b), after the pruning of frame `frame`.

        tokens (N, L), lengths (N,): the surviving prefixes; is_new (N,) bool: the prefix emitted
        its last label at this frame; active (N,) bool: the utterance still has frames (padded
        frames change nothing); alive (N,) bool: the hypothesis is not a dead slot (score -inf).
        Returns name -> (N,) unweighted scores to add, and the new state.
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
        self.scorers = self._named_scorers(scorers, weights)

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


Trigger = Literal["every", "end", "shortest"]


@dataclasses.dataclass
class OwnTokens(BatchedState):
    """One LM's own tokens of the completed words of each hypothesis (delayed fusion v2)."""

    tokens: Tensor  # (N, M) int64, padded with 0; capacity M grows by doubling
    lengths: Tensor  # (N,) int64
    scored: Tensor  # (N,) int64 leading tokens whose LM score has been added

    def append(self, rows: list[int], new: list[list[int]]) -> OwnTokens:
        """Append new[i] to hypothesis rows[i] (a copy; rows are distinct)."""
        lengths = self.lengths.clone()
        grow = [int(lengths[r]) + len(t) for r, t in zip(rows, new)]
        tokens = self.tokens
        if max(grow, default=0) > tokens.shape[1]:
            extra = max(max(grow), 2 * tokens.shape[1]) - tokens.shape[1]
            tokens = torch.cat([tokens, tokens.new_zeros(tokens.shape[0], extra)], dim=1)
        else:
            tokens = tokens.clone()
        for r, t in zip(rows, new):
            if t:
                start = int(lengths[r])
                tokens[r, start : start + len(t)] = torch.tensor(t, dtype=torch.long)
                lengths[r] = start + len(t)
        return dataclasses.replace(self, tokens=tokens, lengths=lengths)


@dataclasses.dataclass
class DelayedState(BatchedState):
    """State of a `DelayedFusion` search; hypothesis dimension first everywhere."""

    scorer_states: dict[str, BatchedState | None]  # scorer name -> its state (reordered by its scorer)
    own: dict[str, OwnTokens]  # v2: scorer name -> its own tokens; v1: empty (the scorers read AM labels)
    covered: Tensor  # (N,) int64 AM labels the LMs can score (v2: those of completed words; v1: all)
    scored: Tensor  # (N,) int64 AM labels whose delayed scores (LM in v1, prior) have been added
    beam: int  # K: hypothesis n belongs to utterance n // K

    def select(self, src: Tensor) -> BatchedState:
        raise TypeError("DelayedState is reordered by DelayedFusion.select_state: each scorer reorders its own")


class DelayedFusion(FusionSchedule):
    """Delayed fusion (PAPER.md §5): LM scores join AFTER pruning (hook b), on a schedule.

    v1 (`retokenizers=None`): the scorers score AM labels; `trigger="every", every=1` adds each
    emitted label's LM log-prob after the pruning of the frame that emitted it.
    v2 (`retokenizers`: scorer name -> `WordRetokenizer`): each hypothesis keeps, apart from its AM
    labels, every scorer's OWN tokens of its completed words (`OwnTokens`), and the scorer scores
    those, so that an LLM with any tokenizer fuses with any AM.

    When pending scores are added (all of them, for all hypotheses, in one batched call per scorer):
    - "every": after the pruning of every `every`-th frame (N ∈ {1, 5, 10, 20} in the paper);
    - "end": only at the end: exactly the rescoring of the final beam (the beam is CTC's own);
    - "shortest" (our reading of Hori et al.'s shortest-hypothesis condition): for an utterance
      once every live hypothesis of its beam has at least one pending word (v1: label), so that no
      call is spent on a hypothesis with nothing to score.
    At the end every word is complete: all pending tokens and the LM's end of sentence are added.
    A prior is delayed in sync: the prior of the AM labels whose LM score is added, when it is.
    """

    def __init__(
        self,
        scorers: dict[str, Scorer],
        weights: dict[str, float],
        prior: LabelPrior | None = None,
        trigger: Trigger = "every",
        every: int = 1,
        retokenizers: dict[str, WordRetokenizer] | None = None,
    ) -> None:
        super().__init__(prior)
        if trigger not in get_args(Trigger):
            raise ValueError(f"DelayedFusion: trigger={trigger!r} is unknown (known: {', '.join(get_args(Trigger))})")
        if every < 1:
            raise ValueError(f"DelayedFusion: every={every} must be >= 1 frame")
        if retokenizers is not None and set(retokenizers) != set(scorers):
            raise ValueError(f"DelayedFusion: retokenizers {sorted(retokenizers)} must cover the scorers {sorted(scorers)}")
        self.scorers = self._named_scorers(scorers, weights)
        self.trigger, self.every = trigger, every
        self.retokenizers = retokenizers
        if retokenizers:
            am_tokenizers = {id(r.am_tokenizer) for r in retokenizers.values()}
            assert len(am_tokenizers) == 1, "all retokenizers must read the same AM labels"
            self.word_start = next(iter(retokenizers.values())).am_tokenizer.word_start_mask()  # (V,) bool

    def init_state(self, batch_size: int, beam: int, device: torch.device) -> DelayedState:
        n = batch_size * beam
        zeros = torch.zeros(n, dtype=torch.long, device=device)
        own = {name: OwnTokens(tokens=torch.zeros(n, 16, dtype=torch.long, device=device), lengths=zeros, scored=zeros)
               for name in (self.retokenizers or {})}
        states = {name: s.init_state(batch_size, beam, None) for name, s in self.scorers.items()}
        return DelayedState(scorer_states=states, own=own, covered=zeros, scored=zeros, beam=beam)

    def extend(
        self, tokens: Tensor, lengths: Tensor, cand: Tensor, state: BatchedState | None
    ) -> tuple[dict[str, Tensor], BatchedState | None]:
        return {}, state  # nothing joins before pruning, not even the prior (it is delayed in sync)

    def select_state(self, state: BatchedState | None, src: Tensor, labels: Tensor | None = None) -> DelayedState:
        assert isinstance(state, DelayedState), type(state)
        return DelayedState(
            scorer_states={n: s.select_state(state.scorer_states[n], src, labels) for n, s in self.scorers.items()},
            own={n: o.select(src) for n, o in state.own.items()},  # type: ignore[misc]
            covered=state.covered.index_select(0, src),
            scored=state.scored.index_select(0, src),
            beam=state.beam,
        )

    def after_prune(
        self,
        tokens: Tensor,
        lengths: Tensor,
        is_new: Tensor,
        active: Tensor,
        alive: Tensor,
        frame: int,
        state: BatchedState | None,
    ) -> tuple[dict[str, Tensor], DelayedState]:
        assert isinstance(state, DelayedState), type(state)
        state = self._cover(tokens, lengths, is_new, state)
        if self.trigger == "every":
            if (frame + 1) % self.every:
                return {}, state
            fire = torch.ones_like(alive)
        elif self.trigger == "end":
            return {}, state
        else:  # "shortest": per utterance, every live hypothesis has something pending
            pending = (state.covered - state.scored).masked_fill(~alive, torch.iinfo(torch.long).max)  # (N,)
            ready = pending.view(-1, state.beam).min(dim=1).values >= 1  # (B,)
            fire = ready.repeat_interleave(state.beam)  # (N,)
            if not bool(fire.any()):
                return {}, state
        return self._catch_up(tokens, torch.where(fire, state.covered, state.scored), fire, state)

    def final(self, tokens: Tensor, lengths: Tensor, state: BatchedState | None) -> dict[str, Tensor]:
        assert isinstance(state, DelayedState), type(state)
        state = self._cover(tokens, lengths, None, state)  # the open word of every hypothesis is complete
        everything = torch.ones_like(lengths, dtype=torch.bool)
        scores, state = self._catch_up(tokens, lengths, everything, state)
        for name, scorer in self.scorers.items():
            seq, seq_len = (state.own[name].tokens, state.own[name].lengths) if state.own else (tokens, lengths)
            eos = scorer.final_score(seq, seq_len, state.scorer_states[name]).to(scores[name].dtype)
            scores[name] = scores[name] + eos
        return scores

    def _cover(self, tokens: Tensor, lengths: Tensor, is_new: Tensor | None, state: DelayedState) -> DelayedState:
        """Extend `covered` to the labels the LMs can now score; v2: convert newly completed words to
        each LM's own tokens. is_new None: the end, where the open word of every hypothesis completes."""
        if self.retokenizers is None:
            return dataclasses.replace(state, covered=lengths)
        if is_new is None:
            stop, done = lengths, lengths > state.covered  # (N,) the open word ends with the labels
        else:
            last = tokens.gather(1, (lengths - 1).clamp(min=0)[:, None])[:, 0]  # (N,)
            starts = self.word_start.to(tokens.device)[last] & (lengths > 1)  # the new label starts a word ...
            stop, done = lengths - 1, is_new & starts & (lengths - 1 > state.covered)  # ... ending the previous one
        rows = done.nonzero().squeeze(1).tolist()  # a Python loop over the few hypotheses that completed a word
        if not rows:
            return state
        words = [labels[a:b] for labels, a, b in zip(tokens[rows].tolist(), state.covered[rows].tolist(),
                                                     stop[rows].tolist())]
        own = {}
        for name, retok in self.retokenizers.items():
            first = (state.own[name].lengths[rows] == 0).tolist()  # no earlier word produced tokens
            new = [retok.tokens_of_word(tuple(word), f) for word, f in zip(words, first)]
            own[name] = state.own[name].append(rows, new)
        covered = state.covered.clone()
        covered[rows] = stop[rows]
        return dataclasses.replace(state, own=own, covered=covered)

    def _catch_up(
        self, tokens: Tensor, target: Tensor, fire: Tensor, state: DelayedState
    ) -> tuple[dict[str, Tensor], DelayedState]:
        """Add the delayed scores of AM labels [scored, target) per hypothesis; fire (N,): the rows that
        catch up (v2: to all their own tokens)."""
        scores: dict[str, Tensor] = {}
        states, own = {}, {}
        for name, scorer in self.scorers.items():
            if self.retokenizers is None:
                scores[name], states[name] = scorer.score_labels(tokens, state.scored, target,
                                                                 state.scorer_states[name])
            else:
                o = state.own[name]
                stop = torch.where(fire, o.lengths, o.scored)  # (N,)
                scores[name], states[name] = scorer.score_labels(o.tokens, o.scored, stop, state.scorer_states[name])
                own[name] = dataclasses.replace(o, scored=stop)
        if self.prior is not None:
            pos = torch.arange(tokens.shape[1], device=tokens.device)  # (L,)
            span = (pos >= state.scored[:, None]) & (pos < target[:, None])  # (N, L)
            log_prior = self.prior.log_prior.to(tokens.device)[tokens]  # (N, L)
            scores[PRIOR] = (log_prior * span).double().sum(dim=1)  # (N,)
        return scores, DelayedState(scorer_states=states, own=own, covered=state.covered, scored=target,
                                    beam=state.beam)
