"""Every call into HF transformers and PEFT: the version containment of the LLM package.

The HF API moves between versions. Transformers 5 replaced the tuple KV cache by `DynamicCache`
objects whose internals changed again across minor versions (`key_cache` lists ->
`layers[i].keys`), renamed `torch_dtype` to `dtype`, rewrote the mask construction several times
(`causal_lm.py` passes a ready 4-D mask, the one input every version takes as is), loads GGUF
through a quantizer whose models refuse `save_pretrained`, and `past_key_values` is renamed `cache`
in 5.24 (STYLE.md R7). Every HF/PEFT call of the project is a helper here (`_hf_*`, `_peft_*`), so
that a version bump is a change in this one file; the rest of the package sees HF models only as
`nn.Module`s and the KV cache only as per-layer tensors. Pinned: transformers 5.23, peft 0.21.
"""

from __future__ import annotations

import copy
import inspect
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from asrllm.config import ConfigError
from asrllm.models.llm.config import DTYPES, LLMConfig, LoRAConfig


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


def _hf_layer_kv(
    base: nn.Module, states: Tensor, position_ids: Tensor
) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """Per decoder layer, that layer's key and value projections of states (N, S, D) at position_ids
    (N, S), as its attention would cache them for these inputs: (N, H, S, Dh) each, keys after the
    rotary embedding (merged attention's speech memory). Llama-style layers (llama, qwen2, qwen3,
    mistral: `input_layernorm`, `self_attn.k_proj` / `v_proj`, an optional `k_norm` per head)."""
    decoder = base.get_decoder()
    cos, sin = decoder.rotary_emb(states, position_ids)  # (N, S, Dh) each
    cos, sin = cos[:, None], sin[:, None]  # (N, 1, S, Dh): broadcast over heads
    keys, values = [], []
    for layer in decoder.layers:
        attn = layer.self_attn
        if not all(hasattr(attn, name) for name in ("k_proj", "v_proj")) or not hasattr(layer, "input_layernorm"):
            raise ConfigError(f"merged attention needs Llama-style decoder layers; {type(layer).__name__} is not one")
        h = layer.input_layernorm(states)  # (N, S, D)
        shape = (*h.shape[:2], -1, attn.head_dim)  # (N, S, H, Dh)
        k = attn.k_proj(h).view(shape)
        if getattr(attn, "k_norm", None) is not None:  # qwen3: RMS norm per head before the rotation
            k = attn.k_norm(k)
        k = k.transpose(1, 2)  # (N, H, S, Dh)
        half = k.shape[-1] // 2
        k = k * cos + torch.cat([-k[..., half:], k[..., :half]], dim=-1) * sin  # rotate_half convention
        keys.append(k)
        values.append(attn.v_proj(h).view(shape).transpose(1, 2))
    return tuple(keys), tuple(values)


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
