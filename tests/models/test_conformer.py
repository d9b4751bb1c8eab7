"""Conformer: batching does not change results, length formulas, sizes of the presets."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from asrllm.config import load_config
from asrllm.models.conformer import ConformerBlock, ConformerConfig, ConformerEncoder, Dropout
from asrllm.models.ctc_model import CTCModel, CTCModelConfig

CONF = Path(__file__).resolve().parents[2] / "conf" / "model"


def tiny(**kw: object) -> ConformerConfig:
    base: dict[str, object] = dict(
        input_dim=20, num_layers=2, d_model=32, num_heads=4, ff_dim=48, conv_kernel=5, dropout=0.1
    )
    return ConformerConfig(**(base | kw))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kw",
    [
        dict(subsampling="conv4", pos_enc="rope"),
        dict(subsampling="conv6", pos_enc="abs", subsampling_channels=(4, 8, 8)),
        dict(subsampling="conv6", pos_enc="rope", ff_activation="relu2", ff_bias=False),
    ],
)
def test_padded_batch_equals_single(kw: dict[str, object]) -> None:
    torch.manual_seed(0)
    enc = ConformerEncoder(tiny(**kw)).eval()
    lens = torch.tensor([61, 37, 13, 2])
    feats = torch.randn(len(lens), 61, 20)
    feats[1, 37:] = 100.0  # padding must not matter
    out, out_lens, layers = enc(feats, lens, return_layers=(1,))
    for b, n in enumerate(lens.tolist()):
        single, single_lens, single_layers = enc(feats[b : b + 1, :n], lens[b : b + 1], return_layers=(1,))
        T = int(out_lens[b])
        assert single_lens.tolist() == [T] and single.shape[1] == T
        torch.testing.assert_close(out[b, :T], single[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(layers[1][b, :T], single_layers[1][0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("subsampling,factor", [("conv4", 4), ("conv6", 6)])
def test_output_length_formula(subsampling: str, factor: int) -> None:
    enc = ConformerEncoder(tiny(subsampling=subsampling, num_layers=1)).eval()
    assert enc.cfg.subsampling_factor == factor
    for T in [1, 2, 3, 5, 6, 7, 12, 13, 24, 25, 100]:
        out, lens, _ = enc(torch.randn(1, T, 20), torch.tensor([T]))
        assert lens.item() == math.ceil(T / factor) == out.shape[1], (T, lens, out.shape)
        assert enc.output_lengths(torch.tensor([T])).item() == math.ceil(T / factor)


def test_zero_length_utterance_is_finite() -> None:
    enc = ConformerEncoder(tiny()).eval()
    out, lens, _ = enc(torch.randn(2, 16, 20), torch.tensor([16, 0]))
    assert lens.tolist() == [4, 0] and torch.isfinite(out).all()


def test_train_mode_backward() -> None:
    enc = ConformerEncoder(tiny()).train()
    out, _, _ = enc(torch.randn(2, 30, 20), torch.tensor([30, 20]))
    out.sum().backward()
    assert all(p.grad is not None for p in enc.parameters())


def test_dropout_rate_and_expectation() -> None:
    torch.manual_seed(0)
    drop = Dropout(0.1).train()
    x = torch.ones(1000, 1000)
    y = drop(x)
    assert abs((y == 0).float().mean().item() - 26 / 256) < 2e-3  # p rounded to 26/256
    assert abs(y.mean().item() - 1.0) < 5e-3
    assert torch.unique(y).tolist() == pytest.approx([0.0, 256 / 230])
    assert drop.eval()(x) is x


def test_relu2_without_bias_has_no_ff_biases() -> None:
    enc = ConformerEncoder(tiny(ff_activation="relu2", ff_bias=False))
    block = enc.blocks[0]
    assert isinstance(block, ConformerBlock)
    assert block.ff1.up.bias is None and block.ff2.down.bias is None


def _num_params(name: str, vocab_size: int) -> tuple[int, int]:
    cfg = load_config(CTCModelConfig, CONF / f"{name}.yaml", {"vocab_size": vocab_size})
    with torch.device("meta"):
        model = CTCModel(cfg)
    return sum(p.numel() for p in model.parameters()), sum(p.numel() for p in model.encoder.parameters())


def test_small_preset_is_about_3m_params() -> None:
    total, encoder = _num_params("ctc_small", vocab_size=256)
    assert 2.5e6 < encoder < 3.5e6, encoder
    assert 2.5e6 < total < 3.5e6, total


def test_paper_preset_builds() -> None:
    cfg = load_config(CTCModelConfig, CONF / "ctc_paper_16x1024.yaml", {"vocab_size": 10001})
    assert cfg.ctc_layers == (4, 10, 16) and cfg.encoder.subsampling_factor == 6
    total, encoder = _num_params("ctc_paper_16x1024", vocab_size=10001)
    assert 3.5e8 < encoder < 4.5e8, encoder


def test_validation_names_option() -> None:
    with pytest.raises(ValueError, match="num_heads"):
        ConformerConfig(d_model=30, num_heads=4)
    with pytest.raises(ValueError, match="conv_kernel"):
        ConformerConfig(conv_kernel=4)
    with pytest.raises(ValueError, match="subsampling_channels"):
        ConformerConfig(subsampling="conv6", subsampling_channels=(8, 8))
    with pytest.raises(ValueError, match="return_layers"):
        ConformerEncoder(tiny())(torch.randn(1, 8, 20), torch.tensor([8]), return_layers=(3,))
