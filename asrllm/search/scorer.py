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

import torch
from torch import Tensor

from asrllm.batched import BatchedState


class Scorer(abc.ABC):
    """Scores the next label of N hypotheses over the full vocabulary (ESPnet `BatchScorerInterface`)."""

    @abc.abstractmethod
    def init_state(self, batch_size: int, beam: int, enc: Tensor | None, enc_lens: Tensor | None) -> BatchedState | None:
        """(required) State of N = batch_size·beam empty prefixes.

        enc: (B, T, D) encoder output or log-probs, or None for scorers that do not look at audio.
        enc_lens: (B,) int64 valid frames.
        """

    @abc.abstractmethod
    def score(self, tokens: Tensor, lengths: Tensor, state: BatchedState | None) -> tuple[Tensor, BatchedState | None]:
        """(required) Log-scores of every next label given each prefix.

        tokens: (N, L) int64 label prefixes, padded; lengths: (N,) int64.
        Returns logp (N, V) and the state after the prefixes (the input state is not modified).
        """

    def select_state(self, state: BatchedState | None, src: Tensor) -> BatchedState | None:
        """(optional) Reorder after pruning: hypothesis n of the result is hypothesis src[n] (N',)."""
        return None if state is None else state.select(src)

    def final_score(self, tokens: Tensor, lengths: Tensor, state: BatchedState | None) -> Tensor:
        """(optional) End-of-sentence log-score of each prefix, (N,). Default: 0."""
        return torch.zeros(tokens.shape[0], device=tokens.device)


class PartialScorer(Scorer):
    """A scorer that can score only S given candidate labels per hypothesis (ESPnet `PartialScorerInterface`)."""

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

    @abc.abstractmethod
    def vocab_size(self) -> int:
        """(required) V: the number of labels this scorer knows."""
