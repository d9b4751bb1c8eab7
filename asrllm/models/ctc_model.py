"""CTC acoustic model: log-mel -> SpecAugment -> Conformer -> CTC heads on the last and aux layers.

Shapes: B utterances, S audio samples, T encoder frames, D model dim, V vocabulary (incl. blank),
L label length.

Training loss (PAPER §5: aux CTC at layers 4/10/16, decoding with layer 16):
    loss_sum = final_ctc_weight · Σ_b CTC_final(b) + Σ_l aux_ctc_weights[l] · Σ_b CTC_l(b)
summed over utterances (not averaged), so that the trainer can divide by the global number of
utterances; `count` is that number for this batch. Every head is the same `CTCHead` code (a
linear layer to V + log-softmax in float32); aux heads read the block outputs, which the Conformer
already layer-normalises.

>>> from asrllm.models.conformer import ConformerConfig
>>> cfg = CTCModelConfig(vocab_size=5, encoder=ConformerConfig(num_layers=2, d_model=16, num_heads=2, ff_dim=32))
>>> lp, lens = CTCModel(cfg).eval().log_probs(torch.zeros(1, 4000), torch.tensor([4000]))
>>> tuple(lp.shape), lens.tolist()
((1, 6, 5), [6])
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from asrllm.data.batch import Batch
from asrllm.data.loader import AudioData
from asrllm.models.conformer import ConformerConfig, ConformerEncoder
from asrllm.models.frontend import LogMel, LogMelConfig
from asrllm.models.specaugment import SpecAugment, SpecAugmentConfig

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class CTCModelConfig:
    vocab_size: int  # V, including the blank
    blank_id: int = 0  # CTC blank (the AM tokenizers put <blank> at 0)
    frontend: LogMelConfig = dataclasses.field(default_factory=LogMelConfig)  # audio -> log-mel
    specaugment: SpecAugmentConfig = dataclasses.field(default_factory=SpecAugmentConfig)  # train only
    encoder: ConformerConfig = dataclasses.field(default_factory=ConformerConfig)  # log-mel -> (B, T, D)
    aux_ctc_layers: tuple[int, ...] = ()  # 1-based blocks below the last with an extra CTC head
    aux_ctc_weights: tuple[float, ...] = ()  # loss weight of each aux head, same order as aux_ctc_layers
    final_ctc_weight: float = 1.0  # loss weight of the last layer's head

    def __post_init__(self) -> None:
        if self.vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2 (blank + one label), got {self.vocab_size}")
        if not 0 <= self.blank_id < self.vocab_size:
            raise ValueError(f"blank_id {self.blank_id} not in [0, vocab_size={self.vocab_size})")
        if self.encoder.input_dim != self.frontend.n_mels:
            raise ValueError(
                f"encoder.input_dim ({self.encoder.input_dim}) must equal frontend.n_mels ({self.frontend.n_mels})"
            )
        if len(self.aux_ctc_weights) != len(self.aux_ctc_layers):
            raise ValueError(
                f"aux_ctc_weights {self.aux_ctc_weights} needs one weight per aux_ctc_layers {self.aux_ctc_layers}"
            )
        if list(self.aux_ctc_layers) != sorted(set(self.aux_ctc_layers)):
            raise ValueError(f"aux_ctc_layers must be strictly increasing, got {self.aux_ctc_layers}")
        if any(not 1 <= layer < self.encoder.num_layers for layer in self.aux_ctc_layers):
            raise ValueError(
                f"aux_ctc_layers {self.aux_ctc_layers} must lie in 1..encoder.num_layers-1 "
                f"(={self.encoder.num_layers - 1}); the last layer always has a head"
            )
        if min((self.final_ctc_weight, *self.aux_ctc_weights)) < 0:
            raise ValueError("final_ctc_weight and aux_ctc_weights must be >= 0")

    @property
    def ctc_layers(self) -> tuple[int, ...]:
        """Every layer with a CTC head, the last one included, in increasing order."""
        return (*self.aux_ctc_layers, self.encoder.num_layers)


def ctc_loss_sum(
    log_probs: torch.Tensor, lens: torch.Tensor, targets: torch.Tensor, target_lens: torch.Tensor, blank_id: int
) -> torch.Tensor:
    """Σ_b -log p(targets_b | x_b) over the batch, shape (); infeasible utterances count 0.

    log_probs (B, T, V), lens (B,), targets (B, L) padded, target_lens (B,). An utterance whose
    labels cannot fit into its frames has infinite loss; it is zeroed (and gets no gradient)
    rather than poisoning the batch.
    """
    return F.ctc_loss(
        log_probs.transpose(0, 1),  # (T, B, V)
        targets,
        lens,
        target_lens,
        blank=blank_id,
        reduction="sum",
        zero_infinity=True,
    )


class CTCHead(nn.Module):
    """(B, T, D) -> log-probs (B, T, V), computed in float32 (also under autocast)."""

    def __init__(self, d_model: int, vocab_size: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.proj(x).float(), dim=-1)


class CTCModel(nn.Module):
    train_data: ClassVar[type[AudioData]] = AudioData  # audio data dirs + the AM tokenizer (train CLI)

    def __init__(self, cfg: CTCModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.frontend = LogMel(cfg.frontend)
        self.specaugment = SpecAugment(cfg.specaugment)
        self.encoder = ConformerEncoder(cfg.encoder)
        D, V = cfg.encoder.d_model, cfg.vocab_size
        self.heads = nn.ModuleDict({str(layer): CTCHead(D, V) for layer in cfg.ctc_layers})
        num_params = sum(p.numel() for p in self.parameters())
        logger.info("CTCModel: %.2fM parameters, CTC heads on layers %s", num_params / 1e6, cfg.ctc_layers)

    def num_output_frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        """Encoder frames T (int64, same shape) of utterances of `num_samples` audio samples; exact.

        0 means the utterance is shorter than one analysis window: it cannot be trained on, and
        decodes to an empty hypothesis. The training data path uses this to leave such utterances
        out (and those with more labels than CTC can align) before training.
        """
        return self.encoder.output_lengths(self.cfg.frontend.num_frames(num_samples))

    def encode(
        self, audio: torch.Tensor, audio_lens: torch.Tensor, layers: tuple[int, ...] = (), augment: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, dict[int, torch.Tensor]]:
        """Audio (B, S) -> encoder output (B, T, D), lengths (B,), {layer: (B, T, D)}.

        SpecAugment applies when `augment` and the model is in train mode.
        """
        feats, lens = self.frontend(audio, audio_lens)
        if augment:
            feats = self.specaugment(feats, lens)
        return self.encoder(feats, lens, return_layers=layers)

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """Summed weighted CTC loss (), utterance count (), per-head loss per utterance."""
        cfg = self.cfg
        out, lens, hidden = self.encode(batch.audio, batch.audio_lens, cfg.aux_ctc_layers)
        hidden[cfg.encoder.num_layers] = out
        weights = dict(zip(cfg.aux_ctc_layers, cfg.aux_ctc_weights, strict=True))
        weights[cfg.encoder.num_layers] = cfg.final_ctc_weight
        B = len(batch)
        loss_sum = out.new_zeros((), dtype=torch.float32)
        stats: dict[str, float] = {}
        for layer in cfg.ctc_layers:
            log_probs = self.heads[str(layer)](hidden[layer])  # (B, T, V)
            loss = ctc_loss_sum(log_probs, lens, batch.targets, batch.target_lens, cfg.blank_id)
            loss_sum = loss_sum + weights[layer] * loss
            stats[f"ctc_layer{layer}"] = loss.item() / B
        stats["loss"] = loss_sum.item() / B
        return loss_sum, torch.tensor(float(B), device=loss_sum.device), stats

    @torch.no_grad()
    def log_probs(
        self,
        audio: torch.Tensor,
        audio_lens: torch.Tensor,
        layer: int | None = None,
        utt_ids: Sequence[str] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Audio (B, S) -> CTC log-probs (B, T, V) and lengths (B,) from the head of `layer` (None = last).

        Never applies SpecAugment; dropout follows the module's mode, so call `model.eval()` first.
        An utterance too short for one encoder frame gets length 0 (an empty hypothesis); with
        `utt_ids` (B,) a warning names each such utterance.
        """
        layer = self.cfg.encoder.num_layers if layer is None else layer
        if str(layer) not in self.heads:
            raise ValueError(f"layer {layer} has no CTC head (heads: {list(self.cfg.ctc_layers)})")
        frames = self.num_output_frames(audio_lens)  # (B,)
        if utt_ids is not None:
            for utt_id, s, t in zip(utt_ids, audio_lens.tolist(), frames.tolist(), strict=True):
                if t == 0:
                    sr = self.cfg.frontend.sample_rate
                    logger.warning("utterance %r: %.3f s (%d samples) is too short for one encoder frame; "
                                   "its hypothesis is empty", utt_id, s / sr, s)
        if int(frames.max()) == 0:  # no frame anywhere in the batch: the convolutions would fail
            return audio.new_zeros(len(audio_lens), 0, self.cfg.vocab_size, dtype=torch.float32), frames
        aux = () if layer == self.cfg.encoder.num_layers else (layer,)
        out, lens, hidden = self.encode(audio, audio_lens, aux, augment=False)
        return self.heads[str(layer)](hidden.get(layer, out)), lens
