"""The AED baseline (asrllm.models.aed, AEDScorer) against independent references.

References: torch's own `nn.TransformerDecoderLayer` (norm_first) with the same weights for the
decoder; torch's cross entropy with label smoothing and CTC loss for the training loss; the
full-sequence decoder for the search's incremental KV-cache scoring; exhaustive enumeration of
every label sequence (AED alone, and (1 − λ)·log p_AED + λ·log p_CTC with torch's CTC loss) for
the label-synchronous search; single-utterance runs for batched ones; an uninterrupted training
run for a resumed one.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from asrllm.bin import average_checkpoints, decode, make_results, score, train
from asrllm.bin.decode import DecodeConfig
from asrllm.config import ConfigError, load_config
from asrllm.data.tokenizer import TokenizerConfig, train_tokenizer
from asrllm.models.aed import AED, AEDConfig, TransformerDecoderConfig
from asrllm.models.conformer import ConformerConfig
from asrllm.search import SearchConfig, build_search
from asrllm.search.label_sync import LabelSyncSearch
from asrllm.search.model_scorers import AEDScorer, encoder_output
from asrllm.testing.search import assert_batched_equals_single, encoded_alone
from asrllm.testing.dummies import dummy_batch, make_char_tokenizer, make_datadir
from asrllm.train.checkpoint import MODEL_FILE, latest_checkpoint, load_model_state
from asrllm.train.experiment import resolve_config

ENCODER = ConformerConfig(num_layers=1, d_model=24, num_heads=2, ff_dim=32)  # E = 24 != D: cross-attention projects
DECODER = TransformerDecoderConfig(num_layers=2, d_model=16, num_heads=2, ff_dim=32, dropout=0.0)
V, BLANK, EOS = 6, 0, 2  # the char tokenizer of "AB BA": <blank> <unk> <sos/eos> ▁ A B
RECIPE = Path(__file__).parents[2] / "egs/mini_synth/asr1/conf"


@pytest.fixture(scope="module")
def char_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tok")
    (d / "text").write_text("AB BA\n")
    train_tokenizer(TokenizerConfig(kind="char"), d / "text", d / "char")
    return d / "char"


def make_model(seed: int = 0, ctc_weight: float = 0.3, **kw) -> AED:
    torch.manual_seed(seed)
    model = AED(AEDConfig(vocab_size=V, encoder=ENCODER, decoder=DECODER, ctc_weight=ctc_weight, **kw)).eval()
    with torch.no_grad():  # a sharper output layer than at init: distinct, far from uniform scores
        model.decoder.head.weight.mul_(8.0)
    return model


def padded(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens (M, L) padded with blank, lengths (M,)."""
    width = max(max(map(len, seqs)), 1)
    return torch.tensor([s + [0] * (width - len(s)) for s in seqs]), torch.tensor([len(s) for s in seqs])


