"""LMModel: the training loss is the summed token NLL (EOS included) of the CausalLM's logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asrllm.config import ConfigError
from asrllm.data.text import TextBatchLoader
from asrllm.data.tokenizer import CharTokenizer, TokenizerConfig, train_tokenizer
from asrllm.models.llm import LLMConfig
from asrllm.models.lm_model import LMModel, LMModelConfig
from asrllm.testing.dummies import WORDS, dummy_text

TINY = dict(model_type="qwen2", hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2)
SENTENCES = [(f"s{i}", dummy_text(np.random.default_rng(i), 1, 6)) for i in range(12)]


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> LMModel:
    out = tmp_path_factory.mktemp("char")
    (out / "text").write_text(" ".join(WORDS) + "\n")
    train_tokenizer(TokenizerConfig(kind="char"), out / "text", out)
    torch.manual_seed(0)
    cfg = LMModelConfig(llm=LLMConfig(arch=TINY), label_unit="am_tokenizer", am_tokenizer=str(out))
    return LMModel(cfg).eval()


def test_loss_is_the_summed_nll_of_the_next_tokens_including_eos(lm: LMModel) -> None:
    loader = TextBatchLoader(SENTENCES, lm.tokenizer, lm.bos_id, lm.eos_id, max_batch_tokens=200, num_buckets=1)
    for batch in loader.epoch_batches(1):
        with torch.no_grad():
            loss_sum, count, stats = lm(batch)
            expected, tokens = 0.0, 0
            for b, (_, text) in enumerate(zip(batch.ids, batch.texts)):
                seq = [lm.bos_id, *lm.tokenizer.encode(text), lm.eos_id]
                logp = lm.llm.forward_logits(torch.tensor([seq[:-1]]), torch.tensor([len(seq) - 1]))[0]
                logp = logp.float().log_softmax(-1)  # (n + 1, V): one sentence alone, no padding
                expected -= sum(float(logp[i, t]) for i, t in enumerate(seq[1:]))
                tokens += len(seq) - 1
        assert int(count) == tokens == int((batch.lengths - 1).sum())
        assert float(loss_sum) == pytest.approx(expected, rel=1e-5)
        assert set(stats) == {"acc"} and 0.0 <= stats["acc"] <= 1.0


def test_loss_is_differentiable(lm: LMModel) -> None:
    batch = next(TextBatchLoader(SENTENCES, lm.tokenizer, lm.bos_id, lm.eos_id, max_batch_tokens=200).epoch_batches(1))
    lm.train()
    loss_sum, count, _ = lm(batch)
    (loss_sum / count).backward()
    lm.eval()
    grads = [p.grad for p in lm.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
    lm.zero_grad(set_to_none=True)


def test_label_unit_and_tokenizer_must_agree() -> None:
    with pytest.raises(ConfigError, match="model.am_tokenizer must name"):
        LMModelConfig(llm=LLMConfig(arch=TINY), label_unit="am_tokenizer")
    with pytest.raises(ConfigError, match="only used with model.label_unit: am_tokenizer"):
        LMModelConfig(llm=LLMConfig(arch=TINY), am_tokenizer="data/token/char")


def test_char_lm_exposes_the_am_ids(lm: LMModel) -> None:
    assert isinstance(lm.tokenizer, CharTokenizer)
    assert (lm.bos_id, lm.eos_id) == (2, 2)
    assert lm.llm.vocab_size == lm.tokenizer.vocab_size
