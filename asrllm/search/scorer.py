"""The batched scorer protocol shared by every search loop (STYLE.md R3, R4, R7).

Shapes: B utterances, K beam, N = B·K hypotheses (hypothesis n belongs to utterance n // K),
T frames, V vocabulary, S candidate labels per hypothesis, L label length.

A scorer gives log-scores of the next label for N hypotheses at once. Its state is a
`BatchedState` dataclass (asrllm/batched.py, below both models and search, since model states such
as the LLM's KV cache are states too) whose tensor fields all have the hypothesis dimension first,
so that reordering after pruning is one `index_select` per field (`BatchedState.select`) and the
search never sees what is inside (KV caches, CTC prefix variables, ...).

Two kinds, told apart by type, never by name (R4):
- `Scorer`: scores the full vocabulary, (N, V). Example: an LM.
- `PartialScorer`: can also score only given candidates, (N, S); the search calls
  `score_partial` with the labels that survived pre-pruning. Example: a CTC prefix scorer, whose
  full-vocabulary cost would be prohibitive with an LLM's vocabulary.

Methods are marked (required) or (optional); optional ones have working defaults. Scorers keep no
per-call state in `self` (A4): everything that changes during a search lives in the state.

Unlike ESPnet's `scorer_interface.py` there is no single-hypothesis variant: everything is batched.
"""

from __future__ import annotations

import abc
import dataclasses

import torch
from torch import Tensor

from asrllm.batched import BatchedState


@dataclasses.dataclass(frozen=True)
class EncoderOutput:
    """What a search knows of the audio of B utterances, handed to every scorer's `init_state`.

    Label-only scorers (LMs, the prior) ignore it; a CTC prefix scorer reads `ctc_log_probs`, an
    AED or speech-LLM decoder reads `states` (joint decoding needs both).
    """

    lens: Tensor  # (B,) int64 valid rows of `states` (frames, or a speech LLM's input vectors)
    states: Tensor | None = None  # (B, T, D) encoder output (a speech LLM: its projected speech vectors)
    ctc_log_probs: Tensor | None = None  # (B, T', V) CTC log-softmax outputs
    ctc_lens: Tensor | None = None  # (B,) int64 valid CTC frames (None: the same as `lens`)

    @property
    def batch_size(self) -> int:
        return int(self.lens.shape[0])

    def rows(self, rows: list[int]) -> EncoderOutput:
        """The encoder output of the utterances `rows` only, cut to their longest length (what a
        batch of just those utterances would give)."""
        idx = torch.tensor(rows, device=self.lens.device)
        lens = self.lens[idx]
        ctc_lens = None if self.ctc_lens is None else self.ctc_lens[idx]
        u = int(lens.max())
        t = int((ctc_lens if ctc_lens is not None else lens).max())
        return EncoderOutput(lens=lens, states=None if self.states is None else self.states[idx, :u],
                             ctc_log_probs=None if self.ctc_log_probs is None else self.ctc_log_probs[idx, :t],
                             ctc_lens=ctc_lens)


