"""The LLM package: every causal LM of the project, behind our tokenizer protocol (DESIGN.md "LLM adapter").

A pre-trained LLM as an external LM for fusion (PAPER.md §5), the LLM inside a speech LLM (§3), and
the authors' "own Transformer LM" (an HF causal-LM config trained from scratch) are all a `CausalLM`,
built by `build_llm(LLMConfig)`. One job per module:
- `config.py`: `LLMConfig`, `LoRAConfig`, `CausalLMMeta` (the `llm.yaml` of a saved dir);
- `hf.py`: every HF transformers / PEFT call (version containment: an HF API change stays there);
- `sources.py`: pre-trained sources (local HF dirs, `CausalLM.save` dirs, GGUF converted once);
- `revocab.py`: re-vocabularisation of an LLM to an AM tokenizer (label units (b), (c));
- `causal_lm.py`: `CausalLM` (training forward, batched KV-cache scoring, LoRA merge, save/load), `LMState`,
  `LabelsOfItsLLM` (labels, BOS/EOS and checkpoint rule of a model that holds a `CausalLM`);
- `build.py`: `build_llm`, the one builder that composes the above.
This file only re-exports the public API.
"""

from asrllm.models.llm.build import build_llm
from asrllm.models.llm.causal_lm import CausalLM, LabelsOfItsLLM, LMState
from asrllm.models.llm.config import META_FILE, CausalLMMeta, LLMConfig, LoRAConfig
from asrllm.models.llm.revocab import piece_text, revocab_sources, revocabularise
from asrllm.models.llm.sources import cache_root, gguf_path, gguf_to_hf_dir, pretrained_dirs

__all__ = [
    "META_FILE",
    "CausalLM",
    "CausalLMMeta",
    "LLMConfig",
    "LMState",
    "LabelsOfItsLLM",
    "LoRAConfig",
    "build_llm",
    "cache_root",
    "gguf_path",
    "gguf_to_hf_dir",
    "piece_text",
    "pretrained_dirs",
    "revocab_sources",
    "revocabularise",
]
