"""Language models through the CLIs, end to end on tiny text: train (with exact resume), perplexity, export.

- The byte-level BPE of the tiny LLM loads with `transformers.AutoTokenizer` and round-trips text.
- The train CLI trains `model_kind: lm` from a text file with the model's own tokenizer; a run
  stopped mid-epoch and resumed equals an uninterrupted one.
- The perplexity CLI equals exp(NLL / count) computed independently with the CausalLM's
  `token_log_probs`, at token and word level.
- An exported LLM is a pre-trained LLM for the next config (re-vocabularised to characters).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch

from asrllm.bin import export_llm, perplexity, train
from asrllm.models.trained import load_trained_model as load_model
from asrllm.data.text import read_texts
from asrllm.data.tokenizer import TokenizerConfig, train_tokenizer
from asrllm.models.llm import CausalLM
from asrllm.testing.dummies import make_char_tokenizer, make_datadir
from asrllm.train.checkpoint import (
    MODEL_FILE,
    latest_checkpoint,
    load_checkpoint_state_dict,
    load_model_state,
    save_model_state,
)

ARCH = ("{model_type: qwen2, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, "
        "num_attention_heads: 4, num_key_value_heads: 2, tie_word_embeddings: true}")
TRAINER = "trainer: {max_epochs: 2, log_every_steps: 1, progress_bar: false, tensorboard: false, plot: false, seed: 1}"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lm_cli")
    make_datadir(root / "data/train", 16, seed=0)
    make_datadir(root / "data/dev", 4, seed=1)
    lines = [line.split(" ", 1)[1] for line in (root / "data/train/text").read_text().splitlines()]
    (root / "lm.txt").write_text("".join(f"{t}\n" for t in lines * 3))
    train_tokenizer(TokenizerConfig(kind="hf", vocab_size=300), root / "lm.txt", root / "data/token/bpe")
    make_char_tokenizer(root / "data/train", root / "data/token/char")
    (root / "pretrain.yaml").write_text(
        f"model_kind: lm\nmodel:\n  llm: {{arch: {ARCH}, tokenizer: {root}/data/token/bpe}}\n"
        f"data: {{max_batch_tokens: 120, num_buckets: 2, seed: 3}}\n{TRAINER}\n"
        "optim: {lr: 3.0e-3, warmup_steps: 2}\n"
    )
    return root


def run_train(root: Path, config: str, data: str, exp: str, *overrides: str) -> int:
    return train.main([
        "--config", str(root / config), "--train-data", str(root / data), "--valid-data", str(root / "data/dev"),
        "--exp-dir", str(root / exp), *overrides,
    ])


def test_bpe_loads_with_autotokenizer_and_round_trips(setup: Path) -> None:
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(setup / "data/token/bpe"), local_files_only=True)
    text = read_texts(setup / "data/dev")[0][1]
    ids = hf.encode(text, add_special_tokens=False)
    assert hf.decode(ids) == text and len(ids) < len(text)
    assert hf.bos_token == hf.eos_token == "<|endoftext|>"


def test_resumed_lm_training_equals_uninterrupted_run(setup: Path) -> None:
    assert run_train(setup, "pretrain.yaml", "lm.txt", "exp/full", "optim.total_steps=20") == 0
    assert run_train(setup, "pretrain.yaml", "lm.txt", "exp/resumed", "optim.total_steps=20", "trainer.max_steps=3") == 0
    assert run_train(setup, "pretrain.yaml", "lm.txt", "exp/resumed", "optim.total_steps=20") == 0
    ends = [latest_checkpoint(setup / f"exp/{name}/checkpoints") for name in ("full", "resumed")]
    assert ends[0] is not None and ends[1] is not None and ends[0].name == ends[1].name
    full, resumed = (load_model_state(e / MODEL_FILE) for e in ends)  # type: ignore[union-attr]
    assert full.keys() == resumed.keys()
    for name in full:
        assert torch.equal(full[name], resumed[name]), name
    log = [json.loads(line) for line in (setup / "exp/full/train_log.jsonl").read_text().splitlines()]
    valid = [r["loss"] for r in log if r.get("split") == "valid"]
    assert len(valid) == 2 and valid[1] < valid[0]  # it learns


def test_tokenizer_option_is_rejected_for_lms(setup: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        assert run_train(setup, "pretrain.yaml", "lm.txt", "exp/bad", "--tokenizer", str(setup / "data/token/char")) == 1
    assert "brings its own tokenizer" in caplog.text
    with caplog.at_level(logging.ERROR):
        assert run_train(setup, "pretrain.yaml", "lm.txt", "exp/bad", "data.max_batch_seconds=3") == 1
    assert "data: unknown key 'max_batch_seconds'" in caplog.text
    assert not (setup / "exp/bad").exists()


def test_perplexity_equals_independent_nll(setup: Path) -> None:
    if latest_checkpoint(setup / "exp/full/checkpoints") is None:
        assert run_train(setup, "pretrain.yaml", "lm.txt", "exp/full", "optim.total_steps=20") == 0
    assert perplexity.main(["--model-dir", str(setup / "exp/full"), "--data", str(setup / "data/dev"),
                            "--max-batch-tokens", "50"]) == 0
    metrics = json.loads((setup / "exp/full/ppl_dev/metrics.json").read_text())
    model = load_model(setup / "exp/full", "latest", torch.device("cpu"))
    nll, tokens, words = 0.0, 0, 0
    for _, text in read_texts(setup / "data/dev"):  # one sentence at a time: no batching, no padding
        ids = model.tokenizer.encode(text)
        with torch.no_grad():
            nll -= float(model.llm.token_log_probs(torch.tensor([ids]), torch.tensor([len(ids)])).sum())
        tokens += len(ids) + 1
        words += len(text.split()) + 1
    assert metrics["num_tokens"] == tokens and metrics["num_words"] == words and metrics["num_sentences"] == 4
    assert metrics["token_ppl"] == pytest.approx(math.exp(nll / tokens), rel=1e-5)
    assert metrics["word_ppl"] == pytest.approx(math.exp(nll / words), rel=1e-5)
    assert metrics["command"].startswith("python -m asrllm.bin.perplexity --model-dir")
    assert metrics["test_set"] == "dev" and metrics["checkpoint"] == "latest"


def export_pretrained(root: Path) -> Path:
    """The pre-trained tiny LLM (exp/full) exported as a CausalLM.save dir, as mini_synth's stage 7 does."""
    export = root / "exp/full/llm"
    if not export.is_dir():
        if latest_checkpoint(root / "exp/full/checkpoints") is None:
            assert run_train(root, "pretrain.yaml", "lm.txt", "exp/full", "optim.total_steps=20") == 0
        assert export_llm.main(["--model-dir", str(root / "exp/full"), "--out-dir", str(export)]) == 0
    return export


