"""A tiny regression model and a loader implementing the trainer's protocols, for tests only.

Shapes: B items, D input features.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import torch


@dataclasses.dataclass
class ToyBatch:
    x: torch.Tensor  # (B, D) features
    y: torch.Tensor  # (B,) targets

    def to(self, device: torch.device | str) -> ToyBatch:
        return ToyBatch(self.x.to(device), self.y.to(device))


class ToyRegressor(torch.nn.Module):
    """MLP with a LayerNorm (a no-decay parameter) and optional dropout; loss = summed squared error."""

    def __init__(self, dim: int = 4, hidden: int = 8, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(dim, hidden),
            torch.nn.LayerNorm(hidden),
            torch.nn.Tanh(),
            torch.nn.Dropout(dropout),
            torch.nn.Linear(hidden, 1),
        )

    def forward(self, batch: ToyBatch) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        err = (self.net(batch.x).squeeze(-1) - batch.y) ** 2  # (B,)
        return err.sum(), torch.tensor(float(len(batch.y))), {"abs_y": batch.y.abs().mean().item()}


def toy_data(n: int = 48, dim: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    y = x @ torch.randn(dim, generator=g) + 0.1 * torch.randn(n, generator=g)
    return x, y


class ToyLoader:
    """Global batches of `batch_size` items, reshuffled per (seed, epoch).

    `split` cuts every global batch into consecutive parts of these sizes, and this loader yields
    parts `rank::world_size` of every global batch one after another: with world_size 1 all parts
    (micro-batches for gradient accumulation), otherwise one DDP rank's share.
    `crash_after` raises after that many batches (a simulated kill).
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        seed: int = 0,
        split: Sequence[int] | None = None,
        rank: int = 0,
        world_size: int = 1,
        crash_after: int | None = None,
    ) -> None:
        assert split is None or sum(split) == batch_size, (split, batch_size)
        self.x, self.y, self.batch_size, self.seed = x, y, batch_size, seed
        self.split, self.rank, self.world_size, self.crash_after = split, rank, world_size, crash_after
        self.yielded = 0

    def _batches(self, epoch: int) -> list[ToyBatch]:
        perm = torch.randperm(len(self.y), generator=torch.Generator().manual_seed(1000 * self.seed + epoch))
        out = []
        for b in range(len(self.y) // self.batch_size):
            idx = perm[b * self.batch_size : (b + 1) * self.batch_size]
            parts = list(torch.split(idx, list(self.split))) if self.split else [idx]
            out.extend(ToyBatch(self.x[i], self.y[i]) for i in parts[self.rank :: self.world_size])
        return out

    def num_batches(self, epoch: int) -> int:
        return len(self._batches(epoch))

    def epoch_batches(self, epoch: int, start: int = 0) -> Iterator[ToyBatch]:
        for batch in self._batches(epoch)[start:]:
            if self.crash_after is not None and self.yielded >= self.crash_after:
                raise RuntimeError("simulated crash")
            self.yielded += 1
            yield batch
