"""asrllm's speech LLM and search rules as ESPnet scorers, for benchmarks/peers/espnet_joint.py.

Runs in the ESPnet venv only (it imports espnet). ESPnet's `BatchBeamSearch` decodes one utterance
at a time and hands every scorer the same `x`: here the utterance's CTC log-probs (T, O), which
ESPnet's own `CTCPrefixScorer` reads; the decoder wrapper is given the utterance's speech vectors
by `set_utterance` before each search (ESPnet's CTC scorer, too, keeps its utterance in `self.impl`).

- `LabelMap`: ESPnet's CTC scorer fixes blank = id 0 (`CTCPrefixScoreTH(logp, xlen, 0, eos)`), so
  the ESPnet ids are our CTC columns with the blank moved to the front (the identity where blank is
  label 0 already, as with an AM char tokenizer; a shift by one where blank is the extra column V of
  an LLM vocabulary). Decoder columns that are no label of ours (that extra column) score −inf.
- `SpeechLLMDecoder`: a `BatchScorerInterface` with one incremental KV cache per hypothesis, as
  ESPnet's TransformerDecoder.batch_score keeps per-hypothesis per-layer caches: each step stacks
  the hypotheses' caches, appends one label with `CausalLM.score` (the call our `SpeechLLMScorer`
  makes), and splits the result into per-hypothesis views again. Scores are float64, as our search
  casts every score before weighting.
- `SearchRules`: a weight-1 partial scorer holding the rules our search applies after its pre-beam
  and ESPnet's lacks: a label outside the pre-beam is no candidate (ESPnet's CTC gives it log 0 ≈
  −1e10, finite), blank is never a label (the same), and a hypothesis at the maximum length may
  only end, with EOS if EOS is among its candidates (our `ending` mask; ESPnet instead appends EOS
  without its score after `maxlen` steps).

Shapes: n running hypotheses (≤ K), L prefix length with ESPnet's leading SOS, O ESPnet ids (= CTC
columns V'), V decoder labels, S pre-beam candidates, U speech vectors, D LLM dim, C cache columns.
"""

from __future__ import annotations

import dataclasses

import torch
from espnet.nets.scorer_interface import BatchPartialScorerInterface, BatchScorerInterface
from torch import Tensor

from asrllm.models.llm import LMState
from asrllm.models.speech_llm import SpeechLLM


@dataclasses.dataclass(frozen=True)
class LabelMap:
    """ESPnet id ↔ our CTC column / label id, blank first."""

    order: Tensor  # (O,) int64 our column of each ESPnet id; order[0] = our blank
    inverse: Tensor  # (O,) int64 ESPnet id of each of our columns
    num_labels: int  # V: our columns < V are decoder labels

    @classmethod
    def blank_first(cls, num_labels: int, ctc_columns: int, blank: int) -> LabelMap:
        if not (num_labels <= ctc_columns and 0 <= blank < ctc_columns):
            raise ValueError(f"LabelMap: {num_labels} labels, {ctc_columns} CTC columns and blank {blank} do not fit")
        order = torch.tensor([blank] + [c for c in range(ctc_columns) if c != blank])  # (O,)
        return cls(order, torch.argsort(order), num_labels)

    @property
    def size(self) -> int:
        return int(self.order.numel())

    def ours(self, ids: Tensor) -> Tensor:
        return self.order[ids]

    def espnet(self, label: int) -> int:
        return int(self.inverse[label])

    def columns(self, scores: Tensor) -> Tensor:
        """(…, V) scores of our labels -> (…, O) in ESPnet's order, −inf where a column is no label."""
        pad = scores.new_full((*scores.shape[:-1], self.size - self.num_labels), -torch.inf)
        return torch.cat([scores, pad], dim=-1)[..., self.order]


class GivenLogProbs:
    """The `ctc` module ESPnet's CTCPrefixScorer calls: x already holds the log-probs (no second
    log_softmax, which would change the last digits)."""

    @staticmethod
    def log_softmax(x: Tensor) -> Tensor:
        return x


