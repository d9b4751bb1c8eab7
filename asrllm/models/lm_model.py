"""Language model for training and perplexity: a `CausalLM` (`asrllm.models.llm`) + the LM loss.

Every LM of the paper (§5) is this one model kind (`model_kind: lm`), configured:
- an LLM with its own tokens (label unit (a)): `label_unit: llm`;
- an LLM re-vocabularised to the AM's SentencePiece pieces or characters (b, c):
  `label_unit: am_tokenizer` with `am_tokenizer: data/token/<name>`;
- the "own Transformer LM": `llm.arch` (an HF causal-LM config) trained from scratch, usually on
  the AM vocabulary;
- fine-tuning: `llm.source` is a pre-trained LLM, e.g. one trained here and exported with
  `asrllm.bin.export_llm` (`llm.source: <export dir>`);
  full fine-tuning, LoRA and frozen embeddings are options of `llm`.

Loss. A `TextBatch` row is BOS x_1 .. x_n EOS (length n + 2). The model reads BOS x_1 .. x_n and
predicts x_1 .. x_n EOS:

    loss_sum = - Σ_b Σ_{i=1}^{n_b + 1} log p(y_{b,i} | y_{b,<i}),   y_b = x_b EOS
    count    = Σ_b (n_b + 1)

so the trainer's loss is the per-token NLL (EOS included), and exp(loss) the token perplexity.

Shapes: B sentences, L tokens (BOS and EOS included), V vocabulary.

>>> from asrllm.models.llm import LLMConfig
>>> LMModelConfig(llm=LLMConfig(arch={"model_type": "qwen2"}), label_unit="am_tokenizer")
Traceback (most recent call last):
...
asrllm.config.ConfigError: model.am_tokenizer must name the AM tokenizer dir when model.label_unit is 'am_tokenizer'
"""

from __future__ import annotations

import dataclasses
import logging
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from asrllm.config import ConfigError
from asrllm.data.text import TextBatch, TextData
from asrllm.data.tokenizer import load_tokenizer
from asrllm.models.llm import LabelsOfItsLLM, LLMConfig, build_llm

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LMModelConfig:
    """The `model:` section of an LM training YAML (`model_kind: lm`)."""

    llm: LLMConfig  # the causal LM: local HF dir, GGUF, or an architecture trained from scratch; LoRA etc.
    label_unit: Literal["llm", "am_tokenizer"] = "llm"  # the LLM's own tokens, or the AM tokenizer's (re-vocab)
    am_tokenizer: str | None = None  # AM tokenizer dir (data/token/<name>) when label_unit is am_tokenizer

    def __post_init__(self) -> None:
        if self.label_unit == "am_tokenizer" and not self.am_tokenizer:
            raise ConfigError("model.am_tokenizer must name the AM tokenizer dir when model.label_unit is 'am_tokenizer'")
        if self.label_unit == "llm" and self.am_tokenizer:
            raise ConfigError(f"model.am_tokenizer={self.am_tokenizer!r} is only used with model.label_unit: am_tokenizer")


class LMModel(LabelsOfItsLLM, nn.Module):
    """A `CausalLM` trained or evaluated as a language model on `TextBatch`es."""

    train_data: ClassVar[type[TextData]] = TextData  # text, tokenised with the model's own tokenizer (train CLI)

    def __init__(self, cfg: LMModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.llm = build_llm(cfg.llm, load_tokenizer(cfg.am_tokenizer) if cfg.am_tokenizer else None)
        logger.info("LM over %s labels: V=%d, BOS %d, EOS %d", cfg.label_unit, self.tokenizer.vocab_size,
                    self.bos_id, self.eos_id)

    def forward(self, batch: TextBatch) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """-> (summed NLL of every predicted token, number of predicted tokens, {"acc": top-1 accuracy})."""
        inputs = batch.tokens[:, :-1]  # (B, L-1): BOS x_1 .. x_n (then padding)
        targets = batch.tokens[:, 1:]  # (B, L-1): x_1 .. x_n EOS (then padding)
        lens = batch.lengths - 1  # (B,) predicted tokens per sentence
        logits = self.llm.forward_logits(inputs, lens)  # (B, L-1, V)
        valid = torch.arange(inputs.shape[1], device=lens.device) < lens[:, None]  # (B, L-1)
        logits, targets = logits[valid].float(), targets[valid]  # (sum lens, V), (sum lens,)
        loss_sum = F.cross_entropy(logits, targets, reduction="sum")
        count = lens.sum()
        acc = (logits.argmax(-1) == targets).float().mean()
        return loss_sum, count, {"acc": float(acc)}

