"""The benchmarks' one way to encode a data set for the label-synchronous searches: the utterances
sorted by length (as decoding batches them), cut into batches of a fixed number of utterances,
each run through the model's encoder once."""

from __future__ import annotations

import time

import torch

from asrllm.data.audio import SAMPLE_RATE
from asrllm.data.datadir import Utterance
from asrllm.data.loader import inference_batches
from asrllm.search.model_scorers import encoder_output
from asrllm.search.scorer import EncoderOutput


def encoded_batches(model: torch.nn.Module, utts: list[Utterance], batch_utts: int) -> tuple[list[EncoderOutput], float, float]:
    """-> (the encoder outputs of batches of `batch_utts` utterances, encoder seconds, audio seconds)."""
    batches, encoder_seconds, audio_seconds = [], 0.0, 0.0
    with torch.inference_mode():
        for batch in inference_batches(utts, 1e9):  # one sorted list, cut into equal-count batches below
            for i in range(0, len(batch), batch_utts):
                audio, alens = batch.audio[i : i + batch_utts], batch.audio_lens[i : i + batch_utts]
                start = time.perf_counter()
                batches.append(encoder_output(model, audio[:, : int(alens.max())], alens, batch.ids[i : i + batch_utts]))
                encoder_seconds += time.perf_counter() - start
                audio_seconds += float(alens.sum()) / SAMPLE_RATE
    return batches, encoder_seconds, audio_seconds
