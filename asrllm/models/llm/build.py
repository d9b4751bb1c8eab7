"""`build_llm(LLMConfig)`: the one builder that composes source, re-vocabularisation, LoRA into a `CausalLM`.

Exactly one of `LLMConfig.source` / `gguf` (pre-trained, `sources.py`) or `arch` (HF config kwargs
with `model_type` ("qwen2", "llama", ...), random init seeded by the caller). Security: safetensors
only (`use_safetensors=True`), `trust_remote_code` off unless set. A model built from `arch` with a
label tokenizer simply gets V = the label vocabulary (own LM). Kept apart from `causal_lm.py` so
that the class reads in one screen (STYLE.md R1, R10).
"""

from __future__ import annotations

import logging

from asrllm.config import ConfigError
from asrllm.data.hf_tokenizer import HFTokenizer
from asrllm.data.tokenizer import Tokenizer
from asrllm.models.llm.causal_lm import CausalLM, _set_trainable
from asrllm.models.llm.config import LLMConfig
from asrllm.models.llm.hf import _base_model, _hf_from_config, _hf_from_pretrained, _peft_wrap
from asrllm.models.llm.revocab import revocabularise
from asrllm.models.llm.sources import pretrained_dirs

logger = logging.getLogger(__name__)


def build_llm(cfg: LLMConfig, label_tokenizer: Tokenizer | None = None, revocab_init: str = "mean") -> CausalLM:
    """Build the `CausalLM` that `cfg` describes; `label_tokenizer` re-vocabularises to that tokenizer.

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
    return CausalLM(lm, tokenizer, cfg, revocab)
