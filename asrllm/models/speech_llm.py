"""Speech LLM: log-mel -> SpecAugment -> Conformer -> frame stacking + projection -> decoder-only LLM.

The "integration" model of PAPER.md §3. The encoder is the CTC AM's (same module names, so that
`init.from_model` with `init.include: ["frontend.*", "encoder.*"]` starts it from a trained AM);
`SpeechProjector` stacks k encoder frames into one LLM input vector (the authors: conv ×6, k = 2,
120 ms); the LLM is a `CausalLM` (asrllm.models.llm) in its own tokens or re-vocabularised to an AM
tokenizer (`label_unit`), fully fine-tuned, with LoRA (`llm.lora`), or frozen (`freeze_llm`).

Two attention interfaces (docs/speech_llm.md has the equations):
- `prefix`: the LLM reads [prompt before; speech vectors; prompt after; BOS] as input vectors, then
  the transcript (the authors: "USER: " <speech> " Transcribe speech to text. ASSISTANT: ");
- `merged_attention`: the speech vectors never pass through the LLM layers. Each layer l caches
  its own key/value projections of them (`CausalLM.memory_state`), and the text positions
  ([prompt; BOS; transcript]) attend in ONE softmax over [speech keys ; text keys] in every layer.
Both are one prefill of the LLM state (`context`), after which the transcript is appended like any
LM prefix: training, the full forward and the incremental search share that code.

Loss (per predicted token, the LM's convention):
    loss_sum = - Σ_b Σ_{i=1}^{n_b + 1} log p(y_{b,i} | y_{b,<i}, x_b)  +  aux_ctc_weight · Σ_b CTC_b
    count    = Σ_b (n_b + 1)                      (y_b = transcript_b EOS)
The aux CTC head reads the last encoder layer over the label units + blank (the label tokenizer's
blank, or one extra last id for an LLM vocabulary, which has none).

Shapes: B utterances, S audio samples, T encoder frames, E encoder dim, U = ceil(T / k) speech
vectors, D LLM dim, P / Q prompt tokens before / after the speech, L transcript labels, V labels.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from asrllm.config import ConfigError
from asrllm.data.batch import Batch
from asrllm.data.loader import SpeechData
from asrllm.data.tokenizer import Tokenizer, load_tokenizer
from asrllm.models.conformer import ConformerConfig, ConformerEncoder
from asrllm.models.ctc_model import CTCHead, ctc_loss_sum
from asrllm.models.frontend import LogMel, LogMelConfig
from asrllm.models.llm import CausalLM, LabelsOfItsLLM, LLMConfig, LMState, build_llm
from asrllm.models.specaugment import SpecAugment, SpecAugmentConfig

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ProjectorConfig:
    """Encoder frames -> LLM input vectors (the authors: stack 2, linear)."""

    stack: int = 2  # k consecutive encoder frames per LLM input vector (downsampling = conv factor · k)
    kind: Literal["linear", "mlp"] = "linear"  # one Linear(k·E -> D), or Linear -> GELU -> Linear
    hidden_dim: int | None = None  # mlp: hidden width (default: the LLM dim D)

    def __post_init__(self) -> None:
        if self.stack < 1:
            raise ConfigError(f"model.projector.stack={self.stack} must be >= 1")
        if self.hidden_dim is not None and self.kind != "mlp":
            raise ConfigError("model.projector.hidden_dim only applies to kind: mlp")


@dataclasses.dataclass(frozen=True)
class PromptConfig:
    """Text around the speech, encoded with the label tokenizer; both "" = no prompt."""

    before: str = "USER: "  # prompt text before the speech vectors
    after: str = " Transcribe speech to text. ASSISTANT: "  # after them (then BOS and the transcript)


@dataclasses.dataclass(frozen=True)
class SpeechLLMConfig:
    """The `model:` section of a speech-LLM training YAML (`model_kind: speech_llm`)."""

    llm: LLMConfig  # the decoder-only LLM: pre-trained (source / gguf) or from scratch (arch); LoRA
    label_unit: Literal["llm", "am_tokenizer"] = "llm"  # the LLM's own tokens, or an AM tokenizer's (re-vocab)
    am_tokenizer: str | None = None  # AM tokenizer dir (data/token/<name>) when label_unit is am_tokenizer
    interface: Literal["prefix", "merged_attention"] = "prefix"  # how the speech enters the LLM
    prompt: PromptConfig = dataclasses.field(default_factory=PromptConfig)
    frontend: LogMelConfig = dataclasses.field(default_factory=LogMelConfig)  # audio -> log-mel
    specaugment: SpecAugmentConfig = dataclasses.field(default_factory=SpecAugmentConfig)  # train only
    encoder: ConformerConfig = dataclasses.field(default_factory=ConformerConfig)  # log-mel -> (B, T, E)
    projector: ProjectorConfig = dataclasses.field(default_factory=ProjectorConfig)  # (B, T, E) -> (B, U, D)
    freeze_encoder: bool = False  # keep the encoder (and frontend) fixed, e.g. as initialised from a CTC AM
    freeze_llm: bool = False  # keep the whole LLM fixed: only the projector (+ encoder) train
    aux_ctc_weight: float = 0.0  # weight of a CTC loss on the last encoder layer over the label units

    def __post_init__(self) -> None:
        if self.label_unit == "am_tokenizer" and not self.am_tokenizer:
            raise ConfigError("model.am_tokenizer must name the AM tokenizer dir when model.label_unit is 'am_tokenizer'")
        if self.label_unit == "llm" and self.am_tokenizer:
            raise ConfigError(f"model.am_tokenizer={self.am_tokenizer!r} is only used with model.label_unit: am_tokenizer")
        if self.encoder.input_dim != self.frontend.n_mels:
            raise ConfigError(f"model.encoder.input_dim ({self.encoder.input_dim}) must equal model.frontend.n_mels "
                              f"({self.frontend.n_mels})")
        if self.freeze_llm and self.llm.lora is not None:
            raise ConfigError("model.freeze_llm=true with model.llm.lora: LoRA trains adapters in the LLM; choose one")
        if not self.aux_ctc_weight >= 0:
            raise ConfigError(f"model.aux_ctc_weight={self.aux_ctc_weight} must be >= 0")


class SpeechProjector(nn.Module):
    """Stack k consecutive encoder frames and project them to the LLM dimension: (B, T, E) -> (B, U, D)."""

    def __init__(self, cfg: ProjectorConfig, enc_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.stack = cfg.stack
        d_in = cfg.stack * enc_dim
        if cfg.kind == "linear":
            self.proj: nn.Module = nn.Linear(d_in, llm_dim)
        else:
            hidden = cfg.hidden_dim or llm_dim
            self.proj = nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, llm_dim))

    def output_lengths(self, lens: Tensor) -> Tensor:
        return (lens + self.stack - 1) // self.stack

    def forward(self, x: Tensor, lens: Tensor) -> tuple[Tensor, Tensor]:
        B, T, E = x.shape
        k = self.stack
        # frames past an utterance's end are zeroed: its last, partial group must not depend on the
        # batch it is in (batched = single-utterance results)
        x = x.masked_fill((torch.arange(T, device=x.device) >= lens[:, None])[..., None], 0.0)
        x = F.pad(x, (0, 0, 0, (-T) % k))  # (B, U·k, E)
        return self.proj(x.reshape(B, -1, k * E)), self.output_lengths(lens)  # (B, U, D), (B,)


class SpeechLLM(LabelsOfItsLLM, nn.Module):
    """Encoder + projector + LLM; `forward(batch)` is the training loss, `context` the search's prefill."""

    train_data: ClassVar[type[SpeechData]] = SpeechData  # data dirs, transcripts in the model's labels

    def __init__(self, cfg: SpeechLLMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.frontend = LogMel(cfg.frontend)
        self.specaugment = SpecAugment(cfg.specaugment)
        self.encoder = ConformerEncoder(cfg.encoder)
        self.llm: CausalLM = build_llm(cfg.llm, load_tokenizer(cfg.am_tokenizer) if cfg.am_tokenizer else None)
        self.projector = SpeechProjector(cfg.projector, cfg.encoder.d_model, self.llm.hidden_size)
        tok = self.tokenizer
        self.ctc_blank_id = tok.blank_id if tok.blank_id >= 0 else tok.vocab_size  # LLM vocabularies: one more id
        self.ctc_head = (CTCHead(cfg.encoder.d_model, max(tok.vocab_size, self.ctc_blank_id + 1))
                         if cfg.aux_ctc_weight > 0 else None)
        self.prompt_before = _prompt_ids(tok, cfg.prompt.before, "model.prompt.before")  # (P,)
        self.prompt_after = _prompt_ids(tok, cfg.prompt.after, "model.prompt.after")  # (Q,)
        for module in (self.frontend, self.encoder) if cfg.freeze_encoder else ():
            module.requires_grad_(False)
        if cfg.freeze_llm:
            self.llm.requires_grad_(False)
        n_all = sum(p.numel() for p in self.parameters())
        n_train = sum(p.numel() for p in self.parameters() if p.requires_grad)
        logger.info("SpeechLLM (%s, %s labels): %.2fM parameters, %.2fM trainable; %d + %d prompt tokens",
                    cfg.interface, cfg.label_unit, n_all / 1e6, n_train / 1e6, len(self.prompt_before),
                    len(self.prompt_after))

    @property
    def context_tokens(self) -> int:
        """Prompt tokens and BOS around the speech vectors (P + Q + 1)."""
        return len(self.prompt_before) + len(self.prompt_after) + 1

    @property
    def max_speech_vectors(self) -> int | None:
        """The most speech vectors an utterance may have: the LLM's positions less the prompt, BOS
        and at least one label (None: the LLM sets no maximum)."""
        positions = self.llm.max_positions
        return None if positions is None else positions - self.context_tokens - 1

    def check_lengths(self, speech_lens: Tensor, utt_ids: list[str] | None) -> None:
        """A ValueError naming the first utterance with more speech vectors than the LLM has room for."""
        limit = self.max_speech_vectors
        if limit is None or int(speech_lens.max()) <= limit:
            return
        b = int(speech_lens.argmax())
        name = repr(utt_ids[b]) if utt_ids else f"#{b} of the batch"
        hop = self.cfg.frontend.hop_length / self.cfg.frontend.sample_rate
        seconds = int(speech_lens[b]) * self.cfg.projector.stack * self.cfg.encoder.subsampling_factor * hop
        raise ValueError(
            f"utterance {name}: about {seconds:.1f} s of audio gives {int(speech_lens[b])} speech vectors, more than "
            f"the LLM's {self.llm.max_positions} positions leave room for ({limit}, after {self.context_tokens} prompt "
            "tokens and BOS and one label); split the audio or stack more frames (model.projector.stack)"
        )

    def num_output_frames(self, num_samples: Tensor) -> Tensor:
        """Encoder frames T of utterances of `num_samples` samples (the data checks' CTC bound)."""
        return self.encoder.output_lengths(self.cfg.frontend.num_frames(num_samples))

    def num_speech_vectors(self, num_samples: Tensor) -> Tensor:
        """LLM input vectors U of utterances of `num_samples` samples."""
        return self.projector.output_lengths(self.num_output_frames(num_samples))

    def encode(self, audio: Tensor, audio_lens: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Audio (B, S) -> speech vectors (B, U, D), their lengths (B,), encoder output (B, T, E), lengths (B,).

        SpecAugment applies in train mode only.
        """
        feats, lens = self.frontend(audio, audio_lens)
        feats = self.specaugment(feats, lens)
        enc, enc_lens, _ = self.encoder(feats, lens)
        speech, speech_lens = self.projector(enc, enc_lens)
        return speech.to(self.llm.dtype), speech_lens, enc, enc_lens

    def ctc_log_probs(self, enc: Tensor) -> Tensor | None:
        """(B, T, V') aux CTC log-probs of the encoder output (None without an aux CTC head)."""
        return None if self.ctc_head is None else self.ctc_head(enc)

    def context(self, speech: Tensor, speech_lens: Tensor) -> LMState:
        """The LLM state after each utterance's speech and prompt and BOS: what every transcript is
        appended to. speech (B, U, D), speech_lens (B,). Its `last_hidden` (B, D) predicts the first label."""
        B, U, _ = speech.shape
        dev = speech.device
        before, after = self.prompt_before.to(dev), self.prompt_after.to(dev)
        bos = torch.tensor([self.bos_id], device=dev)
        if self.cfg.interface == "merged_attention":
            ids = torch.cat([before, after, bos]).expand(B, -1)  # (B, P + Q + 1): text tokens after the memory
            lengths = torch.full((B,), ids.shape[1], dtype=torch.long, device=dev)
            _, state = self.llm.append(self.llm.embed(ids), lengths, self.llm.memory_state(speech, speech_lens))
            return state
        P, Q = len(before), len(after)
        tail = self.llm.embed(torch.cat([after, bos]))  # (Q + 1, D)
        lengths = P + speech_lens + Q + 1  # (B,)
        # [before; speech_b; after; BOS], right-padded: position j of utterance b reads source row src[b, j]
        source = torch.cat([self.llm.embed(before).expand(B, P, -1), speech, tail.expand(B, Q + 1, -1)], dim=1)
        j = torch.arange(P + U + Q + 1, device=dev)
        src = j + (j >= P + speech_lens[:, None]) * (U - speech_lens[:, None])  # (B, P + U + Q + 1)
        embeds = source.gather(1, src.clamp(max=source.shape[1] - 1)[..., None].expand(-1, -1, source.shape[2]))
        _, state = self.llm.append(embeds, lengths, self.llm.empty_state(B))
        return state

    def transcript_log_probs(self, state: LMState, tokens: Tensor, lengths: Tensor) -> Tensor:
        """log p of each label and of the final EOS given the context: tokens (B, L), lengths (B,) ->
        (B, L + 1); column lengths[b] holds log p(EOS | ...), columns beyond it are 0. Differentiable."""
        B, L = tokens.shape
        pos = torch.arange(L + 1, device=tokens.device)
        valid = pos < lengths[:, None]  # (B, L + 1) real labels
        ids = tokens.masked_fill(~valid[:, :L], 0)
        first = state.last_hidden[:, None]  # (B, 1, D): predicts the first label (or EOS)
        if L:  # a batch of only non-speech utterances (no labels) feeds nothing
            hidden, _ = self.llm.append(self.llm.embed(ids), lengths, state)  # (B, L, D): after each label
            first = torch.cat([first.to(hidden.dtype), hidden], dim=1)  # (B, L + 1, D)
        hidden = first
        targets = torch.where(pos == lengths[:, None], self.eos_id, F.pad(ids, (0, 1)))  # (B, L + 1)
        keep = pos <= lengths[:, None]  # (B, L + 1) predicted positions
        logp = self.llm.head(hidden[keep])  # (sum(lengths + 1), V): the output matrix only where needed
        out = torch.zeros(B, L + 1, device=tokens.device)
        return out.masked_scatter(keep, logp.gather(1, targets[keep][:, None])[:, 0])

    def forward(self, batch: Batch) -> tuple[Tensor, Tensor, dict[str, float]]:
        """-> (summed NLL of every predicted token + weighted summed aux CTC, predicted tokens, stats)."""
        speech, speech_lens, enc, enc_lens = self.encode(batch.audio, batch.audio_lens)
        token_logp = self.transcript_log_probs(self.context(speech, speech_lens), batch.targets, batch.target_lens)
        nll = -token_logp.sum()
        count = (batch.target_lens + 1).sum()
        stats = {"nll": nll.item() / count.item()}
        loss_sum = nll
        if self.ctc_head is not None:
            ctc = ctc_loss_sum(self.ctc_head(enc), enc_lens, batch.targets, batch.target_lens, self.ctc_blank_id)
            loss_sum = loss_sum + self.cfg.aux_ctc_weight * ctc
            stats["ctc"] = ctc.item() / len(batch)
        stats["loss"] = loss_sum.item() / count.item()
        return loss_sum, count.to(loss_sum.dtype), stats


def _prompt_ids(tok: Tokenizer, text: str, option: str) -> Tensor:
    """(P,) int64 ids of a prompt text; text the tokenizer cannot encode is a ConfigError naming it."""
    if not text:
        return torch.zeros(0, dtype=torch.long)
    ids = tok.encode(text)
    if not ids or (tok.unk_id >= 0 and tok.unk_id in ids):
        raise ConfigError(f"{option}={text!r}: the label tokenizer cannot encode it ({len(ids)} ids, "
                          f"unknown ones: {tok.unk_id in ids}); use text of its vocabulary or \"\" for none")
    return torch.tensor(ids, dtype=torch.long)

