"""The main label model of a label-synchronous search as a `Scorer`, and what a search knows of the audio.

`AEDScorer` is an attention encoder-decoder's decoder (asrllm.models.aed) as a full-vocabulary
scorer: each utterance's cross-attention keys/values are projected ONCE (`init_state`) and stay per
utterance, read by every hypothesis through its utterance index, so reordering never copies them
(ESPnet's batch beam search repeats the encoder output per hypothesis); per hypothesis the state
holds only the self-attention cache.

`SpeechLLMScorer` is the speech LLM (asrllm.models.speech_llm) as a full-vocabulary scorer: its
state starts from each utterance's context (prompt, speech, BOS), prefilled ONCE per utterance and
then shared by that utterance's K hypotheses (HF `generate()` with num_beams=K prefills it K
times); from there it is an `LMScorer` (one KV-cached call per step for all hypotheses).

`encoder_output(model, audio, audio_lens)` runs a trained model's encoder once per batch and
returns the `EncoderOutput` bundle that every search and scorer reads: a CTC AM's log-probs, an
AED's encoder output (+ its CTC log-probs), a speech LLM's speech vectors (+ its aux CTC log-probs).

Shapes: B utterances, K beam, N = B·K hypotheses, S audio samples, U speech vectors, T CTC (and
AED encoder) frames, D LLM dim, V labels, L label length, k inputs fed in one call.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from asrllm.batched import BatchedState
from asrllm.models.aed import AED, CrossMemory, DecoderState
from asrllm.models.ctc_model import CTCModel
from asrllm.models.speech_llm import SpeechLLM
from asrllm.search.lm_scorer import LMCallStats, LMScorer, LMScorerState
from asrllm.search.scorer import EncoderOutput, Scorer


@dataclasses.dataclass
class AEDScorerState(BatchedState):
    """The decoder's state of N hypotheses; the cross-attention memory stays per utterance."""

    decoder: DecoderState  # per-layer self-attention keys/values (N, H, C, Dh), mask (N, C), inputs fed (N,)
    memory: CrossMemory  # per-layer cross-attention keys/values (B, H, T, Dh) of the B utterances (not per hypothesis)
    utt: Tensor  # (N,) int64 row of `memory` of each hypothesis
    next_logp: Tensor  # (N, V) log p(next label | the inputs fed), for hypotheses with nothing new to feed


class AEDScorer(Scorer):
    """log p(next label | audio, prefix) of an AED's decoder, batched over N hypotheses.

    `score` feeds what the decoder has not read yet, in one call: SOS first, then each prefix's new
    labels (one per step in a label-synchronous search). `stats` counts decoder calls and inputs fed
    (`LMCallStats`, for reports), as for the LM scorers. The model must be in eval mode.
    """

    def __init__(self, model: AED) -> None:
        self.model = model
        self.stats = LMCallStats()

    def vocab_size(self) -> int:
        return self.model.cfg.vocab_size

    def init_state(self, batch_size: int, beam: int, enc: EncoderOutput | None) -> AEDScorerState:
        """Cross-attention memory of enc.states (B, T, E), enc.lens (B,), once per utterance; nothing fed."""
        if enc is None or enc.states is None:
            raise ValueError("AEDScorer needs the encoder output (EncoderOutput.states) of the utterances")
        dev = enc.lens.device
        n = batch_size * beam
        memory = self.model.decoder.memory(enc.states, enc.lens)  # B rows
        utt = torch.arange(batch_size, device=dev).repeat_interleave(beam)  # (N,)
        return AEDScorerState(self.model.decoder.empty_state(n, dev), memory, utt,
                              torch.zeros(n, self.vocab_size(), device=dev))

    @torch.no_grad()
    def score(self, tokens: Tensor, lengths: Tensor, state: BatchedState | None) -> tuple[Tensor, AEDScorerState]:
        """logp (N, V) float32 of the label after each prefix tokens (N, L), lengths (N,)."""
        assert isinstance(state, AEDScorerState), type(state)
        fed = state.decoder.fed  # (N,) inputs read: SOS + labels
        new = lengths + 1 - fed  # (N,) inputs not read yet
        assert bool((new >= 0).all()), f"prefixes shorter than what the decoder has read: {lengths} + SOS < {fed}"
        k = int(new.max()) if new.numel() else 0
        if k == 0:
            return state.next_logp, state
        label = fed[:, None] + torch.arange(k, device=tokens.device) - 1  # (N, k) label index of each input; -1: SOS
        inputs = tokens.gather(1, label.clamp(0, tokens.shape[1] - 1))  # rows with fewer than k new: any valid id
        inputs = inputs.masked_fill(label < 0, self.model.bos_id)
        all_logp, decoder = self.model.decoder.append(inputs, new, state.decoder, state.memory, state.utt)  # (N, k, V)
        self.stats.count(new, state.utt)
        rows = torch.arange(tokens.shape[0], device=tokens.device)
        logp = torch.where((new > 0)[:, None], all_logp[rows, (new - 1).clamp(min=0)], state.next_logp)  # (N, V)
        return logp, AEDScorerState(decoder, state.memory, state.utt, logp)

    def select_state(self, state: BatchedState | None, src: Tensor, labels: Tensor | None = None) -> AEDScorerState:
        """Hypothesis n continues src[n] (N',): its cache rows and utterance index; the memory is untouched."""
        assert isinstance(state, AEDScorerState), type(state)
        return AEDScorerState(state.decoder.select(src), state.memory, state.utt.index_select(0, src),
                              state.next_logp.index_select(0, src))


