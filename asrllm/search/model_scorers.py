"""The main label model of a label-synchronous search as a `Scorer`, and what a search knows of the audio.

`SpeechLLMScorer` is the speech LLM (asrllm.models.speech_llm) as a full-vocabulary scorer: its
state starts from each utterance's context (prompt, speech, BOS), prefilled ONCE per utterance and
then shared by that utterance's K hypotheses (HF `generate()` with num_beams=K prefills it K
times); from there it is an `LMScorer` (one KV-cached call per step for all hypotheses).

`encoder_output(model, audio, audio_lens)` runs a trained model's encoder once per batch and
returns the `EncoderOutput` bundle that every search and scorer reads: a CTC AM's log-probs, a
speech LLM's speech vectors (+ its aux CTC log-probs).

Shapes: B utterances, K beam, N = B·K hypotheses, S audio samples, U speech vectors, T CTC frames,
D LLM dim, V labels.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from asrllm.models.ctc_model import CTCModel
from asrllm.models.speech_llm import SpeechLLM
from asrllm.search.lm_scorer import LMScorer, LMScorerState
from asrllm.search.scorer import EncoderOutput


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
