"""Attention encoder-decoder: log-mel -> SpecAugment -> Conformer -> Transformer decoder, + CTC on the encoder.

The AED baseline of PAPER.md (RWTH's: a Conformer encoder, a Transformer decoder attending to it,
a CTC head on the encoder trained jointly; ESPnet's hybrid CTC/attention). Labels are the AM
tokenizer's (asrllm.data.tokenizer: 0 blank = target padding, 2 <sos/eos>); the train CLI fills in
`vocab_size` from `--tokenizer`, as for `CTCModel`. SOS = EOS = `sos_eos_id`.

Loss, with ESPnet's mtlalpha λ = `ctc_weight` and ε = `label_smoothing`:
    loss_sum = (1 − λ) · Σ_b Σ_{i=1}^{n_b+1} CE_ε(y_{b,i} | y_{b,<i}, x_b)  +  λ · Σ_b CTC_b
    count    = Σ_b (n_b + 1)                      (y_b = transcript_b EOS)
    CE_ε(y)  = (1 − ε) · (−log p(y)) + ε · mean_{c ≠ blank} (−log p(c))
i.e. the smoothing mass is spread over the labels the decoder can emit (the blank is not one).
Both terms are sums over each utterance, as in ESPnet, so their ratio is ESPnet's; the trainer
dividing by tokens instead of utterances only rescales the gradient of each batch.

Decoder (Vaswani et al., 2017; pre-norm, ESPnet's `normalize_before`): label embedding · √D plus
sinusoidal absolute positions (the encoder's `pos_enc: abs` encoding: nothing learned, no
length limit), then per layer
    x = x + SelfAttn(LN(x)) (causal);   x = x + CrossAttn(LN(x), enc);   x = x + FF(LN(x))   (FF: ReLU)
and LN -> Linear(D, V). The blank logit is −inf: the decoder never emits blank (= padding), so no
search can pick it.

One code path for training and search: `TransformerDecoder.append` feeds k inputs per hypothesis
after what a `DecoderState` (per-layer self-attention keys/values) holds. Training appends the
whole [SOS y] to an empty state under a causal mask; the search appends one label per step.
`memory(enc, lens)` projects each utterance's encoder output to every layer's cross-attention
keys/values once (`CrossMemory`, B rows); hypotheses read them through their utterance index.
Hypotheses fed fewer than k inputs in a call get masked columns ("holes"), so every hypothesis'
cache has the same width C.

Shapes: B utterances, N hypotheses, S audio samples, T encoder frames, E encoder dim, D decoder
dim, H heads, Dh = D / H, k inputs appended in one call, C cached inputs, L labels, V labels.

>>> from asrllm.models.conformer import ConformerConfig
>>> tiny = dict(num_layers=1, d_model=16, num_heads=2, ff_dim=32)
>>> model = AED(AEDConfig(vocab_size=6, encoder=ConformerConfig(**tiny), decoder=TransformerDecoderConfig(**tiny)))
>>> enc, lens, ctc = model.eval().encode(torch.randn(2, 4000), torch.tensor([4000, 2400]))
>>> logp = model.decoder(torch.tensor([[2, 4, 5], [2, 3, 0]]), enc, lens)
>>> tuple(enc.shape), lens.tolist(), tuple(ctc.shape), tuple(logp.shape), bool(logp[..., 0].isneginf().all())
((2, 6, 16), [6, 4], (2, 6, 6), (2, 3, 6), True)
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from asrllm.batched import BatchedState
from asrllm.config import ConfigError
from asrllm.data.batch import Batch
from asrllm.data.loader import AudioData
from asrllm.models.conformer import ConformerConfig, ConformerEncoder, Dropout, length_mask, sinusoids
from asrllm.models.ctc_model import CTCHead, ctc_loss_sum
from asrllm.models.frontend import LogMel, LogMelConfig
from asrllm.models.specaugment import SpecAugment, SpecAugmentConfig

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TransformerDecoderConfig:
    """The `model.decoder:` section: a pre-norm Transformer decoder with cross-attention."""

    num_layers: int = 6  # decoder layers
    d_model: int = 256  # model dim D (cross-attention projects the encoder dim E to it)
    num_heads: int = 4  # attention heads H; D % H == 0
    ff_dim: int = 2048  # hidden size of each feed-forward module
    dropout: float = 0.1  # on the input embeddings, every residual branch and the FF hidden layer

    def __post_init__(self) -> None:
        for name in ("num_layers", "d_model", "num_heads", "ff_dim"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.decoder.{name}={getattr(self, name)} must be positive")
        if self.d_model % self.num_heads or self.d_model % 2:
            raise ConfigError(f"model.decoder.d_model={self.d_model} must be even (sinusoids) and divisible by "
                              f"num_heads={self.num_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.decoder.dropout={self.dropout} must be in [0, 1)")


@dataclasses.dataclass(frozen=True)
class AEDConfig:
    """The `model:` section of an AED training YAML (`model_kind: aed`)."""

    vocab_size: int  # V incl. <blank>, <unk>, <sos/eos>; the train CLI sets it from the AM tokenizer
    blank_id: int = 0  # CTC blank and target padding (AM tokenizers: 0); the decoder never emits it
    sos_eos_id: int = 2  # starts and ends every decoder label sequence (AM tokenizers: <sos/eos> = 2)
    frontend: LogMelConfig = dataclasses.field(default_factory=LogMelConfig)  # audio -> log-mel
    specaugment: SpecAugmentConfig = dataclasses.field(default_factory=SpecAugmentConfig)  # train only
    encoder: ConformerConfig = dataclasses.field(default_factory=ConformerConfig)  # log-mel -> (B, T, E)
    decoder: TransformerDecoderConfig = dataclasses.field(default_factory=TransformerDecoderConfig)
    ctc_weight: float = 0.3  # λ (ESPnet mtlalpha): loss = (1 − λ)·CE + λ·CTC; 0 = no CTC head
    label_smoothing: float = 0.1  # ε of the decoder's cross entropy (module docstring)

    def __post_init__(self) -> None:
        if self.vocab_size < 4:
            raise ConfigError(f"model.vocab_size={self.vocab_size} must be >= 4 (blank, unk, <sos/eos>, one label)")
        for name in ("blank_id", "sos_eos_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise ConfigError(f"model.{name}={getattr(self, name)} not in [0, vocab_size={self.vocab_size})")
        if self.sos_eos_id == self.blank_id:
            raise ConfigError(f"model.sos_eos_id={self.sos_eos_id} must differ from model.blank_id (never emitted)")
        if self.encoder.input_dim != self.frontend.n_mels:
            raise ConfigError(f"model.encoder.input_dim ({self.encoder.input_dim}) must equal model.frontend.n_mels "
                              f"({self.frontend.n_mels})")
        if not 0.0 <= self.ctc_weight < 1.0:
            raise ConfigError(f"model.ctc_weight={self.ctc_weight} must be in [0, 1) (1 = CTC only: model_kind ctc)")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"model.label_smoothing={self.label_smoothing} must be in [0, 1)")


@dataclasses.dataclass(frozen=True)
class CrossMemory:
    """Every layer's cross-attention keys/values of B utterances, computed once per utterance; not a
    per-hypothesis state (a search indexes it by each hypothesis' utterance)."""

    keys: list[Tensor]  # per layer (B, H, T, Dh)
    values: list[Tensor]  # per layer (B, H, T, Dh)
    mask: Tensor  # (B, T) bool frames a query may attend to


@dataclasses.dataclass
class DecoderState(BatchedState):
    """The self-attention cache of N hypotheses, hypothesis dimension first."""

    keys: list[Tensor]  # per layer (N, H, C, Dh)
    values: list[Tensor]  # per layer (N, H, C, Dh)
    mask: Tensor  # (N, C) bool: column c holds an input of hypothesis n (False: a hole)
    fed: Tensor  # (N,) int64 inputs fed (SOS + labels) = mask.sum(1): the position of the next input


def _heads(x: Tensor, num_heads: int) -> Tensor:
    """(N, k, H·Dh) -> (N, H, k, Dh)."""
    N, k, D = x.shape
    return x.view(N, k, num_heads, D // num_heads).transpose(1, 2)


def _attend(q: Tensor, keys: Tensor, values: Tensor, mask: Tensor) -> Tensor:
    """Queries (N, H, k, Dh) over keys/values (N, H, C, Dh), bool mask broadcastable to (N, H, k, C) -> (N, k, D)."""
    return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask).transpose(1, 2).flatten(2)


class DecoderLayer(nn.Module):
    """Pre-norm causal self-attention, cross-attention to the encoder output, feed-forward."""

    def __init__(self, cfg: TransformerDecoderConfig, enc_dim: int) -> None:
        super().__init__()
        D = cfg.d_model
        self.num_heads = cfg.num_heads
        self.self_norm, self.self_qkv, self.self_out = nn.LayerNorm(D), nn.Linear(D, 3 * D), nn.Linear(D, D)
        self.cross_norm, self.cross_q, self.cross_out = nn.LayerNorm(D), nn.Linear(D, D), nn.Linear(D, D)
        self.cross_kv = nn.Linear(enc_dim, 2 * D)
        self.ff_norm, self.ff_up, self.ff_down = nn.LayerNorm(D), nn.Linear(D, cfg.ff_dim), nn.Linear(cfg.ff_dim, D)
        self.dropout = Dropout(cfg.dropout)

    def memory(self, enc: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder output (B, T, E) -> cross-attention keys, values (B, H, T, Dh)."""
        keys, values = self.cross_kv(enc).chunk(2, dim=-1)
        return _heads(keys, self.num_heads), _heads(values, self.num_heads)

    def forward(
        self, x: Tensor, past_keys: Tensor, past_values: Tensor, self_mask: Tensor, cross_keys: Tensor,
        cross_values: Tensor, cross_mask: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """x (N, k, D) after the cached (N, H, C, Dh) -> x (N, k, D) and the cache extended to C + k;
        self_mask (N, 1, k, C + k), cross_mask (N, 1, 1, T)."""
        q, new_keys, new_values = (_heads(t, self.num_heads) for t in self.self_qkv(self.self_norm(x)).chunk(3, dim=-1))
        keys = torch.cat([past_keys.to(new_keys.dtype), new_keys], dim=2)  # (N, H, C + k, Dh); autocast: new dtype
        values = torch.cat([past_values.to(new_values.dtype), new_values], dim=2)
        x = x + self.dropout(self.self_out(_attend(q, keys, values, self_mask)))
        q = _heads(self.cross_q(self.cross_norm(x)), self.num_heads)
        x = x + self.dropout(self.cross_out(_attend(q, cross_keys, cross_values, cross_mask)))
        x = x + self.dropout(self.ff_down(self.dropout(F.relu(self.ff_up(self.ff_norm(x))))))
        return x, keys, values


class TransformerDecoder(nn.Module):
    """Labels + encoder output -> log p(next label) (N, k, V), blank at −inf; training and search alike."""

    def __init__(self, cfg: TransformerDecoderConfig, enc_dim: int, vocab_size: int, blank_id: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.blank_id = blank_id
        self.embed = nn.Embedding(vocab_size, cfg.d_model)
        self.scale = math.sqrt(cfg.d_model)  # embeddings · √D, then positions (Vaswani et al.)
        self.dropout = Dropout(cfg.dropout)
        self.layers = nn.ModuleList(DecoderLayer(cfg, enc_dim) for _ in range(cfg.num_layers))
        self.norm = nn.LayerNorm(cfg.d_model)  # pre-norm layers leave the last residual sum unnormalised
        self.head = nn.Linear(cfg.d_model, vocab_size)

    def memory(self, enc: Tensor, enc_lens: Tensor) -> CrossMemory:
        """Cross-attention keys/values of enc (B, T, E), lens (B,): once per utterance."""
        mask = length_mask(enc_lens, enc.shape[1])  # (B, T)
        mask[:, 0] = True  # as in the encoder: an utterance without frames gives finite outputs, never NaN
        keys, values = zip(*(layer.memory(enc) for layer in self.layers))
        return CrossMemory(list(keys), list(values), mask)

    def empty_state(self, n: int, device: torch.device) -> DecoderState:
        """The cache of n hypotheses that have been fed nothing (not even SOS)."""
        H = self.cfg.num_heads
        empty = torch.zeros(n, H, 0, self.cfg.d_model // H, device=device, dtype=self.head.weight.dtype)
        layers = len(self.layers)
        return DecoderState([empty] * layers, [empty] * layers, torch.zeros(n, 0, dtype=torch.bool, device=device),
                            torch.zeros(n, dtype=torch.long, device=device))

    def append(
        self, inputs: Tensor, new: Tensor, state: DecoderState, memory: CrossMemory, utt: Tensor | None
    ) -> tuple[Tensor, DecoderState]:
        """Feed inputs[n, :new[n]] of inputs (N, k), new (N,), to hypothesis n after what `state` holds.

        utt (N,): the row of `memory` of each hypothesis (None: row n). Returns log-probs (N, k, V) of
        the label after each input (rows j >= new[n] are meaningless) and the state with k more
        columns (holes where j >= new[n]).
        """
        N, k = inputs.shape
        dev = inputs.device
        j = torch.arange(k, device=dev)
        causal = (j[:, None] >= j[None, :]).expand(N, k, k)  # query j reads the new inputs up to j, all real if j is
        self_mask = torch.cat([state.mask[:, None, :].expand(N, k, -1), causal], dim=2)[:, None]  # (N, 1, k, C + k)
        positions = state.fed[:, None] + j  # (N, k)
        table = sinusoids(int(positions.max()) + 1, self.cfg.d_model, dev)  # (P, D)
        x = self.dropout(self.embed(inputs) * self.scale + table[positions].to(self.embed.weight.dtype))  # (N, k, D)
        cross_mask = memory.mask if utt is None else memory.mask.index_select(0, utt)
        cross_mask = cross_mask[:, None, None, :]  # (N, 1, 1, T)
        keys, values = [], []
        for layer, past_k, past_v, mem_k, mem_v in zip(self.layers, state.keys, state.values, memory.keys,
                                                       memory.values, strict=True):
            if utt is not None:  # (B, H, T, Dh) -> (N, H, T, Dh): read, never stored per hypothesis
                mem_k, mem_v = mem_k.index_select(0, utt), mem_v.index_select(0, utt)
            x, layer_k, layer_v = layer(x, past_k, past_v, self_mask, mem_k, mem_v, cross_mask)
            keys.append(layer_k)
            values.append(layer_v)
        logits = self.head(self.norm(x)).float()  # (N, k, V), float32 also under autocast
        logits = logits.index_fill(-1, torch.tensor([self.blank_id], device=dev), -math.inf)
        fresh = j < new[:, None]  # (N, k) real inputs: the cache's new columns
        return logits.log_softmax(-1), DecoderState(keys, values, torch.cat([state.mask, fresh], 1), state.fed + new)

    def forward(self, inputs: Tensor, enc: Tensor, enc_lens: Tensor) -> Tensor:
        """Teacher forcing: log-probs (B, L, V) after each of the inputs (B, L) (SOS y_1 ..), from
        enc (B, T, E), enc_lens (B,). Right padding is harmless: causal attention never reads later inputs."""
        B, L = inputs.shape
        lengths = torch.full((B,), L, dtype=torch.long, device=inputs.device)
        state = self.empty_state(B, inputs.device)
        log_probs, _ = self.append(inputs, lengths, state, self.memory(enc, enc_lens), None)
        return log_probs


class AED(nn.Module):
    """Conformer encoder + CTC head + Transformer decoder; `forward(batch)` is the multitask loss."""

    train_data: ClassVar[type[AudioData]] = AudioData  # audio data dirs + the AM tokenizer (train CLI)

    def __init__(self, cfg: AEDConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.frontend = LogMel(cfg.frontend)
        self.specaugment = SpecAugment(cfg.specaugment)
        self.encoder = ConformerEncoder(cfg.encoder)
        E = cfg.encoder.d_model
        self.ctc_head = CTCHead(E, cfg.vocab_size) if cfg.ctc_weight > 0 else None
        self.decoder = TransformerDecoder(cfg.decoder, E, cfg.vocab_size, cfg.blank_id)
        self.ctc_blank_id = cfg.blank_id
        logger.info("AED: %.2fM parameters (%d encoder, %d decoder layers), CTC weight %g",
                    sum(p.numel() for p in self.parameters()) / 1e6, cfg.encoder.num_layers, cfg.decoder.num_layers,
                    cfg.ctc_weight)

    @property
    def bos_id(self) -> int:
        return self.cfg.sos_eos_id

    @property
    def eos_id(self) -> int:
        return self.cfg.sos_eos_id

    def num_output_frames(self, num_samples: Tensor) -> Tensor:
        """Encoder frames T of utterances of `num_samples` samples (the data checks' CTC bound)."""
        return self.encoder.output_lengths(self.cfg.frontend.num_frames(num_samples))

    def encode(self, audio: Tensor, audio_lens: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Audio (B, S) -> encoder output (B, T, E), lengths (B,), CTC log-probs (B, T, V) (None
        without a CTC head). SpecAugment applies in train mode only."""
        feats, lens = self.frontend(audio, audio_lens)
        enc, enc_lens, _ = self.encoder(self.specaugment(feats, lens), lens)
        return enc, enc_lens, None if self.ctc_head is None else self.ctc_head(enc)

    def forward(self, batch: Batch) -> tuple[Tensor, Tensor, dict[str, float]]:
        """-> ((1 − λ)·summed smoothed CE + λ·summed CTC, predicted tokens incl. EOS, stats)."""
        cfg = self.cfg
        enc, enc_lens, ctc_log_probs = self.encode(batch.audio, batch.audio_lens)
        B, L = batch.targets.shape
        pos = torch.arange(L + 1, device=batch.targets.device)
        keep = pos <= batch.target_lens[:, None]  # (B, L + 1) predicted positions: y_1 .. y_n EOS
        labels = batch.targets.masked_fill(pos[:L] >= batch.target_lens[:, None], cfg.sos_eos_id)  # (B, L) padding: EOS
        sos = labels.new_full((B, 1), cfg.sos_eos_id)
        log_probs = self.decoder(torch.cat([sos, labels], dim=1), enc, enc_lens)  # (B, L + 1, V) after SOS y_1 .. y_n
        targets = torch.cat([labels, sos], dim=1)  # (B, L + 1) y_1 .. y_n EOS
        logp, y = log_probs[keep], targets[keep]  # (M, V), (M,): only predicted positions
        nll = -logp.gather(1, y[:, None])[:, 0]  # (M,)
        emit = torch.arange(cfg.vocab_size, device=logp.device) != cfg.blank_id  # (V,) labels the decoder can emit
        smooth = -logp[:, emit].mean(dim=1)  # (M,) cross entropy against the uniform distribution over them
        ce = ((1 - cfg.label_smoothing) * nll + cfg.label_smoothing * smooth).sum()
        count = keep.sum()
        loss_sum = (1 - cfg.ctc_weight) * ce
        stats = {"att": ce.item() / count.item(), "acc": (logp.argmax(1) == y).sum().item() / count.item()}
        if ctc_log_probs is not None:
            ctc = ctc_loss_sum(ctc_log_probs, enc_lens, batch.targets, batch.target_lens, cfg.blank_id)
            loss_sum = loss_sum + cfg.ctc_weight * ctc
            stats["ctc"] = ctc.item() / B
        stats["loss"] = loss_sum.item() / count.item()
        return loss_sum, count.to(loss_sum.dtype), stats