def test_export_then_fine_tune_re_vocabularised(setup: Path) -> None:
    export = export_pretrained(setup)
    trained = load_model(setup / "exp/full", "latest", torch.device("cpu"))
    loaded = CausalLM.load(export)
    tokens, lengths = torch.tensor([[loaded.bos_id, 5, 7, 9]]), torch.tensor([4])
    with torch.no_grad():
        assert torch.allclose(loaded.forward_logits(tokens, lengths), trained.llm.forward_logits(tokens, lengths))

    (setup / "ft_char.yaml").write_text(
        f"model_kind: lm\nmodel:\n  llm: {{source: {export}}}\n"
        f"  label_unit: am_tokenizer\n  am_tokenizer: {setup}/data/token/char\n"
        f"data: {{max_batch_tokens: 400}}\n{TRAINER}\noptim: {{lr: 3.0e-3, warmup_steps: 2}}\n"
    )
    dev = str(setup / "data/dev")
    untrained = ["--model-dir", str(setup / "exp/ft_char_zeroshot"), "--config", str(setup / "ft_char.yaml")]
    assert perplexity.main([*untrained, "--data", dev]) == 0
    assert run_train(setup, "ft_char.yaml", "data/train", "exp/ft_char") == 0
    assert perplexity.main(["--model-dir", str(setup / "exp/ft_char"), "--data", dev]) == 0
    before, after = (json.loads((setup / f"exp/{d}/ppl_dev/metrics.json").read_text())
                     for d in ("ft_char_zeroshot", "ft_char"))
    assert before["vocab_size"] == after["vocab_size"] < 40  # characters, not the BPE
    assert before["checkpoint"].startswith("none") and after["word_ppl"] < before["word_ppl"]
    assert perplexity.main([*untrained, "--data", dev]) == 0  # re-running a zero-shot evaluation is fine
    trained_untrained = ["--model-dir", str(setup / "exp/ft_char"), "--config", str(setup / "ft_char.yaml")]
    assert perplexity.main([*trained_untrained, "--data", dev]) == 1  # but never over a trained model


def test_lora_checkpoints_hold_only_the_trainable_weights(setup: Path) -> None:
    """LoRA on a pre-trained LLM: checkpoints leave out the frozen base (the source reloads it);
    resume and the decode-side loader still restore the model exactly."""
    export = export_pretrained(setup)
    (setup / "ft_lora.yaml").write_text(
        f"model_kind: lm\nmodel:\n  llm: {{source: {export}, lora: {{r: 4, alpha: 8.0, dropout: 0.1}}}}\n"
        f"data: {{max_batch_tokens: 120}}\n{TRAINER}\noptim: {{lr: 3.0e-3, warmup_steps: 2, total_steps: 6}}\n"
    )
    assert run_train(setup, "ft_lora.yaml", "data/train", "exp/lora_full", "trainer.max_steps=6") == 0
    assert run_train(setup, "ft_lora.yaml", "data/train", "exp/lora_resumed", "trainer.max_steps=3") == 0
    assert run_train(setup, "ft_lora.yaml", "data/train", "exp/lora_resumed", "trainer.max_steps=6") == 0
    ends = [latest_checkpoint(setup / f"exp/{name}/checkpoints") for name in ("lora_full", "lora_resumed")]
    full, resumed = (load_model_state(e / MODEL_FILE) for e in ends)  # type: ignore[operator]
    assert full and all("lora_" in name for name in full), sorted(full)[:5]
    assert full.keys() == resumed.keys() and all(torch.equal(full[n], resumed[n]) for n in full)

    model = load_model(setup / "exp/lora_full", "latest", torch.device("cpu"))
    weights = model.state_dict()
    assert all(torch.equal(weights[n], full[n]) for n in full)
    base = CausalLM.load(export)
    tokens, lengths = torch.tensor([[base.bos_id, 5, 7, 9]]), torch.tensor([4])
    with torch.no_grad():  # the trained LoRA update changes the scores of the reloaded base
        delta = model.llm.forward_logits(tokens, lengths) - base.forward_logits(tokens, lengths)
    assert delta.abs().max() > 1e-4

    del full[sorted(full)[0]]
    broken = setup / "broken.safetensors"
    save_model_state(full, broken)
    with pytest.raises(ValueError, match=r"broken.safetensors: checkpoint does not fit .* 1 weights missing"):
        load_checkpoint_state_dict(model, load_model_state(broken), broken)
