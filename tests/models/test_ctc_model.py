"""CTC model: the loss agrees with an independent forward algorithm (itself checked by brute
force), aux heads, decoding API, one optimisation step, presets and registry."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from asrllm.config import load_config
from asrllm.data.batch import Batch
from asrllm.models.conformer import ConformerConfig
from asrllm.models.ctc_model import CTCModel, CTCModelConfig, ctc_loss_sum
from asrllm.models.frontend import LogMelConfig
from asrllm.models.registry import MODELS
from asrllm.models.specaugment import SpecAugmentConfig

CONF = Path(__file__).resolve().parents[2] / "conf" / "model"
BLANK = 0


def collapse(path: tuple[int, ...], blank: int) -> tuple[int, ...]:
    """CTC's B mapping: merge repeats, then drop blanks."""
    merged = [k for i, k in enumerate(path) if i == 0 or k != path[i - 1]]
    return tuple(k for k in merged if k != blank)


def brute_force_nll(log_probs: np.ndarray, target: list[int], blank: int) -> float:
    """-log Σ over every frame-level path that collapses to `target`. log_probs (T, V)."""
    T, V = log_probs.shape
    total = -math.inf
    for path in itertools.product(range(V), repeat=T):
        if collapse(path, blank) == tuple(target):
            total = np.logaddexp(total, sum(log_probs[t, k] for t, k in enumerate(path)))
    return -total


def forward_nll(log_probs: np.ndarray, target: list[int], blank: int) -> float:
    """Graves' CTC forward algorithm in log space. log_probs (T, V); alpha over the extended
    label sequence l' = (blank, l1, blank, l2, ..., blank) of length 2L+1."""
    T = log_probs.shape[0]
    ext = [blank]
    for k in target:
        ext += [k, blank]
    S = len(ext)
    alpha = np.full(S, -np.inf)
    alpha[0] = log_probs[0, blank]
    if S > 1:
        alpha[1] = log_probs[0, ext[1]]
    for t in range(1, T):
        prev = alpha
        alpha = np.full(S, -np.inf)
        for s in range(S):
            a = prev[s]  # stay
            if s >= 1:
                a = np.logaddexp(a, prev[s - 1])  # advance by one
            if s >= 2 and ext[s] != blank and ext[s] != ext[s - 2]:
                a = np.logaddexp(a, prev[s - 2])  # skip a blank between different labels
            alpha[s] = a + log_probs[t, ext[s]]
    end = alpha[S - 1] if S == 1 else np.logaddexp(alpha[S - 1], alpha[S - 2])
    return float(-end)


def random_log_probs(rng: np.random.Generator, T: int, V: int) -> np.ndarray:
    x = rng.standard_normal((T, V))
    return x - np.logaddexp.reduce(x, axis=1, keepdims=True)


@pytest.mark.parametrize("T,V", [(1, 2), (3, 3), (4, 3), (5, 3), (5, 2)])
def test_forward_algorithm_matches_brute_force(T: int, V: int) -> None:
    rng = np.random.default_rng(T * 10 + V)
    lp = random_log_probs(rng, T, V)
    for L in range(0, 4):
        for target in itertools.product(range(1, V), repeat=L):
            bf = brute_force_nll(lp, list(target), BLANK)
            fw = forward_nll(lp, list(target), BLANK)
            if math.isinf(bf):
                assert math.isinf(fw), (target, fw)
            else:
                assert fw == pytest.approx(bf, rel=1e-9), target


def test_loss_matches_reference_and_torch() -> None:
    rng = np.random.default_rng(0)
    B, T, V, L = 4, 12, 6, 5
    lp = np.stack([random_log_probs(rng, T, V) for _ in range(B)])  # (B, T, V)
    lens = [12, 9, 5, 7]
    target_lens = [5, 3, 1, 4]
    targets = np.zeros((B, L), dtype=np.int64)
    for b, n in enumerate(target_lens):
        targets[b, :n] = rng.integers(1, V, n)
    targets[3, :4] = [2, 2, 2, 2]  # repeats need blanks in between: 7 frames are enough
    ref = sum(forward_nll(lp[b, : lens[b]], targets[b, : target_lens[b]].tolist(), BLANK) for b in range(B))
    args = (torch.tensor(lp, dtype=torch.float64), torch.tensor(lens), torch.tensor(targets), torch.tensor(target_lens))
    ours = ctc_loss_sum(*args, blank_id=BLANK)
    direct = F.ctc_loss(args[0].transpose(0, 1), args[2], args[1], args[3], blank=BLANK, reduction="sum")
    assert ours.item() == pytest.approx(ref, rel=1e-9)
    assert direct.item() == pytest.approx(ref, rel=1e-9)


