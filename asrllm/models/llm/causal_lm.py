"""`CausalLM`: a pre-trained or config-built causal LM behind our tokenizer protocol.

One class for every LM of the project: a pre-trained LLM as an external LM for fusion (PAPER.md §5),
the LLM inside a speech LLM (§3), and the authors' "own Transformer LM", an HF causal-LM config
(`arch`) trained from scratch. It holds the full forward for training, batched incremental scoring
with a KV cache for search, LoRA merging, and save/load; `LMState` is its search state.

Incremental scoring (`init_state`, `score`, `select_state`): the KV cache of N hypotheses lives
in `LMState` as per-layer (N, H, C, Dh) tensors plus a (N, C) mask of real columns. Appending k
tokens per hypothesis where only `lengths[n]` of them are real leaves masked "holes" in the cache;
position ids count real tokens only, and every call builds its own 4-D additive attention mask
(N, 1, k, C + k), so the result equals a full forward pass of each sequence. Columns that are
holes for every hypothesis are dropped after each call and after each reorder, and when holes fill
more than half of the cache each hypothesis' real columns are moved to the front. Only attention
implementations that honour a 4-D mask are allowed ("sdpa", "eager"); sliding-window layers are
refused.

Shapes: N hypotheses (B·K), L label length, k tokens appended per call, C cache columns,
V vocabulary, D model dimension, H key/value heads, Dh head dimension.

>>> from asrllm.data.tokenizer import CharTokenizer
>>> from asrllm.models.llm import LLMConfig, build_llm
>>> cfg = LLMConfig(arch=dict(model_type="llama", hidden_size=32, intermediate_size=64,
...                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))
>>> _ = torch.manual_seed(0)
>>> lm = build_llm(cfg, label_tokenizer=CharTokenizer(list("ABC"))).eval()
>>> state = lm.init_state(2)
>>> logp, state = lm.score(torch.tensor([[4, 5], [6, 0]]), torch.tensor([2, 1]), state)
>>> tuple(logp.shape), state.positions.tolist()
((2, 2, 7), [3, 2])
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import shutil
from pathlib import Path

import torch
from torch import Tensor, nn

from asrllm.batched import BatchedState
from asrllm.config import ConfigError, apply_umask, from_dict, load_yaml, make_temp_dir, save_config
from asrllm.data.hf_tokenizer import HFTokenizer
from asrllm.data.tokenizer import Tokenizer, load_tokenizer, save_tokenizer
from asrllm.models.llm.config import META_FILE, CausalLMMeta, LLMConfig
from asrllm.models.llm.hf import (
    _base_model,
    _clean_base_state_dict,
    _hf_cache,
    _hf_cache_kwarg,
    _hf_cache_tensors,
    _hf_empty_cache,
    _hf_from_pretrained,
    _hf_layer_kv,
    _is_peft,
    _peft_load,
)
from asrllm.models.llm.sources import pretrained_dirs

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class LMState(BatchedState):
    """KV cache and positions of N hypotheses; every field has the hypothesis dimension first.

    The default `BatchedState.select` (index_select per field, element-wise over the per-layer
    tuples) is a correct reorder; `CausalLM.select_state` adds dropping of dead cache columns.
    """

    keys: tuple[Tensor, ...]  # per layer (N, H, C, Dh), after rotary embedding
    values: tuple[Tensor, ...]  # per layer (N, H, C, Dh)
    mask: Tensor  # (N, C) bool: column c of hypothesis n holds a real token (ragged appends leave holes)
    positions: Tensor  # (N,) int64 real tokens fed so far, BOS included = position id of the next token
    last_hidden: Tensor  # (N, D) final hidden state at the last real token (-> next-token distribution)


class CausalLM(nn.Module):
    """A causal LM over one label space: full forward for training, incremental batched scoring for search.

    `tokenizer` is the label tokenizer the ids belong to (`HFTokenizer`, or the AM tokenizer after
    re-vocabularisation); `bos_id` / `eos_id` are ids in that space.
    """

    def __init__(self, lm: nn.Module, tokenizer: Tokenizer, cfg: LLMConfig, revocab: bool = False) -> None:
        super().__init__()
        self.lm = lm
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.revocab = revocab
        self.bos_id, self.eos_id = int(tokenizer.bos_id), int(tokenizer.eos_id)
        base = _base_model(lm)
        layer_types = set(getattr(base.config, "layer_types", None) or ["full_attention"])
        if layer_types != {"full_attention"} or getattr(base.config, "use_sliding_window", False):
            raise ConfigError(f"LLM: sliding-window / hybrid attention is not supported (layer types {layer_types})")
        self._cache_kwarg = _hf_cache_kwarg(base.get_decoder())
        v = self.vocab_size
        if tokenizer.vocab_size > v:
            raise ConfigError(f"LLM: tokenizer has {tokenizer.vocab_size} tokens, the model only {v} output rows")

    # -- shared helpers -----------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """V: rows of the output matrix (may exceed the tokenizer's size: unused padding rows)."""
        return int(_base_model(self.lm).get_output_embeddings().weight.shape[0])

    @property
    def hidden_size(self) -> int:
        """D: width of the input embeddings (what a speech projector must produce)."""
        return int(_base_model(self.lm).get_input_embeddings().weight.shape[1])

    @property
    def max_positions(self) -> int | None:
        """Positions the model was built for (`max_position_embeddings`; None: not set)."""
        return getattr(_base_model(self.lm).config, "max_position_embeddings", None)

    @property
    def dtype(self) -> torch.dtype:
        """The parameter dtype (inputs given as vectors must have it)."""
        return self._dtype

    def frozen_pretrained_weights(self, prefix: str = "") -> set[str]:
        """State-dict names (after `prefix`) of the frozen weights of a pre-trained LLM (LoRA's base,
        frozen embeddings, a frozen LLM): `cfg.source` / `cfg.gguf` reload them as they were, so the
        checkpoints of a model holding this LLM leave them out. An `arch` model starts from random
        weights: none."""
        if self.cfg.arch is not None:
            return set()
        return {prefix + name for name, p in self.named_parameters(remove_duplicate=False) if not p.requires_grad}

    @property
    def hf_model(self) -> nn.Module:
        """The wrapped HF/PEFT model (tests, export); prefer the CausalLM methods."""
        return self.lm

    def _decoder(self) -> nn.Module:
        return _base_model(self.lm).get_decoder()

    def _head(self, hidden: Tensor) -> Tensor:
        """(…, D) final hidden states -> (…, V) float32 log-probs."""
        logits = _base_model(self.lm).get_output_embeddings()(hidden)
        return logits.float().log_softmax(-1)

    @property
    def _dtype(self) -> torch.dtype:
        return _base_model(self.lm).get_input_embeddings().weight.dtype

    @property
    def _device(self) -> torch.device:
        return _base_model(self.lm).get_input_embeddings().weight.device

    # -- training path ------------------------------------------------------------------------

    def forward_logits(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """Logits of a right-padded batch: tokens (N, L) int64 (the caller prepends `bos_id`), lengths (N,).

        Returns (N, L, V) in the model dtype; logits[:, j] predicts token j + 1. Positions j >=
        lengths[n] are undefined. Causal attention means real positions never see the padding, so
        no mask is needed (and SDPA's fast causal path applies). Differentiable.
        """
        n, length = tokens.shape
        valid = torch.arange(length, device=tokens.device) < lengths[:, None]  # (N, L)
        ids = tokens.masked_fill(~valid, 0)  # padding may hold -1 / -100: any id is fine there
        out = self.lm(input_ids=ids, use_cache=False)
        return out.logits

    def token_log_probs(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """log p of each label and of the final EOS given BOS + prefix: tokens (N, L) (no BOS/EOS) -> (N, L + 1).

        Column lengths[n] holds log p(EOS | whole sequence); columns beyond it are 0. Used for
        N-best rescoring, perplexity and as the full-forward oracle of the incremental path.
        """
        n, length = tokens.shape
        bos = torch.full((n, 1), self.bos_id, dtype=tokens.dtype, device=tokens.device)
        pos = torch.arange(length + 1, device=tokens.device)  # (L + 1,)
        valid = pos < lengths[:, None]  # (N, L + 1) real labels
        targets = torch.cat([tokens, torch.zeros_like(bos)], dim=1).masked_fill(~valid, 0)  # (N, L + 1)
        targets = torch.where(pos == lengths[:, None], self.eos_id, targets)
        logp = self.forward_logits(torch.cat([bos, tokens], dim=1), lengths + 1).float().log_softmax(-1)  # (N, L+1, V)
        out = logp.gather(-1, targets[..., None]).squeeze(-1)  # (N, L + 1)
        return out.masked_fill(pos > lengths[:, None], 0.0)

    @torch.no_grad()
    def prefix_log_probs(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """(N, V) float32 next-label distribution after BOS + each prefix tokens (N, L), lengths (N,), without a cache.

        The recompute-everything baseline of the incremental path (benchmarks), and handy for
        one-shot scoring: the output matrix is applied at the last real position only.
        """
        n, length = tokens.shape
        bos = torch.full((n, 1), self.bos_id, dtype=tokens.dtype, device=tokens.device)
        valid = torch.arange(length, device=tokens.device) < lengths[:, None]  # (N, L)
        ids = torch.cat([bos, tokens.masked_fill(~valid, 0)], dim=1)  # (N, L + 1)
        hidden = self._decoder()(input_ids=ids, use_cache=False).last_hidden_state  # (N, L + 1, D)
        return self._head(hidden[torch.arange(n, device=tokens.device), lengths])  # (N, V)

    # -- incremental scoring (search) -----------------------------------------------------------

    @torch.no_grad()
    def init_state(self, n: int) -> LMState:
        """State of n empty hypotheses: BOS fed (computed once, shared by all n)."""
        assert not self.training, "call .eval() before scoring (dropout would make scores random)"
        dev = self._device
        bos = torch.full((1, 1), self.bos_id, dtype=torch.long, device=dev)
        _, one = self._append(torch.ones(1, dtype=torch.long, device=dev), self.empty_state(1), ids=bos)
        return one.select(torch.zeros(n, dtype=torch.long, device=dev))

    def empty_state(self, n: int) -> LMState:
        """State of n hypotheses that have seen nothing, not even BOS (speech LLMs prefill from it)."""
        dev = self._device
        return LMState(
            keys=(), values=(), mask=torch.zeros(n, 0, dtype=torch.bool, device=dev),
            positions=torch.zeros(n, dtype=torch.long, device=dev), last_hidden=torch.zeros(n, 0, device=dev),
        )

    def embed(self, ids: Tensor) -> Tensor:
        """Input embeddings (…, D) of token ids (…) int64, in the model dtype; differentiable."""
        return _base_model(self.lm).get_input_embeddings()(ids)

    def append(self, embeds: Tensor, lengths: Tensor, state: LMState) -> tuple[Tensor, LMState]:
        """Feed input vectors embeds (N, k, D) (token embeddings, speech embeddings) after `state`, of
        which the first lengths[n] are real; differentiable (speech-LLM training) and exact (search).

        Returns the final hidden states (N, k, D) (undefined where j >= lengths[n]; `head` turns them
        into log-probs) and the new state. A speech LLM prefills [prompt; speech; prompt; BOS] with it.
        """
        return self._append(lengths, state, embeds=embeds)

    def memory_state(self, states: Tensor, lengths: Tensor) -> LMState:
        """A state whose KV cache holds, in every layer, that layer's key/value projections of
        states (N, S, D) (the first lengths[n] real), at positions 0 .. lengths[n] - 1: the speech
        memory of merged attention (docs/speech_llm.md). The states never pass through the layers;
        text appended after it attends to [memory ; text] in one softmax per layer. Differentiable."""
        n, s, _ = states.shape
        dev = states.device
        real = torch.arange(s, device=dev) < lengths[:, None]  # (N, S)
        positions = torch.arange(s, device=dev).expand(n, s)  # (N, S)
        keys, values = _hf_layer_kv(_base_model(self.lm), states.to(self._dtype), positions)
        return LMState(keys=keys, values=values, mask=real, positions=lengths.clone(),
                       last_hidden=torch.zeros(n, 0, device=dev))

    def head(self, hidden: Tensor) -> Tensor:
        """(…, D) final hidden states -> (…, V) float32 log-probs; differentiable."""
        return self._head(hidden)

    @torch.no_grad()
    def score(self, tokens: Tensor, lengths: Tensor, state: LMState) -> tuple[Tensor, LMState]:
        """Append tokens (N, k) int64 to each hypothesis, of which the first lengths[n] are real.

        Returns log_probs (N, k, V) float32, where log_probs[n, j] is the distribution of the token
        after token j (0 where j >= lengths[n]), and the new state (the input state is unchanged).
        """
        assert not self.training, "call .eval() before scoring (dropout would make scores random)"
        assert tokens.ndim == 2 and tokens.shape[0] == lengths.shape[0] == state.mask.shape[0], (
            tokens.shape, lengths.shape, state.mask.shape)
        if tokens.shape[1] == 0:
            return torch.zeros(tokens.shape[0], 0, self.vocab_size, device=tokens.device), state
        hidden, new = self._append(lengths, state, ids=tokens)
        logp = self._head(hidden)  # (N, k, V)
        if bool((lengths == tokens.shape[1]).all()):  # every input real (a search step): no (N, k, V) pass
            return logp, new
        real = torch.arange(tokens.shape[1], device=tokens.device) < lengths[:, None]  # (N, k)
        return logp.masked_fill(~real[..., None], 0.0), new

    def next_log_probs(self, state: LMState, rows: Tensor | None = None) -> Tensor:
        """(N, V) float32 distribution of the next token of each hypothesis (or of hypotheses `rows`)."""
        hidden = state.last_hidden if rows is None else state.last_hidden[rows]  # (N, D)
        with torch.no_grad():
            return self._head(hidden)

    def select_state(self, state: LMState, src: Tensor) -> LMState:
        """Hypothesis n of the result continues hypothesis src[n] (N',): reorder, drop, duplicate."""
        if src.shape[0] == state.mask.shape[0] and bool((src == torch.arange(src.shape[0], device=src.device)).all()):
            return state  # each hypothesis continues itself (greedy search): no copy of the cache
        return self._compact(state.select(src))

    def _append(
        self, lengths: Tensor, state: LMState, ids: Tensor | None = None, embeds: Tensor | None = None
    ) -> tuple[Tensor, LMState]:
        """Feed token ids (N, k) or input vectors embeds (N, k, D), the first lengths[n] real, after
        `state`; -> final hidden states (N, k, D) and the compacted new state."""
        n, k = (ids if ids is not None else embeds).shape[:2]
        c = state.mask.shape[1]
        dev = lengths.device
        j = torch.arange(k, device=dev)
        real = j < lengths[:, None]  # (N, k) the first lengths[n] inputs are real
        allowed = torch.cat([state.mask[:, None, :].expand(n, k, c),  # (N, k, C) real cache columns
                             real[:, None, :] & (j[None, :, None] >= j[None, None, :])], dim=2)  # (N, k, C+k)
        mask = torch.zeros(n, 1, k, c + k, dtype=self._dtype, device=dev)  # additive: 0 attend, min block
        mask.masked_fill_(~allowed[:, None], torch.finfo(self._dtype).min)
        positions = state.positions[:, None] + j  # (N, k) real inputs count; padding positions unused
        cache = _hf_cache(state.keys, state.values) if state.keys else _hf_empty_cache()
        inputs = {"input_ids": ids.masked_fill(~real, 0)} if ids is not None else {"inputs_embeds": embeds}
        out = self._decoder()(
            **inputs, attention_mask=mask, position_ids=positions, use_cache=True, **{self._cache_kwarg: cache},
        )
        hidden = out.last_hidden_state  # (N, k, D)
        keys, values = _hf_cache_tensors(cache)
        last = (lengths - 1).clamp(min=0)  # (N,)
        last_hidden = hidden[torch.arange(n, device=dev), last]  # (N, D)
        if state.last_hidden.shape[1]:  # hypotheses with nothing appended keep their hidden state
            last_hidden = torch.where((lengths > 0)[:, None], last_hidden, state.last_hidden.to(last_hidden.dtype))
        new = LMState(keys=keys, values=values, mask=torch.cat([state.mask, real], dim=1),
                      positions=state.positions + lengths, last_hidden=last_hidden)
        return hidden, self._compact(new)

    @staticmethod
    def _compact(state: LMState) -> LMState:
        """Drop cache columns that are holes for every hypothesis; when holes make up more than half
        of the cache (ragged appends, as delayed fusion makes them), move each hypothesis' real
        columns to the front instead. Column order does not matter to attention: keys carry their
        rotary positions, and every call masks by `mask`, so the scores stay the same."""
        n, c = state.mask.shape
        width = int(state.mask.sum(1).max()) if n else 0  # the most real columns any hypothesis has
        if c > 2 * width + 8:  # defragment: (N, width) real columns first, in their order
            order = torch.argsort((~state.mask).to(torch.int8), dim=1, stable=True)[:, :width]  # (N, width)
            return dataclasses.replace(
                state,
                keys=tuple(t.gather(2, order[:, None, :, None].expand(-1, t.shape[1], -1, t.shape[3]))
                           for t in state.keys),
                values=tuple(t.gather(2, order[:, None, :, None].expand(-1, t.shape[1], -1, t.shape[3]))
                             for t in state.values),
                mask=state.mask.gather(1, order),
            )
        keep = state.mask.any(0)  # (C,)
        if bool(keep.all()):
            return state
        cols = keep.nonzero().squeeze(1)  # (C',)
        return dataclasses.replace(
            state, keys=tuple(t.index_select(2, cols) for t in state.keys),
            values=tuple(t.index_select(2, cols) for t in state.values), mask=state.mask.index_select(1, cols),
        )

    # -- LoRA -------------------------------------------------------------------------------------

    def merged(self) -> CausalLM:
        """A copy with the LoRA update merged into the base weights (no PEFT at inference)."""
        if not _is_peft(self.lm):
            return copy.deepcopy(self)
        lm = copy.deepcopy(self.lm).merge_and_unload()
        cfg = dataclasses.replace(self.cfg, lora=None)
        return CausalLM(lm, self.tokenizer, cfg, self.revocab).train(self.training)

    # -- save / load ------------------------------------------------------------------------------

    def save(self, out_dir: str | Path) -> None:
        """Write `out_dir/`: llm.yaml, tokenizer/, model/ (safetensors HF dir), adapter/ (PEFT, with LoRA).

        Written into a temp dir and renamed. With LoRA on an unchanged pre-trained base
        (source/gguf, no re-vocabularisation) the base is not copied: `load` rebuilds it.
        """
        out_dir = Path(out_dir)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = make_temp_dir(out_dir.parent, f".{out_dir.name}.")
        try:
            peft = _is_peft(self.lm)
            base_saved = not (peft and not self.revocab and self.cfg.arch is None)
            save_tokenizer(self.tokenizer, tmp / "tokenizer")
            base = _base_model(self.lm)
            if base_saved:
                base.save_pretrained(str(tmp / "model"), state_dict=_clean_base_state_dict(base) if peft else None)
            if peft:
                self.lm.save_pretrained(str(tmp / "adapter"), save_embedding_layers=False)  # base has them
            save_config(CausalLMMeta(llm=self.cfg, revocab=self.revocab, base_saved=base_saved), tmp / META_FILE)
            apply_umask(tmp)  # safetensors writes 0600
            if out_dir.exists():
                shutil.rmtree(out_dir)
            os.rename(tmp, out_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        logger.info("saved causal LM to %s", out_dir)

    @classmethod
    def load(cls, in_dir: str | Path) -> CausalLM:
        """Read what `save` wrote; the model is returned in eval mode."""
        in_dir = Path(in_dir)
        if not (in_dir / META_FILE).is_file():
            raise ConfigError(f"{in_dir}: no {META_FILE} (not a CausalLM.save dir)")
        meta = from_dict(CausalLMMeta, load_yaml(in_dir / META_FILE))
        cfg = meta.llm
        if meta.base_saved:
            lm = _hf_from_pretrained(str(in_dir / "model"), dataclasses.replace(cfg, allow_online=False))
        else:
            lm = _hf_from_pretrained(pretrained_dirs(cfg)[0], cfg)
        tokenizer = _load_tokenizer(in_dir / "tokenizer", cfg, int(lm.get_output_embeddings().weight.shape[0]))
        if (in_dir / "adapter").is_dir():
            lm = _peft_load(lm, in_dir / "adapter")
        _set_trainable(lm, cfg, meta.revocab)
        return cls(lm, tokenizer, cfg, meta.revocab).eval()


class LabelsOfItsLLM:
    """For a model whose labels are those of the `CausalLM` it holds as `self.llm` (the LM of stage 8,
    the speech LLM): its tokenizer, BOS / EOS, and which weights its checkpoints leave out."""

    llm: CausalLM

    @property
    def tokenizer(self) -> Tokenizer:
        """The label tokenizer: the LLM's own, or the AM tokenizer after re-vocabularisation."""
        return self.llm.tokenizer

    @property
    def bos_id(self) -> int:
        return self.llm.bos_id

    @property
    def eos_id(self) -> int:
        return self.llm.eos_id

    def rebuilt_from_config(self) -> set[str]:
        """State-dict names of the pre-trained LLM's frozen weights (LoRA's base, frozen embeddings):
        `llm.source` / `llm.gguf` reload them as they were, so checkpoints leave them out
        (asrllm.train.checkpoint.checkpoint_state_dict); the source must stay where the config says.
        An LLM built from `llm.arch` starts from random weights: everything is stored. Other frozen
        weights (a speech LLM's encoder, from `init.from_model`) are stored too."""
        return self.llm.frozen_pretrained_weights("llm.")


def _load_tokenizer(tok_dir: Path, cfg: LLMConfig, vocab_size: int) -> Tokenizer:
    tok = load_tokenizer(tok_dir)
    if isinstance(tok, HFTokenizer):  # the user's options (lower-casing, BOS/EOS) come from the LLM config
        tok = HFTokenizer(tok_dir, cfg.lowercase, cfg.bos_token, cfg.eos_token, vocab_size)
    return tok


def _set_trainable(lm: nn.Module, cfg: LLMConfig, revocab: bool) -> None:
    """Freeze what the config says: LoRA freezes the base (PEFT), re-vocabularised matrices always train."""
    base = _base_model(lm)
    emb = [base.get_input_embeddings().weight, base.get_output_embeddings().weight]
    if revocab:
        for p in emb:  # new matrices start from an initialisation, they must train (with LoRA too)
            p.requires_grad_(True)
    elif cfg.freeze_embeddings:
        for p in emb:
            p.requires_grad_(False)