def full_log_probs(model: AED, enc, rows: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """(N, L + 1, V) the decoder's teacher-forced log-probs after SOS y_1 .. y_L, utterance rows[n] of enc."""
    inputs = torch.cat([torch.full((len(rows), 1), EOS), tokens], dim=1)
    with torch.no_grad():
        return model.decoder(inputs, enc.states[rows], enc.lens[rows])


def sequence_log_probs(model: AED, enc, b: int, seqs: list[list[int]]) -> torch.Tensor:
    """(len(seqs),) float64 log p_AED(seq, EOS) of utterance b, one full forward each."""
    tokens, lengths = padded(seqs)
    logp = full_log_probs(model, enc, torch.full((len(seqs),), b), tokens).double()  # (M, L + 1, V)
    targets = torch.cat([tokens, tokens[:, :1]], 1).scatter(1, lengths[:, None], EOS)  # y_1 .. y_n EOS
    keep = torch.arange(targets.shape[1]) <= lengths[:, None]
    return torch.where(keep, logp.gather(2, targets[..., None])[..., 0], 0.0).sum(1)  # padding: blank, −inf


def test_decoder_equals_torch_transformer_decoder() -> None:
    """Our pre-norm layer = torch's nn.TransformerDecoderLayer(norm_first=True) with the same weights, the
    positions = Vaswani et al.'s formula, the padded frames masked as torch's memory_key_padding_mask."""
    model = make_model(1)
    dec, D, E = model.decoder, DECODER.d_model, ENCODER.d_model
    refs = []
    for ours in dec.layers:
        ref = nn.TransformerDecoderLayer(D, DECODER.num_heads, DECODER.ff_dim, dropout=0.0, batch_first=True,
                                         norm_first=True)
        ref.multihead_attn = nn.MultiheadAttention(D, DECODER.num_heads, kdim=E, vdim=E, batch_first=True)
        with torch.no_grad():
            ref.self_attn.in_proj_weight.copy_(ours.self_qkv.weight)
            ref.self_attn.in_proj_bias.copy_(ours.self_qkv.bias)
            ref.multihead_attn.q_proj_weight.copy_(ours.cross_q.weight)
            ref.multihead_attn.k_proj_weight.copy_(ours.cross_kv.weight[:D])
            ref.multihead_attn.v_proj_weight.copy_(ours.cross_kv.weight[D:])
            ref.multihead_attn.in_proj_bias.copy_(torch.cat([ours.cross_q.bias, ours.cross_kv.bias]))
            for theirs, mine in ((ref.self_attn.out_proj, ours.self_out), (ref.multihead_attn.out_proj, ours.cross_out),
                                 (ref.linear1, ours.ff_up), (ref.linear2, ours.ff_down), (ref.norm1, ours.self_norm),
                                 (ref.norm2, ours.cross_norm), (ref.norm3, ours.ff_norm)):
                theirs.load_state_dict(mine.state_dict())
        refs.append(ref.eval())
    enc, lens = torch.randn(3, 9, E), torch.tensor([9, 4, 6])
    inputs = torch.tensor([[2, 4, 5, 3, 1], [2, 3, 3, 0, 0], [2, 5, 4, 4, 3]])
    L = inputs.shape[1]
    p, i = torch.arange(L, dtype=torch.float64)[:, None], torch.arange(0, D, 2, dtype=torch.float64)
    pe = torch.zeros(L, D, dtype=torch.float64)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(p / 10000 ** (i / D)), torch.cos(p / 10000 ** (i / D))
    with torch.no_grad():
        x = dec.embed(inputs) * math.sqrt(D) + pe.float()
        for ref in refs:
            x = ref(x, enc, tgt_mask=nn.Transformer.generate_square_subsequent_mask(L),
                    memory_key_padding_mask=torch.arange(9) >= lens[:, None])
        logits = dec.head(dec.norm(x))
        logits[..., BLANK] = -math.inf
        ours = dec(inputs, enc, lens)
    assert torch.allclose(ours, logits.log_softmax(-1), atol=1e-5)


def test_loss_equals_torch_cross_entropy_and_ctc() -> None:
    """(1 − λ)·CE with smoothing over the emittable labels (torch's label_smoothing on the logits
    without the blank column) + λ·CTC (torch), over the predicted tokens incl. EOS."""
    lam, eps = 0.3, 0.1
    model = make_model(2, ctc_weight=lam, label_smoothing=eps)
    batch = dummy_batch(3, vocab_size=V, max_samples=8000, max_labels=4, seed=3)
    with torch.no_grad():
        loss_sum, count, stats = model(batch)
        enc, enc_lens, ctc_logp = model.encode(batch.audio, batch.audio_lens)
        ce = 0.0
        emit = [c for c in range(V) if c != BLANK]
        for b in range(3):
            y = batch.targets[b, : batch.target_lens[b]].tolist()
            logp = model.decoder(torch.tensor([[EOS, *y]]), enc[b : b + 1], enc_lens[b : b + 1])[0]  # (n + 1, V)
            target = torch.tensor([emit.index(c) for c in [*y, EOS]])
            ce += F.cross_entropy(logp[:, emit], target, label_smoothing=eps, reduction="sum")
        ctc = F.ctc_loss(ctc_logp.transpose(0, 1), batch.targets, enc_lens, batch.target_lens, blank=BLANK,
                         reduction="sum")
    assert count == int(batch.target_lens.sum()) + 3
    assert loss_sum.item() == pytest.approx(((1 - lam) * ce + lam * ctc).item(), rel=1e-5)
    assert stats["ctc"] == pytest.approx(ctc.item() / 3, rel=1e-5)


def test_incremental_scoring_equals_the_full_forward() -> None:
    """AEDScorer = the teacher-forced decoder, every label and EOS, fed raggedly: some hypotheses one
    label per call, others none and then two at once (holes in the cache, then reads after them),
    prefixes ending at different steps, hypotheses reordered and duplicated across utterances halfway;
    a whole prefix in one call, and a call with nothing new, likewise."""
    model = make_model(3)
    batch = dummy_batch(3, max_samples=6000, seed=4)  # utterances of different lengths
    enc = encoder_output(model, batch.audio, batch.audio_lens)
    assert len(set(enc.lens.tolist())) > 1
    seqs = [[4, 5, 3], [5], [3, 4, 4, 5, 1], [], [1, 5], [4, 4, 4, 3]]  # K = 2 hypotheses of each of 3 utterances
    tokens, lengths = padded(seqs)
    utt = torch.arange(3).repeat_interleave(2)
    pace = torch.tensor([1, 2, 2, 1, 2, 1])  # labels seen at step j: pace · (j // pace)
    scorer = AEDScorer(model)
    state = scorer.init_state(3, 2, enc)
    src = torch.tensor([5, 0, 2, 2, 1, 3])
    for j in range(2 * int(lengths.max()) + 2):
        if j == 3:
            state, tokens, lengths, utt, pace = scorer.select_state(state, src), *(x[src] for x in (tokens, lengths,
                                                                                                  utt, pace))
        seen = torch.minimum(lengths, j // pace * pace)
        logp, state = scorer.score(tokens, seen, state)  # (N, V)
        ref = full_log_probs(model, enc, utt, tokens)  # (N, L + 1, V)
        assert torch.allclose(logp, ref[torch.arange(6), seen], atol=1e-5), j
    assert state.memory.keys[0].shape[0] == 3 and state.utt.tolist() == utt.tolist()  # memory: one row per utterance
    tokens, lengths = padded(seqs)
    fresh = scorer.init_state(3, 2, enc)
    at_once, fresh = scorer.score(tokens, lengths, fresh)  # SOS and every label in one call
    again, _ = scorer.score(tokens, lengths, fresh)  # nothing new to feed
    ref = full_log_probs(model, enc, torch.arange(3).repeat_interleave(2), tokens)[torch.arange(6), lengths]
    assert torch.allclose(at_once, ref, atol=1e-5) and torch.equal(again, at_once)


def exhaustive(model: AED, enc, b: int, max_len: int, lam: float = 0.0) -> list[tuple[float, float, float, list[int]]]:
    """Every sequence of up to max_len emittable labels of utterance b: [(total, log p_AED, log p_CTC,
    labels)], best first; total = (1 − λ)·log p_AED + λ·log p_CTC (torch's CTC loss of the whole sequence)."""
    labels = [v for v in range(V) if v not in (BLANK, EOS)]
    seqs = [list(s) for n in range(max_len + 1) for s in itertools.product(labels, repeat=n)]
    aed = sequence_log_probs(model, enc, b, seqs)
    ctc = torch.zeros_like(aed)
    if lam:
        tokens, lengths = padded(seqs)
        n = len(seqs)
        T = int(enc.lens[b])
        log_probs = enc.ctc_log_probs[b : b + 1, :T].double().expand(n, -1, -1).transpose(0, 1)  # (T, M, V)
        ctc = -F.ctc_loss(log_probs, tokens, torch.full((n,), T), lengths, blank=BLANK, reduction="none")
    total = (1 - lam) * aed + lam * ctc
    return sorted(zip(total.tolist(), aed.tolist(), ctc.tolist(), seqs), key=lambda r: -r[0])


def label_sync(model: AED, beam: int, nbest: int, max_len: int, lam: float = 0.0, **kw) -> LabelSyncSearch:
    cfg = SearchConfig(method="label_sync", beam=beam, nbest=nbest, max_length=max_len, max_length_ratio=None,
                       ctc_weight=lam, pre_beam=V if lam else None, **kw)
    search = build_search(cfg, blank_id=BLANK, model_scorers={"aed": AEDScorer(model)}, eos_id=model.eos_id)
    assert isinstance(search, LabelSyncSearch)
    return search


@pytest.mark.parametrize("lam", [0.0, 0.4])
def test_wide_beam_equals_exhaustive_search(lam: float) -> None:
    """A beam that keeps every hypothesis finds the best sequences of all up to length 3, alone and
    jointly with the CTC head (pre-beam = vocabulary): scores total, AED and CTC as enumerated."""
    model = make_model(4)
    batch = dummy_batch(2, max_samples=6400, seed=5)
    enc = encoder_output(model, batch.audio, batch.audio_lens)
    max_len = 3
    for b, entries in enumerate(label_sync(model, (V - 1) ** max_len, 4, max_len, lam)(enc, batch.ids)):
        ref = exhaustive(model, enc, b, max_len, lam)[:4]
        assert all(r[0] > -math.inf for r in ref)
        assert [e.tokens for e in entries] == [r[3] for r in ref]
        assert [e.score for e in entries] == pytest.approx([r[0] for r in ref], abs=1e-4)
        assert [e.scores["aed"] for e in entries] == pytest.approx([r[1] for r in ref], abs=1e-4)
        if lam:
            assert [e.scores["ctc"] for e in entries] == pytest.approx([r[2] for r in ref], abs=1e-4)


@pytest.mark.parametrize("lam", [0.0, 0.3])
def test_batched_equals_single(lam: float) -> None:
    model = make_model(5)
    batch = dummy_batch(3, max_samples=8000, seed=6)
    enc = encoder_output(model, batch.audio, batch.audio_lens)
    assert_batched_equals_single(label_sync(model, 4, 3, 6, lam), enc, batch.ids,
                                 encoded_alone(model, batch.audio, batch.audio_lens))


def test_the_decoder_never_emits_blank() -> None:
    """With a blank logit far above every other one, the decoder still gives it log p = −inf: no
    search can choose it, and the loss stays finite."""
    model = make_model(6)
    with torch.no_grad():
        model.decoder.head.bias[BLANK] = 100.0
    batch = dummy_batch(2, vocab_size=V, max_samples=6400, seed=7)
    enc = encoder_output(model, batch.audio, batch.audio_lens)
    with torch.no_grad():
        hidden = model.decoder.norm(model.decoder.embed(torch.tensor([[EOS, 4]])))
        assert int(model.decoder.head(hidden).argmax(-1)[0, 0]) == BLANK  # unmasked, blank would win
        logp = full_log_probs(model, enc, torch.tensor([0, 1]), torch.tensor([[4, 5], [3, 3]]))
        loss, _, _ = model(batch)
    assert bool(logp[..., BLANK].isneginf().all()) and bool(logp[..., [1, 2, 3, 4, 5]].isfinite().all())
    assert math.isfinite(loss.item())
    for entries in label_sync(model, 4, 4, 5)(enc, batch.ids):
        assert entries and all(BLANK not in e.tokens and math.isfinite(e.score) for e in entries)


def test_config_errors_name_the_option() -> None:
    with pytest.raises(ConfigError, match=r"model\.ctc_weight=1\.0 must be in \[0, 1\)"):
        AEDConfig(vocab_size=V, ctc_weight=1.0)
    with pytest.raises(ConfigError, match=r"model\.sos_eos_id=0 must differ from model\.blank_id"):
        AEDConfig(vocab_size=V, sos_eos_id=0)
    with pytest.raises(ConfigError, match=r"model\.decoder\.d_model=18 must be even .* num_heads=4"):
        TransformerDecoderConfig(d_model=18, num_heads=4)


def test_recipe_config_builds_with_the_ctc_ams_encoder(char_dir: Path) -> None:
    """conf/train_aed_small.yaml: the encoder, frontend, SpecAugment, data, optimiser and epochs of
    conf/train_ctc_small.yaml, a 3 × 144 decoder; the model builds; conf/decode_aed.yaml loads."""
    aed = resolve_config(RECIPE / "train_aed_small.yaml", [], str(char_dir))
    ctc = resolve_config(RECIPE / "train_ctc_small.yaml", [], str(char_dir))
    for section in ("encoder", "frontend", "specaugment"):
        assert getattr(aed.model, section) == getattr(ctc.model, section), section
    assert (aed.data, aed.config.optim, aed.config.trainer.max_epochs) == (ctc.data, ctc.config.optim,
                                                                          ctc.config.trainer.max_epochs)
    d = aed.model.decoder
    assert (d.num_layers, d.d_model, d.num_heads, d.ff_dim) == (3, 144, 4, 576)
    assert (aed.model.ctc_weight, aed.model.label_smoothing, aed.model.vocab_size) == (0.3, 0.1, V)
    model = aed.model_cls(aed.model)
    assert isinstance(model, AED) and model.ctc_head is not None and model.eos_id == EOS
    methods = load_config(DecodeConfig, RECIPE / "decode_aed.yaml").methods
    assert {m.method for m in methods.values()} == {"label_sync", "ctc_greedy"}
    assert any(m.ctc_weight > 0 and m.pre_beam for m in methods.values())


TRAIN = """
model_kind: aed
model:
  encoder: {num_layers: 1, d_model: 16, num_heads: 2, ff_dim: 32, dropout: 0.1}
  decoder: {num_layers: 1, d_model: 16, num_heads: 2, ff_dim: 32, dropout: 0.1}
  specaugment: {num_time_masks: 1, max_time_width: 5, num_freq_masks: 1, max_freq_width: 5, ramp_steps: 2}
  ctc_weight: 0.3
  label_smoothing: 0.1
data: {max_batch_seconds: 7.0, num_buckets: 2, seed: 3}
trainer: {max_epochs: 2, log_every_steps: 1, progress_bar: false, tensorboard: false, plot: false, seed: 1}
optim: {lr: 1.0e-3, warmup_steps: 2, total_steps: 8}
"""

DECODE = """
methods:
  beam2: {method: label_sync, beam: 2, max_length_ratio: 1.0}
  beam2_ctc: {method: label_sync, beam: 2, max_length_ratio: 1.0, ctc_weight: 0.3, pre_beam: 4}
  greedy_ctc: {method: ctc_greedy, beam: 1}
"""


def test_train_resume_average_decode_and_results_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The one trainer trains `model_kind: aed` (a resumed run ends equal to an uninterrupted one),
    checkpoints average, the decode CLI runs label_sync alone and with CTC, and CTC greedy on the
    AED's CTC head; scoring and RESULTS.md take the decode dirs."""
    make_datadir(tmp_path / "data/train", 6, seed=0, min_duration=1.0, max_duration=2.0)
    make_datadir(tmp_path / "data/dev", 2, seed=1, min_duration=1.0, max_duration=2.0)
    make_char_tokenizer(tmp_path / "data/train", tmp_path / "tok")
    (tmp_path / "train.yaml").write_text(TRAIN)

    def run(exp: str, *overrides: str) -> int:
        return train.main(["--config", str(tmp_path / "train.yaml"), "--train-data", str(tmp_path / "data/train"),
                           "--valid-data", str(tmp_path / "data/dev"), "--tokenizer", str(tmp_path / "tok"),
                           "--exp-dir", str(tmp_path / exp), *overrides])

    assert run("exp/full") == 0
    assert run("exp/resumed", "trainer.max_steps=3") == 0
    assert run("exp/resumed") == 0
    full = load_model_state(latest_checkpoint(tmp_path / "exp/full/checkpoints") / MODEL_FILE)
    resumed = load_model_state(latest_checkpoint(tmp_path / "exp/resumed/checkpoints") / MODEL_FILE)
    assert full.keys() == resumed.keys() and all(torch.equal(full[n], resumed[n]) for n in full)
    assert {n.split(".")[0] for n in full} == {"specaugment", "encoder", "ctc_head", "decoder"}

    exp = tmp_path / "exp/full"
    average_checkpoints.main(["--exp-dir", str(exp), "--last", "2"])
    (tmp_path / "decode.yaml").write_text(DECODE)
    assert decode.main(["--config", str(tmp_path / "decode.yaml"), "--model-dir", str(exp),
                        "--checkpoint", "average", "--data", str(tmp_path / "data/dev")]) == 0
    for method in ("beam2", "beam2_ctc", "greedy_ctc"):
        part = exp / f"decode_dev_{method}/parts/0-of-1"
        assert len(Path(f"{part}.hyp.txt").read_text().splitlines()) == 2
        costs = json.loads(Path(f"{part}.info.json").read_text())["lm_costs"]
        assert (costs["aed"]["calls"] > 0) if method != "greedy_ctc" else costs == {}
        assert score.main(["--decode-dir", str(part.parents[1]), "--data", str(tmp_path / "data/dev")]) == 0
    monkeypatch.chdir(tmp_path)
    assert make_results.main(["exp", "--out", "RESULTS.md"]) == 0
    assert "decode_dev_beam2_ctc" in (tmp_path / "RESULTS.md").read_text()