class Scorer(abc.ABC):
    """Scores the next label of N hypotheses over the full vocabulary (ESPnet `BatchScorerInterface`).

    States. `init_state` gives the state of N empty prefixes; `score` returns the state after the
    given prefixes (N of them), which the search reorders with `select_state` after pruning. A
    state never holds anything per candidate label unless the scorer is partial (below).
    """

    @abc.abstractmethod
    def vocab_size(self) -> int:
        """(required) V: the number of labels this scorer knows (the search checks it against the AM's)."""

    @abc.abstractmethod
    def init_state(self, batch_size: int, beam: int, enc: EncoderOutput | None) -> BatchedState | None:
        """(required) State of N = batch_size·beam empty prefixes; enc: the audio, None for label-only use
        (e.g. rescoring text)."""

    @abc.abstractmethod
    def score(self, tokens: Tensor, lengths: Tensor, state: BatchedState | None) -> tuple[Tensor, BatchedState | None]:
        """(required) Log-scores of every next label given each prefix.

        tokens: (N, L) int64 label prefixes, padded; lengths: (N,) int64.
        Returns logp (N, V) and the state after the prefixes (the input state is not modified).
        """

    def select_state(self, state: BatchedState | None, src: Tensor, labels: Tensor | None = None) -> BatchedState | None:
        """(optional) Reorder after pruning: hypothesis n of the result continues hypothesis src[n] (N',);
        labels (N',) int64 is the label it appended (-1: none), for states that hold per-candidate
        information (`PartialScorer`). Default: `state.select(src)`."""
        return None if state is None else state.select(src)

    def max_labels(self, enc: EncoderOutput) -> Tensor | None:
        """(optional) (B,) int64 the most labels this scorer can score per utterance (an LLM's positions
        after its context), which a label-synchronous search respects; None (default): no limit."""
        return None

    def final_score(self, tokens: Tensor, lengths: Tensor, state: BatchedState | None) -> Tensor:
        """(optional) End-of-sentence log-score of each prefix, (N,). Default: 0."""
        return torch.zeros(tokens.shape[0], device=tokens.device)

    def score_labels(
        self, tokens: Tensor, start: Tensor, stop: Tensor, state: BatchedState | None
    ) -> tuple[Tensor, BatchedState | None]:
        """(optional) Summed log-scores (N,) float64 of the labels tokens[n, start[n]:stop[n]], each given
        the labels before it, and the state after them; `state` has seen the first start[n] labels.

        What delayed fusion adds when it catches up with pending labels. The default calls `score`
        once per position (a loop over positions, never over hypotheses); scorers that can take
        several labels in one call (`LMScorer`) override it.
        """
        total = torch.zeros(tokens.shape[0], dtype=torch.float64, device=tokens.device)
        if tokens.shape[0] == 0:
            return total, state
        for pos in range(int(start.min()), int(stop.max())):
            seen = torch.full_like(stop, pos).clamp(min=start).clamp(max=stop)  # (N,) condition on the labels before pos
            logp, state = self.score(tokens, seen, state)
            gained = logp.gather(1, tokens[:, pos : pos + 1].clamp(min=0))[:, 0].double()  # (N,)
            total += torch.where((start <= pos) & (pos < stop), gained, torch.zeros_like(gained))
        return total, state

    def label_distributions(self, tokens: Tensor, lengths: Tensor, state: BatchedState | None) -> Tensor:
        """(optional) (N, L + 1, V) log-scores of the label after each prefix tokens[n, :i], i = 0..L
        (teacher forcing: what verifying a draft needs), from a state that has seen none of the labels;
        rows beyond lengths[n] repeat the last. The default calls `score` once per position; scorers
        that take several labels in one call (`LMScorer`) override it."""
        out = []
        for i in range(tokens.shape[1] + 1):
            logp, state = self.score(tokens, torch.full_like(lengths, i).clamp(max=lengths), state)
            out.append(logp)
        return torch.stack(out, dim=1)

    def score_sequence(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """(optional) Whole-sequence log-score (N,) float64 of label sequences tokens (N, L), lengths (N,),
        end of sentence included: what N-best rescoring adds. The default is `score_labels` from an
        empty state plus `final_score`; scorers that can score a whole sequence in one call override it."""
        state = self.init_state(tokens.shape[0], 1, None)
        total, state = self.score_labels(tokens, torch.zeros_like(lengths), lengths, state)
        return total + self.final_score(tokens, lengths, state).double()


class PartialScorer(Scorer):
    """A scorer that can score only S given candidate labels per hypothesis (ESPnet `PartialScorerInterface`).

    Its state after `score_partial` may hold information per candidate, (N, S, ...) (a CTC prefix
    scorer's prefix probabilities of each extension); `select_state` then gets the chosen labels.
    """

    @abc.abstractmethod
    def score_partial(
        self, tokens: Tensor, lengths: Tensor, cand: Tensor, state: BatchedState | None
    ) -> tuple[Tensor, BatchedState | None]:
        """(required) Log-scores of candidates cand (N, S) int64 after each prefix: logp (N, S), new state."""

    def score(self, tokens: Tensor, lengths: Tensor, state: BatchedState | None) -> tuple[Tensor, BatchedState | None]:
        """(optional) Full-vocabulary scores via `score_partial` over all labels; override when cheaper."""
        n = tokens.shape[0]
        vocab = self.vocab_size()
        cand = torch.arange(vocab, device=tokens.device).expand(n, vocab)  # (N, V)
        return self.score_partial(tokens, lengths, cand, state)
