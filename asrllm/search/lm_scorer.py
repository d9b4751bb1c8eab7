"""`LMScorer`: a causal LM (any `CausalLM` of asrllm.models.llm) as a full-vocabulary `Scorer`.

Shapes: B utterances, K beam, N = B·K hypotheses, L label length, k labels appended in one
call, V vocabulary.

The search hands every scorer the whole label prefixes (N, L) with their lengths; the LM only
needs what it has not seen yet. The state therefore records how many labels of each prefix the
KV cache already holds (`fed`), and `score` appends the difference in ONE adapter call: one new
label per hypothesis in label-wise fusion, several pending ones in delayed fusion, none for a
hypothesis whose prefix did not change (its distribution is recomputed from the cached last
hidden state). Reordering after pruning is the adapter's cache reorder (`select_state`); the
search never sees the cache (STYLE.md R7, whisper `rearrange_kv_cache`).

BOS is fed by `init_state`; `final_score` is log p(EOS | prefix) (PAPER.md §5: "LM EOS added at
the end"). Label ids are those of the adapter's tokenizer: the AM's for a re-vocabularised LLM
(label-wise fusion needs one vocabulary), the LLM's own for delayed fusion with re-tokenisation.

>>> from asrllm.data.tokenizer import CharTokenizer
>>> from asrllm.models.llm import LLMConfig, build_llm
>>> _ = torch.manual_seed(0)
>>> lm = build_llm(LLMConfig(arch=dict(model_type="llama", hidden_size=16, intermediate_size=32,
...     num_hidden_layers=1, num_attention_heads=2)), label_tokenizer=CharTokenizer(list("AB"))).eval()
>>> scorer = LMScorer(lm)
>>> state = scorer.init_state(batch_size=1, beam=2, enc=None)
>>> logp, state = scorer.score(torch.tensor([[4], [5]]), torch.tensor([1, 1]), state)
>>> eos = scorer.final_score(torch.tensor([[4], [5]]), torch.tensor([1, 1]), state)
>>> tuple(logp.shape), state.fed.tolist(), tuple(eos.shape), scorer.stats.calls
((2, 6), [1, 1], (2,), 1)
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from asrllm.batched import BatchedState
from asrllm.data.tokenizer import Tokenizer
from asrllm.models.llm import CausalLM, LMState
from asrllm.models.trained import load_trained_model, model_record
from asrllm.provenance import flatten
from asrllm.search.scorer import EncoderOutput, Scorer


@dataclasses.dataclass
class LMScorerState(BatchedState):
    """The adapter's cache plus how much of each prefix it holds; hypothesis dimension first."""

    lm: LMState  # KV cache after BOS + the first `fed[n]` labels of hypothesis n
    fed: Tensor  # (N,) int64 labels of the prefix already in the cache
    utt: Tensor  # (N,) int64 utterance of each hypothesis (for `LMCallStats` only)
    next_logp: Tensor | None = None  # (N, V) cached distribution after the fed labels (None: not cached)


@dataclasses.dataclass
class LMCallStats:
    """What an `LMScorer` cost since the last `reset`: counters for reports, never read by a search.

    calls: LLM forward calls (a call that only re-reads cached hidden states is not one);
    tokens: tokens fed through the LLM (real ones, not padding);
    utterance_calls: sum over calls of the utterances that fed a token in it, so that
    utterance_calls / utterances is "LLM calls per utterance" whatever the batching.
    """

    calls: int = 0
    tokens: int = 0
    utterance_calls: int = 0

    def count(self, new: Tensor, utt: Tensor) -> None:
        """One forward call that fed new[n] tokens (N,) to hypothesis n of utterance utt[n]."""
        self.calls += 1
        self.tokens += int(new.sum())
        self.utterance_calls += int(utt[new > 0].unique().numel())

    def reset(self) -> None:
        self.calls = self.tokens = self.utterance_calls = 0


