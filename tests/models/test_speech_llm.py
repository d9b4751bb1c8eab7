"""The speech LLM (asrllm.models.speech_llm): interfaces, training strategies, checkpoints and bad input.

References: a one-layer LLM, where merged attention and the prefix interface are the same function;
the full forward pass of a transcript against the search's incremental KV-cache scoring; the
parameters before and after an optimiser step; an uninterrupted training run against a resumed one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from asrllm.bin import decode, train
from asrllm.config import ConfigError
from asrllm.data.hf_tokenizer import HFTokenizer
from asrllm.data.tokenizer import TokenizerConfig, train_tokenizer
from asrllm.models.conformer import ConformerConfig
from asrllm.models.ctc_model import CTCModel, CTCModelConfig
from asrllm.models.llm import LLMConfig, LoRAConfig, build_llm
from asrllm.models.speech_llm import PromptConfig, SpeechLLM, SpeechLLMConfig
from asrllm.search.model_scorers import SpeechLLMScorer, encoder_output
from asrllm.testing.dummies import dummy_batch, dummy_text, make_datadir
from asrllm.train.checkpoint import MODEL_FILE, init_from_model, latest_checkpoint, load_model_state, save_model_state

ENCODER = ConformerConfig(num_layers=1, d_model=16, num_heads=2, ff_dim=32)
TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A character tokenizer, and a stand-in pre-trained Qwen2 dir with its own byte-level BPE."""
    root = tmp_path_factory.mktemp("speech_llm")
    texts = [dummy_text(np.random.default_rng(i), 3, 10) for i in range(100)]
    (root / "text").write_text("".join(f"{t}\n" for t in texts))
    train_tokenizer(TokenizerConfig(kind="char"), root / "text", root / "char")
    llm = root / "qwen2_tiny"
    (root / "lower").write_text("".join(f"{t.lower()}\n" for t in texts))
    HFTokenizer.train(TokenizerConfig(kind="hf", vocab_size=300), root / "lower", llm)
    torch.manual_seed(1)
    build_llm(LLMConfig(arch=dict(model_type="qwen2", **TINY, tie_word_embeddings=False), tokenizer=str(llm))
              ).hf_model.save_pretrained(str(llm))
    return {"root": root, "char": root / "char", "llm": llm}


def char_config(dirs, interface="prefix", layers=2, **kw) -> SpeechLLMConfig:
    arch = dict(model_type="llama", hidden_size=16, intermediate_size=32, num_hidden_layers=layers,
                num_attention_heads=2, num_key_value_heads=1)
    return SpeechLLMConfig(llm=LLMConfig(arch=arch), label_unit="am_tokenizer", am_tokenizer=str(dirs["char"]),
                           interface=interface, encoder=ENCODER, **{"prompt": PromptConfig("", ""), **kw})


def llm_config(dirs, interface="prefix", **kw) -> SpeechLLMConfig:
    llm = LLMConfig(source=str(dirs["llm"]), lowercase=True, **kw.pop("llm", {}))
    return SpeechLLMConfig(llm=llm, interface=interface, encoder=ENCODER,
                           prompt=PromptConfig("user: ", " transcribe speech to text. assistant: "), **kw)


def model_of(cfg: SpeechLLMConfig, seed: int = 0) -> SpeechLLM:
    torch.manual_seed(seed)
    return SpeechLLM(cfg)


def test_merged_attention_with_one_layer_is_the_prefix_interface(dirs) -> None:
    """With one LLM layer both interfaces read the same layer-0 keys/values of the speech vectors:
    merged attention's per-layer projections (CausalLM.memory_state) must equal the prefix's cache."""
    for prompt in (PromptConfig("", ""), PromptConfig("AB ", "")):
        prefix = model_of(char_config(dirs, "prefix", layers=1, prompt=prompt)).eval()
        merged = model_of(char_config(dirs, "merged_attention", layers=1, prompt=prompt)).eval()
        merged.load_state_dict(prefix.state_dict())
        batch = dummy_batch(3, vocab_size=prefix.tokenizer.vocab_size, max_samples=4000, seed=0)
        with torch.no_grad():
            speech, lens, _, _ = prefix.encode(batch.audio, batch.audio_lens)
            a = prefix.transcript_log_probs(prefix.context(speech, lens), batch.targets, batch.target_lens)
            b = merged.transcript_log_probs(merged.context(speech, lens), batch.targets, batch.target_lens)
        if prompt.before:  # the prompt sits before the speech in one, after the memory in the other
            assert not torch.allclose(a, b)
        else:
            assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("interface", ["prefix", "merged_attention"])