class SpeechLLMDecoder(BatchScorerInterface):
    """log p(label | speech, prompt, prefix) of our speech LLM over ESPnet ids, one KV cache per hypothesis."""

    def __init__(self, model: SpeechLLM, labels: LabelMap) -> None:
        self.model = model
        self.labels = labels
        self.speech: Tensor | None = None  # (U, D) of the utterance being decoded

    def set_utterance(self, speech: Tensor) -> None:
        self.speech = speech

    def batch_init_state(self, x: Tensor) -> LMState:
        """The context (prompt, speech, BOS) of the utterance, prefilled once: one row."""
        assert self.speech is not None, "set_utterance before each search"
        return self.model.context(self.speech[None], torch.tensor([self.speech.shape[0]]))

    def batch_score(self, ys: Tensor, states: list[LMState], xs: Tensor) -> tuple[Tensor, list[LMState]]:
        """scores (n, O) float64 of every next ESPnet id after ys (n, L), and the n states after them."""
        llm = self.model.llm
        state = _stack(states)
        if ys.shape[1] == 1:  # only SOS: the context ends with BOS, its last hidden state predicts
            logp = llm.next_log_probs(state)  # (n, V)
        else:  # the cache holds all but the label appended last
            new = self.labels.ours(ys[:, -1])[:, None]  # (n, 1)
            logp, state = llm.score(new, torch.ones_like(new[:, 0]), state)  # (n, 1, V)
            logp = logp[:, 0]
        return self.labels.columns(logp.double()), _split(state)


class SearchRules(BatchPartialScorerInterface):
    """0 for the pre-beam candidates, −inf for the rest, for blank and, at the maximum length, for
    every candidate but EOS (the module docstring says why)."""

    def __init__(self, num_ids: int, blank: int, eos: int) -> None:
        self.num_ids = num_ids
        self.blank = blank
        self.eos = eos
        self.max_length: int | None = None  # labels a hypothesis of the utterance being decoded may have

    def set_max_length(self, max_length: int) -> None:
        self.max_length = max_length

    def batch_init_state(self, x: Tensor) -> None:
        return None

    def batch_score_partial(self, ys: Tensor, ids: Tensor | None, states: list, xs: Tensor) -> tuple[Tensor, list]:
        """(n, O) float64 additive scores of the candidates ids (n, S) (None: every id) after ys (n, L)."""
        assert self.max_length is not None, "set_max_length before each search"
        n = ys.shape[0]
        allowed = torch.zeros(n, self.num_ids, dtype=torch.bool)  # (n, O)
        if ids is None:
            allowed[:] = True
        else:
            allowed.scatter_(1, ids, True)
        allowed[:, self.blank] = False
        if ys.shape[1] - 1 >= self.max_length:  # every running hypothesis has L − 1 labels
            allowed[:, : self.eos] = False
            allowed[:, self.eos + 1 :] = False
        scores = torch.zeros(n, self.num_ids, dtype=torch.float64).masked_fill(~allowed, -torch.inf)
        return scores, [None] * n


def _stack(states: list[LMState]) -> LMState:
    """n one-row states -> one n-row state (every hypothesis of a step has as many cache columns)."""
    widths = {s.mask.shape[1] for s in states}
    assert len(widths) == 1, f"cache widths {sorted(widths)} differ within one step"
    first = states[0]
    changes = {}
    for f in dataclasses.fields(first):
        value = getattr(first, f.name)
        if isinstance(value, Tensor):
            changes[f.name] = torch.cat([getattr(s, f.name) for s in states])
        else:  # per-layer tuples (N, H, C, Dh)
            changes[f.name] = tuple(torch.cat([getattr(s, f.name)[i] for s in states]) for i in range(len(value)))
    return dataclasses.replace(first, **changes)


def _split(state: LMState) -> list[LMState]:
    """One n-row state -> n one-row views."""
    rows = []
    for b in range(state.mask.shape[0]):
        changes = {}
        for f in dataclasses.fields(state):
            value = getattr(state, f.name)
            changes[f.name] = value[b : b + 1] if isinstance(value, Tensor) else tuple(v[b : b + 1] for v in value)
        rows.append(dataclasses.replace(state, **changes))
    return rows