class LMScorer(Scorer):
    """Full-vocabulary LM scores log p(next label | prefix) / temperature-renormalised, batched over N.

    The adapter must be in eval mode (the adapter asserts it). Keeps no per-call state (A4).
    """

    def __init__(self, lm: CausalLM, temperature: float = 1.0, cache_distributions: bool = True) -> None:
        if not (temperature > 0 and math.isfinite(temperature)):
            raise ValueError(f"LMScorer: temperature={temperature} must be finite and > 0")
        self.lm = lm
        self.temperature = temperature  # > 1 flattens, < 1 sharpens the LM distribution
        # speed-up: keep each prefix's next-label distribution (N, V) in the state, so that a prefix
        # that did not change is not run through the output matrix again (V = 49k for SmolLM2)
        self.cache_distributions = cache_distributions
        self.stats = LMCallStats()  # cost counters (reports); searches never read them

    @property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer of the LM's labels (delayed fusion re-tokenises text with it)."""
        return self.lm.tokenizer

    def vocab_size(self) -> int:
        """V: labels the LM scores (the search's label space)."""
        return self.lm.vocab_size

    def init_state(self, batch_size: int, beam: int, enc: EncoderOutput | None) -> LMScorerState:
        n = batch_size * beam
        state = self.lm.init_state(n)
        dev = state.positions.device
        utt = torch.arange(batch_size, device=dev).repeat_interleave(beam)  # (N,)
        return LMScorerState(lm=state, fed=torch.zeros(n, dtype=torch.long, device=dev), utt=utt)

    def score(self, tokens: Tensor, lengths: Tensor, state: BatchedState | None) -> tuple[Tensor, LMScorerState]:
        """logp (N, V) of the label after each prefix tokens (N, L), lengths (N,); feeds only unseen labels."""
        assert isinstance(state, LMScorerState), type(state)
        new = lengths - state.fed  # (N,) labels not yet in the cache
        assert bool((new >= 0).all()), f"prefixes shorter than what the LM state has seen: {lengths} < {state.fed}"
        k = int(new.max()) if new.numel() else 0
        if k == 0:
            logp = self._next(state)  # (N, V)
            return logp, self._with_next(state, logp)
        idx = state.fed[:, None] + torch.arange(k, device=tokens.device)  # (N, k) positions of the unseen labels
        idx = idx.clamp(max=tokens.shape[1] - 1)  # rows with fewer than k new labels: any valid index
        chunk = tokens.gather(1, idx)  # (N, k) the unseen labels, left-aligned; padding beyond new[n]
        all_logp, lm_state = self.lm.score(chunk, new, state.lm)  # (N, k, V)
        self.stats.count(new, state.utt)
        rows = torch.arange(tokens.shape[0], device=tokens.device)
        logp = self._temper(all_logp[rows, (new - 1).clamp(min=0)])  # (N, V) after the last new label
        idle = (new == 0).nonzero().squeeze(1)  # hypotheses with nothing new: cached distribution or hidden state
        if idle.numel():
            logp = logp.index_copy(0, idle, self._next(state, idle))
        return logp, self._with_next(LMScorerState(lm=lm_state, fed=lengths.clone(), utt=state.utt), logp)

    def score_labels(
        self, tokens: Tensor, start: Tensor, stop: Tensor, state: BatchedState | None
    ) -> tuple[Tensor, LMScorerState]:
        """(N,) float64 summed log-probs of labels tokens[n, start[n]:stop[n]] in ONE adapter call
        (delayed fusion's catch-up); start must be what the state has seen."""
        assert isinstance(state, LMScorerState), type(state)
        assert torch.equal(start, state.fed), f"start {start.tolist()} is not what the LM state has seen {state.fed.tolist()}"
        new = stop - start  # (N,)
        k = int(new.max()) if new.numel() else 0
        if k == 0:
            return torch.zeros(tokens.shape[0], dtype=torch.float64, device=tokens.device), state
        idx = (start[:, None] + torch.arange(k, device=tokens.device)).clamp(max=tokens.shape[1] - 1)  # (N, k)
        chunk = tokens.gather(1, idx)  # (N, k) the pending labels, left-aligned; padding beyond new[n]
        first = self._next(state).gather(1, chunk[:, :1])  # (N, 1): after what the cache holds
        all_logp, lm_state = self.lm.score(chunk, new, state.lm)  # (N, k, V): after each pending label
        self.stats.count(new, state.utt)
        tempered = self._temper(all_logp)
        rest = tempered[:, :-1].gather(2, chunk[:, 1:, None])[..., 0]  # (N, k - 1)
        per_label = torch.cat([first, rest], dim=1).double()  # (N, k)
        per_label = per_label.masked_fill(torch.arange(k, device=tokens.device) >= new[:, None], 0.0)
        new_state = LMScorerState(lm=lm_state, fed=stop.clone(), utt=state.utt)
        if self.cache_distributions and state.next_logp is not None:  # the distribution after the last label
            last = tempered[torch.arange(tokens.shape[0], device=tokens.device), (new - 1).clamp(min=0)]  # (N, V)
            new_state.next_logp = torch.where((new > 0)[:, None], last, state.next_logp)
        return per_label.sum(dim=1), new_state

    def select_state(self, state: BatchedState | None, src: Tensor, labels: Tensor | None = None) -> LMScorerState:
        assert isinstance(state, LMScorerState), type(state)
        cached = None if state.next_logp is None else state.next_logp.index_select(0, src)
        return LMScorerState(lm=self.lm.select_state(state.lm, src), fed=state.fed.index_select(0, src),
                             utt=state.utt.index_select(0, src), next_logp=cached)

    def final_score(self, tokens: Tensor, lengths: Tensor, state: BatchedState | None) -> Tensor:
        """(N,) log p(EOS | prefix), feeding labels the state has not seen yet."""
        logp, _ = self.score(tokens, lengths, state)
        return logp[:, self.lm.eos_id]

    def label_distributions(self, tokens: Tensor, lengths: Tensor, state: BatchedState | None) -> Tensor:
        """(N, L + 1, V) tempered log-probs after the state's context and after each label, in ONE call."""
        assert isinstance(state, LMScorerState) and not bool(state.fed.any()), "a state that has seen no labels"
        first = self._next(state)[:, None]  # (N, 1, V) after the context
        if tokens.shape[1] == 0:
            return first
        all_logp, _ = self.lm.score(tokens, lengths, state.lm)  # (N, L, V) after each label
        self.stats.count(lengths, state.utt)
        return torch.cat([first, self._temper(all_logp)], dim=1)

    def score_sequence(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """(N,) log p(labels, EOS) of whole sequences in ONE full forward pass (N-best rescoring);
        with a temperature, through the incremental default (the renormalisation is per position)."""
        if self.temperature != 1.0:
            return super().score_sequence(tokens, lengths)
        with torch.no_grad():
            self.stats.calls += 1
            self.stats.tokens += int(lengths.sum()) + tokens.shape[0]  # labels + EOS
            return self.lm.token_log_probs(tokens, lengths).double().sum(dim=1)

    def _next(self, state: LMScorerState, rows: Tensor | None = None) -> Tensor:
        """(N, V) tempered next-label distributions (of `rows`): cached, else from the cached hidden state."""
        if state.next_logp is not None:
            return state.next_logp if rows is None else state.next_logp[rows]
        return self._temper(self.lm.next_log_probs(state.lm, rows))

    def _with_next(self, state: LMScorerState, logp: Tensor) -> LMScorerState:
        return dataclasses.replace(state, next_logp=logp) if self.cache_distributions else state

    def _temper(self, logp: Tensor) -> Tensor:
        return logp if self.temperature == 1.0 else (logp / self.temperature).log_softmax(-1)


@dataclasses.dataclass(frozen=True)
class LMSpec:
    """A language model to fuse or rescore with: a trained LM experiment dir (asrllm.bin.train, `model_kind: lm`)."""

    model_dir: str  # e.g. exp/tiny_llm_ft_char (relative to where decoding runs: the recipe dir)
    checkpoint: str = "latest"  # latest | average | step_<N> dir name
    temperature: float = 1.0  # LMScorer temperature
    cache_distributions: bool = True  # speed-up: keep each prefix's next-label distribution (no effect on scores)


def load_lm_scorer(spec: LMSpec, device: torch.device) -> LMScorer:
    """THE way to get an LM for scoring: the trained LM of an experiment dir (`model_kind: lm`,
    asrllm.bin.train) with the weights `spec.checkpoint` names, in eval mode, as an `LMScorer`.
    Its labels are those it was trained on: the AM's (re-vocabularised, own LM) or the LLM's own."""
    model_dir = Path(spec.model_dir)
    model = load_trained_model(model_dir, spec.checkpoint, device)
    llm = getattr(model, "llm", None)
    if not isinstance(llm, CausalLM):
        raise ValueError(f"{model_dir}: a {type(model).__name__} is not a language model (model_kind lm)")
    return LMScorer(llm.eval(), spec.temperature, spec.cache_distributions)


def lm_record(spec: LMSpec, name: str) -> dict[str, Any]:
    """The LM `spec` names as a stage input (asrllm.provenance), its keys prefixed `lm.<name>.`."""
    record = {**model_record(Path(spec.model_dir), spec.checkpoint), "temperature": spec.temperature}  # not the
    # caching switch: it changes no score
    return flatten(record, f"lm.{name}")