def test_incremental_scoring_equals_the_full_forward(dirs, interface) -> None:
    model = model_of(llm_config(dirs, interface)).eval()
    tok = model.tokenizer
    texts = ["the cat sat", "on a mat today", "x"]
    ids = [tok.encode(t) for t in texts]
    tokens = torch.tensor([i + [0] * (max(map(len, ids)) - len(i)) for i in ids])
    lengths = torch.tensor([len(i) for i in ids])
    batch = dummy_batch(3, max_samples=4000, seed=5)
    enc = encoder_output(model, batch.audio, batch.audio_lens)
    with torch.no_grad():
        full = model.transcript_log_probs(model.context(enc.states, enc.lens), tokens, lengths)  # (3, L + 1)
    scorer = SpeechLLMScorer(model)
    state = scorer.init_state(3, 1, enc)
    steps = []
    for j in range(int(lengths.max()) + 1):  # one label per call, as the search feeds them
        logp, state = scorer.score(tokens, torch.minimum(lengths, torch.tensor(j)), state)
        target = torch.where(torch.tensor(j) == lengths, model.eos_id, tokens[:, min(j, tokens.shape[1] - 1)])
        steps.append(torch.where(torch.tensor(j) <= lengths, logp.gather(1, target[:, None])[:, 0], 0.0))
    assert torch.allclose(torch.stack(steps, 1), full, atol=1e-5)


STRATEGIES = {
    "full": ({}, {"frontend", "encoder", "projector", "llm"}),
    "lora": ({"llm": {"lora": LoRAConfig(r=4, alpha=8.0, dropout=0.0)}}, {"encoder", "projector", "lora"}),
    "frozen_llm": ({"freeze_llm": True}, {"encoder", "projector"}),
    "frozen_encoder_llm": ({"freeze_llm": True, "freeze_encoder": True}, {"projector"}),
    "aux_ctc": ({"aux_ctc_weight": 0.5, "freeze_llm": True}, {"encoder", "projector", "ctc_head"}),
}


