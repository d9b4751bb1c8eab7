"""Checks shared by the search tests."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from asrllm.search.hyps import NBestEntry
from asrllm.search.label_sync import LabelSyncSearch
from asrllm.search.model_scorers import encoder_output
from asrllm.search.scorer import EncoderOutput


def assert_batched_equals_single(search: LabelSyncSearch, enc: EncoderOutput, ids: list[str] | None,
                                 alone: Callable[[int], EncoderOutput], tol: float = 1e-4) -> list[list[NBestEntry]]:
    """Runs `search` on the whole batch and on each utterance b by itself (`alone(b)`: its encoder
    output as a batch of one would give it) and asserts the same n-best tokens and scores. Returns
    the batched n-best lists."""
    together = search(enc, ids)
    for b in range(len(together)):
        single = search(alone(b), None if ids is None else ids[b : b + 1])[0]
        assert [e.tokens for e in single] == [e.tokens for e in together[b]], f"utterance {b}"
        gaps = [abs(x.score - y.score) for x, y in zip(single, together[b])]
        assert max(gaps, default=0.0) <= tol, f"utterance {b}: scores differ by {gaps}"
    return together


def encoded_alone(model: nn.Module, audio: Tensor, audio_lens: Tensor) -> Callable[[int], EncoderOutput]:
    """`alone` for `assert_batched_equals_single`: utterance b's audio, cut to its length, encoded by itself."""
    return lambda b: encoder_output(model, audio[b : b + 1, : audio_lens[b]], audio_lens[b : b + 1])
