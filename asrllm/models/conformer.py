"""Conformer encoder (Gulati et al., 2020) with convolutional subsampling ×4 or ×6.

Shapes: B utterances, T frames, F feature bins, C channels, D model dim, H heads, E = D / H.

Block (the Conformer paper's Fig. 1, pre-norm residuals, a LayerNorm at the end of every block):
    x = x + ½·FF(x);  x = x + MHSA(x);  x = x + Conv(x);  x = LN(x + ½·FF(x))
so every block output (and hence every aux-CTC layer) is already normalised.

Choices, and why:
- Subsampling: 3×3 Conv2d layers with padding 1, each followed by ReLU; a stride s maps T frames
  to ceil(T / s). "conv4" = time strides 2, 2 (frequency strides 2, 2); "conv6" = the paper's
  time strides 1, 3, 2 with channels 32/64/64 (PAPER §3). The paper gives no frequency strides;
  we halve frequency in the first layer (RWTH's VGG front-end max-pools there instead).
- Batch independence: frames beyond each utterance's length are zeroed before every convolution
  (subsampling convs, depthwise conv), so a valid frame sees exactly the zeros it would see when
  the utterance is run alone; attention masks padded keys. The conv module uses LayerNorm
  instead of the paper's BatchNorm: BatchNorm's statistics would mix utterances (and padding)
  of a batch, so results would depend on batch composition and differ between train and eval.
- Positions: "rope" = rotary embeddings (Su et al., 2021, RoFormer) on queries and keys, a
  relative encoding that costs nothing in the attention kernel (works with
  `scaled_dot_product_attention`); "abs" = sinusoidal absolute encodings added after
  subsampling (Vaswani et al., 2017), the simple baseline.
- FF activation: "silu" (Swish, the Conformer paper) or "relu2" = ReLU(x)² (So et al., 2021,
  Primer), which the paper's AM uses, there without biases.
- Speed on CPU (the mini_synth demo trains on 2 cores): attention dropout is a separate option
  that defaults to 0, because with it `scaled_dot_product_attention` leaves its fused kernel;
  `Dropout` draws its CPU masks from random bytes instead of `bernoulli_` (see there).
Padded output frames hold arbitrary values: always use the returned lengths.

>>> enc = ConformerEncoder(ConformerConfig(num_layers=2, d_model=32, num_heads=2, ff_dim=64))
>>> out, lens, layers = enc(torch.randn(2, 40, 80), torch.tensor([40, 21]), return_layers=(1,))
>>> tuple(out.shape), lens.tolist(), list(layers)
((2, 10, 32), [10, 6], [1])
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

SUBSAMPLING_STRIDES: dict[str, tuple[tuple[int, int], ...]] = {  # (time, frequency) per conv layer
    "conv4": ((2, 2), (2, 2)),
    "conv6": ((1, 2), (3, 1), (2, 1)),
}
DEFAULT_SUBSAMPLING_CHANNELS: dict[str, tuple[int, ...]] = {"conv4": (64, 64), "conv6": (32, 64, 64)}
SUBSAMPLING_KERNEL = 3
SINUSOID_BASE = 10000.0  # Vaswani et al.'s wavelength base for "abs" positions
BYTE_VALUES = 256  # Dropout: random bytes take 256 values
INT64_BYTES = 8
Rotary = tuple[torch.Tensor, torch.Tensor]  # RoPE (cos, sin), each (T, E)


@dataclasses.dataclass(frozen=True)
class ConformerConfig:
    input_dim: int = 80  # feature bins F of the input (log-mel)
    num_layers: int = 12  # Conformer blocks
    d_model: int = 256  # model dim D
    num_heads: int = 4  # attention heads H; D % H == 0
    ff_dim: int = 1024  # hidden size of each feed-forward module
    ff_activation: Literal["relu2", "silu"] = "silu"  # relu2 = ReLU(x)² (Primer)
    ff_bias: bool = True  # biases in the feed-forward linears
    conv_kernel: int = 31  # depthwise conv kernel (odd, so that it is centred)
    dropout: float = 0.1  # dropout on every residual branch, the FF hidden layer and the block input
    attn_dropout: float = 0.0  # dropout on attention weights; > 0 needs SDPA's slower math kernel on CPU
    subsampling: Literal["conv4", "conv6"] = "conv4"  # time reduction ×4 or ×6 before the blocks
    subsampling_channels: tuple[int, ...] | None = None  # one per conv layer; None = per-kind default
    pos_enc: Literal["rope", "abs"] = "rope"  # rotary (relative) or sinusoidal absolute positions
    rope_base: float = 10000.0  # RoPE wavelength base

    def __post_init__(self) -> None:
        for name in ("input_dim", "num_layers", "d_model", "num_heads", "ff_dim", "conv_kernel"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})")
        if self.pos_enc == "rope" and (self.d_model // self.num_heads) % 2:
            head_dim = self.d_model // self.num_heads
            raise ValueError(f"pos_enc='rope' needs an even head dim d_model/num_heads, got {head_dim}")
        if self.pos_enc == "abs" and self.d_model % 2:
            raise ValueError(f"pos_enc='abs' needs an even d_model, got {self.d_model}")
        if self.conv_kernel % 2 == 0:
            raise ValueError(f"conv_kernel must be odd, got {self.conv_kernel}")
        for name in ("dropout", "attn_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        num_convs = len(SUBSAMPLING_STRIDES[self.subsampling])
        if self.subsampling_channels is not None and len(self.subsampling_channels) != num_convs:
            raise ValueError(
                f"subsampling_channels {self.subsampling_channels} needs one entry per conv layer of "
                f"subsampling={self.subsampling!r} ({num_convs})"
            )

    @property
    def subsampling_factor(self) -> int:
        return math.prod(t for t, _ in SUBSAMPLING_STRIDES[self.subsampling])


def length_mask(lens: torch.Tensor, T: int) -> torch.Tensor:
    """(B,) lengths -> (B, T) bool, True on valid frames."""
    return torch.arange(T, device=lens.device)[None, :] < lens[:, None]


def ceil_div(a: torch.Tensor, b: int) -> torch.Tensor:
    return torch.div(a + b - 1, b, rounding_mode="floor")


class ConvSubsampling(nn.Module):
    """(B, T, F) -> (B, ceil(T / factor), D): strided 3×3 convs + ReLU, then a linear projection."""

    def __init__(self, cfg: ConformerConfig) -> None:
        super().__init__()
        self.strides = SUBSAMPLING_STRIDES[cfg.subsampling]
        channels = cfg.subsampling_channels or DEFAULT_SUBSAMPLING_CHANNELS[cfg.subsampling]
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in, c_out, SUBSAMPLING_KERNEL, stride=stride, padding=SUBSAMPLING_KERNEL // 2)
            for c_in, c_out, stride in zip((1, *channels[:-1]), channels, self.strides, strict=True)
        )
        freq = cfg.input_dim
        for _, f_stride in self.strides:
            freq = -(-freq // f_stride)  # ceil
        self.proj = nn.Linear(channels[-1] * freq, cfg.d_model)

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.unsqueeze(1)  # (B, 1, T, F)
        for conv, (t_stride, _) in zip(self.convs, self.strides, strict=True):
            x = x * length_mask(lens, x.shape[2])[:, None, :, None]  # zero padded frames
            x = F.relu(conv(x))  # (B, C, T', F')
            lens = ceil_div(lens, t_stride)
        B, C, T, Fr = x.shape
        return self.proj(x.transpose(1, 2).reshape(B, T, C * Fr)), lens  # (B, T, C·F) -> (B, T, D)


def rotary_tables(T: int, head_dim: int, base: float, device: torch.device) -> Rotary:
    """cos, sin of shape (T, E) for RoPE; frequencies base^(-2i/E), halves concatenated."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)  # (E/2,)
    angle = torch.arange(T, device=device, dtype=torch.float32)[:, None] * inv_freq[None, :]  # (T, E/2)
    angle = torch.cat([angle, angle], dim=-1)  # (T, E)
    return angle.cos(), angle.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, T, E) queries or keys by position (GPT-NeoX half-split convention)."""
    x1, x2 = x.chunk(2, dim=-1)  # (B, H, T, E/2) each
    return x * cos.to(x.dtype) + torch.cat([-x2, x1], dim=-1) * sin.to(x.dtype)


def sinusoids(T: int, d_model: int, device: torch.device) -> torch.Tensor:
    """(T, D) absolute sinusoidal position encodings."""
    inv_freq = SINUSOID_BASE ** (-torch.arange(0, d_model, 2, device=device, dtype=torch.float32) / d_model)
    angle = torch.arange(T, device=device, dtype=torch.float32)[:, None] * inv_freq[None, :]  # (T, D/2)
    return torch.stack([angle.sin(), angle.cos()], dim=-1).reshape(T, d_model)  # (T, D/2, 2) -> (T, D)


class Dropout(nn.Module):
    """`nn.Dropout` whose CPU mask comes from 8 random bits per element, drawn 64 bits at a time.

    On CPU, `bernoulli_` (what `nn.Dropout` uses) made dropout a third of a ctc_small training step
    on 2 cores; int64 `random_` viewed as bytes is ~6× cheaper. The drop probability is rounded to
    a multiple of 1/256 and the scale uses the rounded value, so the expectation is unchanged.
    Other devices use `F.dropout`. Randomness comes from the global torch RNG either way.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.threshold = round(p * BYTE_VALUES)  # drop where the random byte < threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        n = x.numel()
        words = torch.empty((n + INT64_BYTES - 1) // INT64_BYTES, dtype=torch.int64, device=x.device)
        random_bytes = words.random_(-(2**63), 2**63 - 1).view(torch.uint8)[:n].view(x.shape)
        scale = BYTE_VALUES / (BYTE_VALUES - self.threshold)
        return torch.where(random_bytes < self.threshold, 0.0, x * scale)


class FeedForward(nn.Module):
    def __init__(self, cfg: ConformerConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(cfg.d_model)
        self.up = nn.Linear(cfg.d_model, cfg.ff_dim, bias=cfg.ff_bias)
        self.down = nn.Linear(cfg.ff_dim, cfg.d_model, bias=cfg.ff_bias)
        self.relu2 = cfg.ff_activation == "relu2"
        self.dropout = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(self.norm(x))
        h = F.relu(h).square() if self.relu2 else F.silu(h)
        return self.dropout(self.down(self.dropout(h)))


class SelfAttention(nn.Module):
    def __init__(self, cfg: ConformerConfig) -> None:
        super().__init__()
        self.num_heads, self.attn_dropout = cfg.num_heads, cfg.attn_dropout
        self.norm = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        self.out_dropout = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor, rotary: Rotary | None) -> torch.Tensor:
        B, T, D = x.shape
        qkv = self.qkv(self.norm(x)).view(B, T, 3, self.num_heads, D // self.num_heads)  # (B, T, 3, H, E)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, T, E)
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=key_mask[:, None, None, :], dropout_p=self.attn_dropout if self.training else 0.0
        )  # (B, H, T, E)
        return self.out_dropout(self.out(y.transpose(1, 2).reshape(B, T, D)))  # (B, T, H·E)


class ConvModule(nn.Module):
    """Pointwise conv + GLU, depthwise conv, LayerNorm (not BatchNorm, see module doc), SiLU, pointwise."""

    def __init__(self, cfg: ConformerConfig) -> None:
        super().__init__()
        D = cfg.d_model
        self.norm = nn.LayerNorm(D)
        self.pointwise_in = nn.Linear(D, 2 * D)
        self.depthwise = nn.Conv1d(D, D, cfg.conv_kernel, padding=cfg.conv_kernel // 2, groups=D)
        self.conv_norm = nn.LayerNorm(D)
        self.pointwise_out = nn.Linear(D, D)
        self.dropout = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        h = F.glu(self.pointwise_in(self.norm(x)), dim=-1)  # (B, T, D)
        h = h.masked_fill(~valid[..., None], 0.0)  # padded frames must not leak into valid ones
        h = self.depthwise(h.transpose(1, 2)).transpose(1, 2)  # (B, D, T) -> (B, T, D)
        return self.dropout(self.pointwise_out(F.silu(self.conv_norm(h))))


class ConformerBlock(nn.Module):
    def __init__(self, cfg: ConformerConfig) -> None:
        super().__init__()
        self.ff1, self.attn = FeedForward(cfg), SelfAttention(cfg)
        self.conv, self.ff2 = ConvModule(cfg), FeedForward(cfg)
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, x: torch.Tensor, valid: torch.Tensor, rotary: Rotary | None) -> torch.Tensor:
        x = x + 0.5 * self.ff1(x)  # macaron: two half-step feed-forward modules
        x = x + self.attn(x, valid, rotary)
        x = x + self.conv(x, valid)
        return self.norm(x + 0.5 * self.ff2(x))


class ConformerEncoder(nn.Module):
    """Features (B, T, F) + lengths (B,) -> (B, T', D), lengths (B,), {layer: (B, T', D)}.

    `return_layers` are 1-based block indices whose outputs are returned (for aux CTC); the last
    block's output is `out` itself. Output lengths are `output_lengths(lens)` = ceil(T / factor)
    per conv stride. Frame 0 is always a valid attention key, so that an utterance too short for
    one output frame gives finite (meaningless) outputs instead of NaN.
    """

    def __init__(self, cfg: ConformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.subsampling = ConvSubsampling(cfg)
        self.dropout = Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(ConformerBlock(cfg) for _ in range(cfg.num_layers))

    def output_lengths(self, lens: torch.Tensor) -> torch.Tensor:
        for t_stride, _ in SUBSAMPLING_STRIDES[self.cfg.subsampling]:
            lens = ceil_div(lens, t_stride)
        return lens

    def forward(
        self, feats: torch.Tensor, lens: torch.Tensor, return_layers: Sequence[int] = ()
    ) -> tuple[torch.Tensor, torch.Tensor, dict[int, torch.Tensor]]:
        cfg = self.cfg
        for layer in return_layers:
            if not 1 <= layer <= cfg.num_layers:
                raise ValueError(f"return_layers: layer {layer} not in 1..{cfg.num_layers}")
        x, lens = self.subsampling(feats, lens)  # (B, T, D)
        B, T, D = x.shape
        valid = length_mask(lens, T)
        valid[:, 0] = True
        rotary = None
        if cfg.pos_enc == "rope":
            rotary = rotary_tables(T, D // cfg.num_heads, cfg.rope_base, x.device)
        else:
            x = x + sinusoids(T, D, x.device)
        x = self.dropout(x)
        layer_outputs: dict[int, torch.Tensor] = {}
        for i, block in enumerate(self.blocks, start=1):
            x = block(x, valid, rotary)
            if i in return_layers:
                layer_outputs[i] = x
        return x, lens, layer_outputs