def group(name: str) -> str:
    return "lora" if "lora_" in name else name.split(".")[0]


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_only_the_intended_parameters_change(dirs, strategy) -> None:
    options, trained = STRATEGIES[strategy]
    model = model_of(llm_config(dirs, **options)).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    tok = model.tokenizer
    batch = dummy_batch(2, max_samples=16000, seed=1)  # >= 25 encoder frames: room for CTC
    ids = [tok.encode("the cat"), tok.encode("a dog sat")]
    batch.targets = torch.tensor([i + [0] * (max(map(len, ids)) - len(i)) for i in ids])
    batch.target_lens = torch.tensor([len(i) for i in ids])
    loss, count, stats = model(batch)
    assert count == int(batch.target_lens.sum()) + 2 and ("ctc" in stats) == ("aux_ctc" == strategy)
    (loss / count).backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1).step()
    changed = {group(n) for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == trained - {"frontend"}  # the log-mel frontend has no parameters
    frozen = {group(n) for n, p in model.named_parameters() if not p.requires_grad}
    assert not frozen & trained


def test_prompt_the_tokenizer_cannot_encode_is_named(dirs) -> None:
    with pytest.raises(ConfigError, match=r"model\.prompt\.before='USER: '.*cannot encode"):
        SpeechLLM(char_config(dirs, prompt=PromptConfig("USER: ", "")))


def test_encoder_from_a_ctc_am_and_one_of_another_size(dirs, tmp_path) -> None:
    am = CTCModel(CTCModelConfig(vocab_size=12, encoder=ENCODER))
    save_model_state(am.state_dict(), tmp_path / "am.safetensors")
    model = model_of(char_config(dirs))
    llm_before = {n: p.clone() for n, p in model.state_dict().items() if n.startswith("llm.")}
    copied, left = init_from_model(model, tmp_path / "am.safetensors", [], ["frontend.*", "encoder.*"])
    state = model.state_dict()
    assert copied == sum(n.startswith(("frontend.", "encoder.")) for n in state) and left == len(state) - copied
    assert all(torch.equal(state[n], v) for n, v in am.state_dict().items() if n.startswith("encoder."))
    assert all(torch.equal(state[n], v) for n, v in llm_before.items())
    bigger = CTCModel(CTCModelConfig(vocab_size=12, encoder=dataclasses.replace(ENCODER, d_model=32, ff_dim=64)))
    save_model_state(bigger.state_dict(), tmp_path / "big.safetensors")
    with pytest.raises(ValueError, match=r"big\.safetensors: does not fit the model \(other shapes: encoder\."):
        init_from_model(model, tmp_path / "big.safetensors", [], ["frontend.*", "encoder.*"])


TRAIN = """
model_kind: speech_llm
model:
  llm: {{source: {llm}, lowercase: true, lora: {{r: 4, alpha: 8.0, dropout: 0.1}}}}
  interface: {interface}
  prompt: {{before: "user: ", after: " transcribe speech. assistant: "}}
  encoder: {{num_layers: 1, d_model: 16, num_heads: 2, ff_dim: 32, dropout: 0.1}}
  specaugment: {{num_time_masks: 1, max_time_width: 5, num_freq_masks: 1, max_freq_width: 5, ramp_steps: 2}}
  aux_ctc_weight: 0.3
data: {{max_batch_seconds: 7.0, num_buckets: 2, seed: 3}}
trainer: {{max_epochs: 2, log_every_steps: 1, progress_bar: false, tensorboard: false, plot: false, seed: 1}}
optim: {{lr: 1.0e-3, warmup_steps: 2, total_steps: 8}}
"""


@pytest.mark.parametrize("interface", ["prefix", "merged_attention"])
def test_train_resume_checkpoint_and_decode_cli(dirs, interface) -> None:
    """LoRA on a frozen pre-trained LLM: checkpoints hold only the trained weights, a resumed run
    ends equal to an uninterrupted one, and the decode CLI runs label_sync and the aux CTC head."""
    root = dirs["root"] / interface
    make_datadir(root / "data/train", 6, seed=0, min_duration=1.0, max_duration=2.0)
    make_datadir(root / "data/dev", 2, seed=1, min_duration=1.0, max_duration=2.0)
    (root / "train.yaml").write_text(TRAIN.format(llm=dirs["llm"], interface=interface))

    def run(exp: str, *overrides: str) -> int:
        return train.main(["--config", str(root / "train.yaml"), "--train-data", str(root / "data/train"),
                           "--valid-data", str(root / "data/dev"), "--exp-dir", str(root / exp), *overrides])

    assert run("exp/full") == 0
    assert run("exp/resumed", "trainer.max_steps=3") == 0
    assert run("exp/resumed") == 0
    full = load_model_state(latest_checkpoint(root / "exp/full/checkpoints") / MODEL_FILE)
    resumed = load_model_state(latest_checkpoint(root / "exp/resumed/checkpoints") / MODEL_FILE)
    assert full.keys() == resumed.keys() and all(torch.equal(full[n], resumed[n]) for n in full)
    llm_keys = {n for n in full if n.startswith("llm.")}
    assert llm_keys and all("lora_" in n for n in llm_keys)  # the frozen base is rebuilt from llm.source
    assert {n.split(".")[0] for n in full} == {"specaugment", "encoder", "projector", "ctc_head", "llm"}

    (root / "decode.yaml").write_text(
        "methods:\n  beam2: {method: label_sync, beam: 2, max_length_ratio: 2.0}\n"
        "  greedy_ctc: {method: ctc_greedy, beam: 1}\n"
    )
    assert decode.main(["--config", str(root / "decode.yaml"), "--model-dir", str(root / "exp/full"),
                        "--checkpoint", "latest", "--data", str(root / "data/dev")]) == 0
    for method in ("beam2", "greedy_ctc"):
        lines = (root / f"exp/full/decode_dev_{method}/parts/0-of-1.hyp.txt").read_text().splitlines()
        assert len(lines) == 2


@pytest.mark.parametrize("name", ["qwen2_0.5b_lora", "qwen2_1.5b_lora", "qwen2_7b_lora"])
def test_paper_configs_build_at_tiny_width(dirs, name) -> None:
    """The authors' configurations (conf/speech_llm/) with the widths shrunk and a tiny Qwen2 for the
    hub model: everything else (18 layers, conv ×6, stack 2 = 120 ms, LoRA r 320 rsLoRA on q,v, the
    prompt, aux CTC over the LLM vocabulary + blank) as written."""
    from asrllm.config import from_dict, load_yaml

    model = load_yaml(Path(__file__).parents[2] / "conf/speech_llm" / f"{name}.yaml")
    model["encoder"].update(d_model=64, ff_dim=128)
    model["llm"] = {**model["llm"], "source": str(dirs["llm"]), "dtype": "float32"}
    speech_llm = SpeechLLM(from_dict(SpeechLLMConfig, model, "model"))
    cfg = speech_llm.cfg
    assert (cfg.encoder.num_layers, cfg.encoder.subsampling_factor, cfg.projector.stack) == (18, 6, 2)
    assert speech_llm.num_speech_vectors(torch.tensor([16000 * 12 // 10])).item() == 10  # 1.2 s / 120 ms
    lora = cfg.llm.lora
    assert (lora.r, lora.alpha, lora.use_rslora, lora.target_modules) == (320, 16.0, True, ("q_proj", "v_proj"))
    trained_llm = {n for n, p in speech_llm.llm.named_parameters() if p.requires_grad}
    assert trained_llm and all("lora_" in n and ("q_proj" in n or "v_proj" in n) for n in trained_llm)
    assert speech_llm.ctc_head.proj.out_features == speech_llm.tokenizer.vocab_size + 1  # + blank
    assert speech_llm.ctc_blank_id == speech_llm.tokenizer.vocab_size


def test_audio_longer_than_the_llm_has_positions_for_is_named(dirs) -> None:
    cfg = char_config(dirs)
    cfg = dataclasses.replace(cfg, llm=dataclasses.replace(cfg.llm, arch={**cfg.llm.arch, "max_position_embeddings": 16}))
    model = model_of(cfg).eval()
    batch = dummy_batch(2, max_samples=16000, seed=0)  # ~0.5-1 s: 6-12 vectors of 80 ms
    assert model.max_speech_vectors == 16 - 1 - 1  # no prompt: BOS and one label
    ok = batch.audio_lens.clone().fill_(4000)  # 0.25 s: 3 vectors
    enc = encoder_output(model, batch.audio[:, :4000], ok, batch.ids)
    assert enc.lens.tolist() == [3, 3] and SpeechLLMScorer(model).max_labels(enc).tolist() == [16 - 1 - 3] * 2
    long = torch.zeros(1, 16000 * 3)
    with pytest.raises(ValueError, match=r"utterance 'long-one': about 3\.\d s of audio gives 3\d speech vectors, "
                                         r"more than the LLM's 16 positions leave room for \(14"):
        encoder_output(model, long, torch.tensor([16000 * 3]), ["long-one"])


def test_llm_dir_without_its_tokenizer_is_named(dirs, tmp_path, caplog) -> None:
    import logging
    import shutil

    bare = tmp_path / "llm_without_tokenizer"
    shutil.copytree(dirs["llm"], bare, ignore=shutil.ignore_patterns("*token*", "vocab*", "merges*", "text", "lower"))
    (tmp_path / "train.yaml").write_text(TRAIN.format(llm=bare, interface="prefix"))
    make_datadir(tmp_path / "data", 2, seed=0, min_duration=1.0, max_duration=2.0)
    with caplog.at_level(logging.ERROR):
        assert train.main(["--config", str(tmp_path / "train.yaml"), "--train-data", str(tmp_path / "data"),
                           "--exp-dir", str(tmp_path / "exp")]) == 1
    assert f"{bare} holds no tokenizer (none of tokenizer.json" in caplog.text and "llm.tokenizer" in caplog.text