class SpeechLLMScorer(LMScorer):
    """log p(next label | speech, prompt, prefix) of a speech LLM, batched over N hypotheses."""

    def __init__(self, model: SpeechLLM, cache_distributions: bool = True) -> None:
        super().__init__(model.llm, 1.0, cache_distributions)
        self.model = model

    def init_state(self, batch_size: int, beam: int, enc: EncoderOutput | None) -> LMScorerState:
        """Prefill each utterance's context once (enc.states (B, U, D), enc.lens (B,)), then give each of
        its `beam` hypotheses a copy of that state."""
        if enc is None or enc.states is None:
            raise ValueError("SpeechLLMScorer needs the speech vectors (EncoderOutput.states) of the utterances")
        context = self.model.context(enc.states, enc.lens)  # B rows: computed once per utterance
        self.stats.count(context.positions, torch.arange(batch_size, device=enc.lens.device))  # inputs prefilled
        utt = torch.arange(batch_size, device=enc.lens.device).repeat_interleave(beam)  # (N,)
        return LMScorerState(lm=self.lm.select_state(context, utt), fed=torch.zeros_like(utt), utt=utt)

    def max_labels(self, enc: EncoderOutput) -> Tensor | None:
        """(B,) labels that fit into the LLM's positions after each utterance's context (None: no limit)."""
        positions = self.lm.max_positions
        if positions is None:
            return None
        return (positions - self.model.context_tokens - enc.lens).clamp(min=0)


@torch.no_grad()
def encoder_output(model: nn.Module, audio: Tensor, audio_lens: Tensor, utt_ids: list[str] | None = None) -> EncoderOutput:
    """One encoder pass of a trained model over audio (B, S), audio_lens (B,), as the searches read it."""
    if isinstance(model, AED):
        enc, enc_lens, ctc = model.encode(audio, audio_lens)  # (B, T, E), (B,), (B, T, V)
        return EncoderOutput(lens=enc_lens, states=enc, ctc_log_probs=None if ctc is None else ctc.float())
    if isinstance(model, CTCModel):
        log_probs, lens = model.log_probs(audio, audio_lens, utt_ids=utt_ids)  # (B, T, V), (B,)
        return EncoderOutput(lens=lens, ctc_log_probs=log_probs.float())
    if isinstance(model, SpeechLLM):
        speech, speech_lens, enc, enc_lens = model.encode(audio, audio_lens)  # (B, U, D), (B,)
        model.check_lengths(speech_lens, utt_ids)
        ctc = model.ctc_log_probs(enc)
        return EncoderOutput(lens=speech_lens, states=speech, ctc_log_probs=None if ctc is None else ctc.float(),
                             ctc_lens=enc_lens)
    raise TypeError(f"no search input for a {type(model).__name__}")
