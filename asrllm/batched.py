"""`BatchedState`: the state of N hypotheses as a dataclass of tensors, hypothesis dimension first.

Searches reorder hypotheses after every pruning step; any state that lives per hypothesis (a
scorer's, an LLM's KV cache) follows with one `index_select` per field. The base sits below both
`asrllm.models` and `asrllm.search`, so that a model's state needs no import from the search.

Shapes: N hypotheses, N' after a reorder.
"""

from __future__ import annotations

import dataclasses

from torch import Tensor


@dataclasses.dataclass
class BatchedState:
    """Base of every batched state (scorer states, the LLM's KV cache): tensor fields carry the
    hypothesis dimension N first.

    Subclasses add fields; non-tensor fields (ints, strings, None) are shared by all hypotheses and
    are carried over unchanged by `select`. Fields that are lists/tuples of tensors (one per layer,
    e.g. a KV cache) are selected element-wise.

    >>> import torch
    >>> @dataclasses.dataclass
    ... class Counter(BatchedState):
    ...     count: Tensor  # (N,)
    >>> Counter(torch.tensor([5, 6, 7])).select(torch.tensor([2, 2, 0])).count
    tensor([7, 7, 5])
    """

    def select(self, src: Tensor) -> BatchedState:
        """A new state whose hypothesis n is this state's hypothesis src[n]; src: (N',) int64."""
        changes = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                changes[f.name] = value.index_select(0, src)
            elif isinstance(value, (list, tuple)) and value and all(isinstance(v, Tensor) for v in value):
                changes[f.name] = type(value)(v.index_select(0, src) for v in value)
        return dataclasses.replace(self, **changes)