def test_infeasible_utterance_is_zeroed() -> None:
    lp = torch.log_softmax(torch.randn(1, 3, 4, dtype=torch.float64), dim=-1)
    loss = ctc_loss_sum(lp, torch.tensor([3]), torch.tensor([[1, 1, 1]]), torch.tensor([3]), blank_id=BLANK)
    assert loss.item() == 0.0  # "1 1 1" needs 5 frames


def tiny_cfg(**kw: object) -> CTCModelConfig:
    enc = ConformerConfig(
        num_layers=3, d_model=32, num_heads=2, ff_dim=64, conv_kernel=5, dropout=0.0, subsampling_channels=(8, 8)
    )
    base: dict[str, object] = dict(
        vocab_size=7, encoder=enc, aux_ctc_layers=(1,), aux_ctc_weights=(0.5,),
        specaugment=SpecAugmentConfig(num_time_masks=0, num_freq_masks=0),
    )
    return CTCModelConfig(**(base | kw))  # type: ignore[arg-type]


def tiny_batch(seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    audio_lens = torch.tensor([8000, 5600, 4000])
    target_lens = torch.tensor([4, 3, 2])
    targets = torch.randint(1, 7, (3, 4), generator=g) * (torch.arange(4)[None] < target_lens[:, None])
    audio = torch.randn(3, 8000, generator=g) * 0.1
    return Batch(["a", "b", "c"], audio, audio_lens, targets, target_lens, ["", "", ""])


def test_model_loss_equals_reference_on_its_log_probs() -> None:
    torch.manual_seed(0)
    model = CTCModel(tiny_cfg()).eval()
    batch = tiny_batch()
    loss_sum, count, stats = model(batch)
    assert count.item() == 3.0 and loss_sum.shape == ()
    heads = {}
    for layer in (1, 3):
        lp, lens = model.log_probs(batch.audio, batch.audio_lens, layer=layer)
        heads[layer] = sum(
            forward_nll(lp[b, : lens[b]].double().numpy(), batch.targets[b, : batch.target_lens[b]].tolist(), BLANK)
            for b in range(3)
        )
        assert stats[f"ctc_layer{layer}"] == pytest.approx(heads[layer] / 3, rel=1e-4)
    assert loss_sum.item() == pytest.approx(heads[3] + 0.5 * heads[1], rel=1e-4)
    lp_default, _ = model.log_probs(batch.audio, batch.audio_lens)
    torch.testing.assert_close(lp_default, model.log_probs(batch.audio, batch.audio_lens, layer=3)[0])
    with pytest.raises(ValueError, match="no CTC head"):
        model.log_probs(batch.audio, batch.audio_lens, layer=2)


def test_batch_equals_single_log_probs() -> None:
    torch.manual_seed(0)
    model = CTCModel(tiny_cfg()).eval()
    batch = tiny_batch()
    lp, lens = model.log_probs(batch.audio, batch.audio_lens)
    for b in range(3):
        n = int(batch.audio_lens[b])
        single, single_lens = model.log_probs(batch.audio[b : b + 1, :n], batch.audio_lens[b : b + 1])
        torch.testing.assert_close(lp[b, : lens[b]], single[0], atol=1e-5, rtol=1e-5)


def test_one_step_reduces_loss() -> None:
    torch.manual_seed(0)
    model = CTCModel(tiny_cfg(specaugment=SpecAugmentConfig())).train()
    batch = tiny_batch()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.eval()  # dropout is 0 and SpecAugment off: compare the same function before and after
    before = model(batch)[0].item()
    model.train()
    loss, count, _ = model(batch)
    (loss / count).backward()
    opt.step()
    model.eval()
    assert model(batch)[0].item() < before
    assert int(model.specaugment.step) == 1


def test_presets_and_registry() -> None:
    cfg_cls, model_cls = MODELS["ctc"]
    for name in ("ctc_tiny", "ctc_small", "ctc_paper_16x1024"):
        assert isinstance(load_config(cfg_cls, CONF / f"{name}.yaml", {"vocab_size": 50}), CTCModelConfig)
    model = model_cls(load_config(cfg_cls, CONF / "ctc_tiny.yaml", {"vocab_size": 50})).train()
    loss, count, stats = model(tiny_batch())
    assert torch.isfinite(loss) and {"loss", "ctc_layer1", "ctc_layer2"} <= set(stats)


def test_validation_names_option() -> None:
    with pytest.raises(ValueError, match="aux_ctc_weights"):
        tiny_cfg(aux_ctc_weights=())
    with pytest.raises(ValueError, match="aux_ctc_layers"):
        tiny_cfg(aux_ctc_layers=(3,), aux_ctc_weights=(0.3,))
    with pytest.raises(ValueError, match="blank_id"):
        tiny_cfg(blank_id=7)
    with pytest.raises(ValueError, match="input_dim"):
        tiny_cfg(frontend=LogMelConfig(n_mels=40))
