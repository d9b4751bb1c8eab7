"""The one training loop for every model kind (CTC, AED, LM, speech LLM).

What the trainer needs from a model: `forward(batch) -> (loss_sum, count, stats)` with
`loss_sum` a () tensor SUMMED over the items of this rank's micro-batch, `count` a () tensor with
their number (utterances, tokens: the model decides), and `stats` per-item means of this
micro-batch (floats, the same keys every call). From the data: a `TrainLoader` (below).

Loss normalisation. In one optimizer step, rank r runs micro-batches a = 1..A and the step
minimises

    L = sum_{r,a} loss_sum[r,a] / N,    N = sum_{r,a} count[r,a]   (the GLOBAL count of the step).

N is known only after every forward pass of the window, so each micro-batch back-propagates its
raw `loss_sum` and the gradients are scaled once afterwards (keeping A graphs alive to learn N up
front would cost memory). DDP has averaged the gradients over the W ranks, so the scale is W / N.
The update then does not depend on how a global batch is split over ranks or micro-batches (up to
float summation order): 2 ranks with half batches = 1 rank with whole batches, and accum_grad=2
with half batches = accum_grad=1 with whole batches. Clipping and AdamW see the normalised gradient.

Exact resume. A checkpoint holds the model, optimizer, scheduler, (epoch, micro-batches done in
it) and every rank's python/numpy/torch/CUDA RNG state, saved after the step's logging and
validation. Resuming restores all of it and asks the loader for `epoch_batches(epoch, start=done)`,
so the continued run repeats the uninterrupted one bit for bit on CPU (dropout included). It
does with loader workers too: they do not touch the global RNG (`asrllm.data.loader`). A run
killed at any moment (SIGKILL during a step, a checkpoint write, validation) and resumed ends
bit-identical to an uninterrupted one (tests/train/test_fault_tolerance.py). On resume,
train_log.jsonl is rewritten (atomically) to the records up to the checkpoint's step, so that it
holds every step once; TensorBoard drops later events through `purge_step`.

The exp dir. `fit` holds the exp dir's lock (`asrllm.locking.DirLock`, rank 0) from start to end,
so a second trainer on the same dir refuses with the PID of the first; a caller that has to look
at the dir before (the train CLI checks its stage record, `asrllm.train.experiment`) takes the
lock itself and passes it in. Nothing is written into the exp dir before the resume check, and a
run that finds itself finished writes nothing at all (it draws the learning curve only if it is
missing).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from asrllm.config import atomic_write_text, save_config
from asrllm.locking import DirLock
from asrllm.train import distributed as dist
from asrllm.train.checkpoint import (
    checkpoint_state_dict,
    latest_checkpoint,
    link_epoch,
    load_checkpoint_state_dict,
    load_model_state,
    load_trainer_state,
    prune_checkpoints,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from asrllm.train.config import OptimConfig, TrainerConfig
from asrllm.train.plot import plot_learning_curve
from asrllm.train.schedule import build_scheduler

logger = logging.getLogger(__name__)

LOG_FILE = "train_log.jsonl"
PLOT_FILE = "learning_curve.png"


class TrainLoader(Protocol):
    """This rank's batches; `asrllm.data.loader.BatchLoader` implements it. Every rank must get the
    same number of batches, and each batch has `.to(device)`."""

    def num_batches(self, epoch: int) -> int:
        """Number of this rank's micro-batches in `epoch` (required)."""
        ...

    def epoch_batches(self, epoch: int, start: int = 0) -> Iterator[Any]:
        """This rank's micro-batches of `epoch` from index `start` on; deterministic in (seed, epoch) (required)."""
        ...


@dataclasses.dataclass
class TrainState:
    """Where training stands; stored in every checkpoint's trainer_state.pt."""

    step: int = 0  # optimizer steps done
    epoch: int = 1  # the epoch being trained, from 1
    batches_done: int = 0  # this rank's micro-batches of `epoch` consumed
    valid_loss: float | None = None  # validation loss after `step`; None when not validated at this step
    best_valid_loss: float | None = None  # lowest validation loss so far


@dataclasses.dataclass
class _Meter:
    """Sums on this rank over a logging interval or one validation pass."""

    loss_sum: float = 0.0
    count: float = 0.0
    stat_sums: dict[str, float] = dataclasses.field(default_factory=dict)  # sum of stat * count
    seconds: float = 0.0  # wall time spent in training steps
    steps: int = 0
    grad_norm_sum: float = 0.0  # the norm is global already: summed over steps, not ranks
    lr: float = 0.0  # learning rate of the latest step

    def add(self, loss_sum: float, count: float, stats: dict[str, float]) -> None:
        self.loss_sum += loss_sum
        self.count += count
        for key, value in stats.items():
            self.stat_sums[key] = self.stat_sums.get(key, 0.0) + value * count

    def reduce(self, device: torch.device) -> tuple[float, float, dict[str, float]]:
        """(loss_sum, count, stat_sums) summed over ranks."""
        keys = sorted(self.stat_sums)
        values = [self.loss_sum, self.count, *(self.stat_sums[k] for k in keys)]
        total = dist.all_reduce_sum_(torch.tensor(values, dtype=torch.float64, device=device)).tolist()
        return total[0], total[1], dict(zip(keys, total[2:]))


def planned_steps(cfg: TrainerConfig, loader: TrainLoader) -> int:
    """Optimizer steps from start to end of a run of `cfg` over `loader`: the LR schedule's length
    unless optim.total_steps is set."""
    if cfg.max_epochs is None:
        assert cfg.max_steps is not None
        return cfg.max_steps
    by_epochs = sum(math.ceil(loader.num_batches(e) / cfg.accum_grad) for e in range(1, cfg.max_epochs + 1))
    return min(by_epochs, cfg.max_steps) if cfg.max_steps is not None else by_epochs


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; 1-D ones (biases, norm gains) get no weight decay
    unless `cfg.decay_bias_and_norm`; a parameter whose name matches a glob of `cfg.lr_scales`
    (first match) gets that multiple of the learning rate (the schedule scales every group alike).
    A pattern that matches no trainable parameter is an error (a misspelt one would do nothing).

    >>> opt = build_optimizer(torch.nn.Linear(3, 2), OptimConfig(weight_decay=0.1, lr_scales={"bias": 2.0}))
    >>> [(len(g["params"]), g["weight_decay"], g["lr"]) for g in opt.param_groups]
    [(1, 0.1, 0.001), (1, 0.0, 0.002)]
    """
    import fnmatch

    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    used: set[str] = set()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        pattern = next((pat for pat in cfg.lr_scales if fnmatch.fnmatchcase(name, pat)), None)
        if pattern is not None:
            used.add(pattern)
        decay = cfg.weight_decay if (p.ndim >= 2 or cfg.decay_bias_and_norm) else 0.0
        groups.setdefault((cfg.lr * cfg.lr_scales.get(pattern, 1.0), decay), []).append(p)
    unused = [pat for pat in cfg.lr_scales if pat not in used]
    if unused:
        raise ValueError(f"optim.lr_scales: {unused} match no trainable parameter of the model")
    # the base LR's groups first (the logged "lr" is group 0's), decayed before plain (as checkpoints expect)
    order = sorted(groups, key=lambda k: (k[0] != cfg.lr, k[0], k[1] == 0.0))
    return torch.optim.AdamW([{"params": groups[k], "lr": k[0], "weight_decay": k[1]} for k in order],
                             lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


class Trainer:
    """Trains one model on one `TrainLoader`, writing checkpoints, logs and plots into `exp_dir`.

    Run under torchrun for DDP (one process per device); `fit()` is the whole job. Outputs:
    `checkpoints/` (see `asrllm.train.checkpoint`), `config.yaml` (`config_to_save`),
    `train_log.jsonl` and `learning_curve.png` (see `asrllm.train.plot`), `tensorboard/`, and
    what `save_assets` writes. All are written by `fit` (rank 0), none by the constructor.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        train_loader: TrainLoader,
        valid_loader: TrainLoader | None,
        trainer_cfg: TrainerConfig,
        optim_cfg: OptimConfig,
        exp_dir: str | Path,
        config_to_save: Any | None = None,  # written to exp_dir/config.yaml when training starts or continues
        save_assets: Callable[[Path], None] | None = None,  # writes what decoding needs besides (likewise)
        exp_lock: DirLock | None = None,  # exp_dir's lock when the caller holds it already (rank 0)
        command: str | None = None,  # the command line that runs this training, recorded in train_log.jsonl
    ) -> None:
        self.cfg = trainer_cfg
        self.train_loader = train_loader
        self.valid_loader = valid_loader
        self.exp_dir = Path(exp_dir)
        self.ckpt_dir = self.exp_dir / "checkpoints"
        if trainer_cfg.num_threads is not None:
            torch.set_num_threads(trainer_cfg.num_threads)
        self.device = dist.init_distributed(trainer_cfg.device)
        self.world_size = dist.world_size()
        self.is_main = dist.is_main()
        self.module = model.to(self.device)
        self.ddp = (
            DistributedDataParallel(
                self.module,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=trainer_cfg.find_unused_parameters,
            )
            if self.world_size > 1
            else None
        )
        self.model: torch.nn.Module = self.ddp if self.ddp is not None else self.module  # what training calls
        self.optimizer = build_optimizer(self.module, optim_cfg)
        self.grad_clip = optim_cfg.grad_clip
        planned = optim_cfg.total_steps if optim_cfg.total_steps is not None else planned_steps(trainer_cfg, train_loader)
        self.scheduler = build_scheduler(self.optimizer, optim_cfg, planned)
        self.bf16 = trainer_cfg.amp == "bf16" or (
            trainer_cfg.amp == "auto" and self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        )
        self.state = TrainState()
        self._meter = _Meter()
        self._saved_step = -1  # step of the newest checkpoint, so that the end of fit does not save twice
        self._writer: SummaryWriter | None = None
        self._bar: tqdm | None = None
        self._config_to_save = config_to_save
        self._save_assets = save_assets
        self._exp_lock = exp_lock
        self._command = command

    # ---- the loop ------------------------------------------------------------------------------

    def fit(self) -> None:
        """Train until max_epochs / max_steps, continuing from the newest checkpoint if `resume`."""
        with contextlib.ExitStack() as stack:
            if self.is_main and self._exp_lock is None:
                stack.enter_context(DirLock(self.exp_dir, "training"))
            self._fit()

    def _fit(self) -> None:
        seed_everything(self.cfg.seed + dist.rank())
        self._resume_or_check_fresh()
        if self._done():  # finished already: change nothing
            if self.is_main:
                logger.info("%s: trained already (step %d); nothing to do", self.exp_dir, self.state.step)
                if self.cfg.plot and not (self.exp_dir / PLOT_FILE).exists():
                    plot_learning_curve(self.exp_dir / LOG_FILE, self.exp_dir / PLOT_FILE)
            return
        if self.is_main:
            self._write_exp_files()
        if self.is_main and self.cfg.tensorboard:
            # purge_step drops events that a stopped run wrote after its last checkpoint
            self._writer = SummaryWriter(str(self.exp_dir / "tensorboard"), purge_step=self.state.step + 1)
        try:
            while not self._done():
                self._train_epoch()
            self._finish()
        finally:
            if self._writer is not None:
                self._writer.close()

    def _train_epoch(self) -> None:
        s = self.state
        num = self.train_loader.num_batches(s.epoch)
        if num == 0:
            raise ValueError(f"the train loader has no batches in epoch {s.epoch}")
        batches = iter(self.train_loader.epoch_batches(s.epoch, start=s.batches_done))
        disable = not (self.is_main and self.cfg.progress_bar and sys.stderr.isatty())
        with tqdm(total=num, initial=s.batches_done, desc=f"epoch {s.epoch}", unit="batch", disable=disable) as bar:
            self._bar = bar
            while s.batches_done < num and not self._done():
                window = min(self.cfg.accum_grad, num - s.batches_done)
                self._train_step(batches, window)
                bar.update(window)
                self._after_step(epoch_end=s.batches_done == num)
        self._bar = None
        if s.batches_done == num:
            s.epoch, s.batches_done = s.epoch + 1, 0

    def _after_step(self, epoch_end: bool) -> None:
        step = self.state.step
        if step % self.cfg.log_every_steps == 0:
            self._log_train()
        if epoch_end or _every(step, self.cfg.valid_every_steps):
            self._validate()
        if epoch_end or _every(step, self.cfg.save_every_steps):
            self._save(epoch_end)

    def _finish(self) -> None:
        if self._meter.steps:
            self._log_train()
        if self._saved_step != self.state.step:  # stopped by max_steps between checkpoints
            if self.state.valid_loss is None:
                self._validate()
            self._save(epoch_end=False)
        if self.is_main:
            self._append_log({"event": "end", "step": self.state.step})
            logger.info("training done at step %d; best valid loss %s", self.state.step, self.state.best_valid_loss)
        if self.is_main and self.cfg.plot:
            plot_learning_curve(self.exp_dir / LOG_FILE, self.exp_dir / PLOT_FILE)

    def _done(self) -> bool:
        s, cfg = self.state, self.cfg
        return (cfg.max_steps is not None and s.step >= cfg.max_steps) or (
            cfg.max_epochs is not None and s.epoch > cfg.max_epochs
        )

    # ---- one optimizer step --------------------------------------------------------------------

    def _train_step(self, batches: Iterator[Any], window: int) -> None:
        """One update from the next `window` micro-batches (normalisation: module docstring)."""
        start = time.perf_counter()
        self.module.train()
        count = 0.0
        for i in range(window):
            batch = next(batches, None)
            if batch is None:
                raise RuntimeError(
                    f"the train loader ran out of batches in epoch {self.state.epoch}: "
                    f"num_batches() promised more than {self.state.batches_done + i}"
                )
            count += self._forward_backward(batch.to(self.device), sync=i == window - 1)
        self.state.batches_done += window
        global_count = dist.all_reduce_sum_(torch.tensor(count, dtype=torch.float64, device=self.device)).item()
        self._meter.lr = self.optimizer.param_groups[0]["lr"]
        self._meter.grad_norm_sum += self._update(global_count)
        self.scheduler.step()
        self.state.step += 1
        self.state.valid_loss = None
        self._meter.steps += 1
        self._meter.seconds += time.perf_counter() - start

    def _forward_backward(self, batch: Any, sync: bool) -> float:
        """Forward and backward one micro-batch; DDP all-reduces gradients only when `sync`."""
        no_sync = self.ddp.no_sync() if self.ddp is not None and not sync else contextlib.nullcontext()
        with no_sync:  # DDP decides in forward whether backward will sync, so both go inside
            with self._autocast():
                loss_sum, count, stats = self.model(batch)
            loss_sum.backward()
        n = float(count)
        self._meter.add(float(loss_sum.detach()), n, stats)
        return n

    def _update(self, global_count: float) -> float:
        """Scale the summed gradients to the per-item mean, clip, step; returns the gradient norm."""
        params = [p for p in self.module.parameters() if p.grad is not None]
        if global_count <= 0:
            logger.warning("step %d: no items in the step's batches; skipping the update", self.state.step + 1)
            self.optimizer.zero_grad(set_to_none=True)
            return math.nan
        grads = [p.grad for p in params]
        for grad in grads:
            grad.mul_(self.world_size / global_count)
        norm = torch.nn.utils.get_total_norm(grads)
        if not torch.isfinite(norm):
            # identical on every rank (the gradients are synchronised), so all ranks skip together
            logger.warning("step %d: gradient norm %s; skipping the update", self.state.step + 1, norm.item())
        else:
            if self.grad_clip > 0:
                torch.nn.utils.clip_grads_with_norm_(params, self.grad_clip, norm)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm.item()

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    # ---- validation and logging ----------------------------------------------------------------

    @torch.no_grad()
    def _validate(self) -> None:
        """Loss per item over the whole validation set (all ranks), recorded and kept in the state."""
        if self.valid_loader is None:
            return
        self.module.eval()
        meter = _Meter()
        for batch in self.valid_loader.epoch_batches(1):  # any fixed epoch: a sum does not depend on order
            with self._autocast():
                loss_sum, count, stats = self.module(batch.to(self.device))
            meter.add(float(loss_sum), float(count), stats)
        loss_sum, count, stat_sums = meter.reduce(self.device)
        if count <= 0:
            raise ValueError("the validation loader yielded no items")
        s = self.state
        s.valid_loss = loss_sum / count
        s.best_valid_loss = s.valid_loss if s.best_valid_loss is None else min(s.best_valid_loss, s.valid_loss)
        self._record("valid", {**{k: v / count for k, v in stat_sums.items()}, "loss": s.valid_loss})

    def _log_train(self) -> None:
        """Record the interval's train scalars: the model's stats as per-item means (a stat named like
        one of the trainer's scalars is overridden by it), loss, lr, grad norm and items per second."""
        m = self._meter
        loss_sum, count, stat_sums = m.reduce(self.device)
        scalars = {k: v / count for k, v in stat_sums.items()} if count > 0 else {}
        scalars.update(
            loss=loss_sum / count if count > 0 else math.nan,
            lr=m.lr,
            grad_norm=m.grad_norm_sum / m.steps,
            items_per_s=count / m.seconds,
        )
        self._record("train", scalars)
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{scalars['loss']:.4g}", lr=f"{m.lr:.3g}")
        self._meter = _Meter()

    def _record(self, split: str, scalars: dict[str, float]) -> None:
        """Log line, TensorBoard scalars and a train_log.jsonl record (rank 0)."""
        if not self.is_main:
            return
        s = self.state
        logger.info(
            "%s step %d epoch %d (%d batches): %s",
            split, s.step, s.epoch, s.batches_done, " ".join(f"{k} {v:.4g}" for k, v in scalars.items()),
        )
        if self._writer is not None:
            for key, value in scalars.items():
                self._writer.add_scalar(f"{split}/{key}", value, s.step)
        self._append_log({"split": split, "step": s.step, "epoch": s.epoch, **scalars})

    def _write_exp_files(self) -> None:
        """When training starts or continues: the config and assets, and the log cut back to the
        records of steps up to the one resumed from (a stopped run may have logged later steps)."""
        self.exp_dir.mkdir(parents=True, exist_ok=True)
        if self._config_to_save is not None:
            path = self.exp_dir / "config.yaml"
            old = path.read_text(encoding="utf-8") if path.exists() else None
            save_config(self._config_to_save, path)
            if old is not None and old != path.read_text(encoding="utf-8"):
                logger.info("%s: rewritten for the continued run (run-length options changed)", path)
        if self._save_assets is not None:
            self._save_assets(self.exp_dir)
        log = self.exp_dir / LOG_FILE
        if log.exists():
            lines = log.read_text(encoding="utf-8").splitlines(keepends=True) if self._saved_step >= 0 else []
            atomic_write_text(log, "".join(line for line in lines if _log_step(line) <= self.state.step))
        self._append_log({"event": "start", "step": self.state.step, "command": self._command})

    def _append_log(self, record: dict[str, Any]) -> None:
        """One record, stamped with the wall-clock time (what `read_train_log` sums into training time)."""
        record = {**record, "time": round(time.time(), 3)}
        # one write() of one line to an O_APPEND file: a crash cannot leave a broken line mid-file
        with open(self.exp_dir / LOG_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    # ---- checkpoints ---------------------------------------------------------------------------

    def _save(self, epoch_end: bool) -> None:
        """Checkpoint the state after the current step (a collective: every rank sends its RNG)."""
        rngs = dist.all_gather_object(rng_state(self.device))
        if self.is_main:
            trainer_state = {
                **dataclasses.asdict(self.state),
                "world_size": self.world_size,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": rngs,
            }
            path = save_checkpoint(self.ckpt_dir, self.state.step, checkpoint_state_dict(self.module), trainer_state)
            if epoch_end:
                link_epoch(self.ckpt_dir, self.state.epoch, path)
            prune_checkpoints(self.ckpt_dir, self.cfg.keep_last, self.cfg.keep_epochs)
            logger.info("saved %s", path)
        dist.barrier()  # no rank runs ahead (or reads checkpoints) before the write is complete
        self._saved_step = self.state.step

    def _resume_or_check_fresh(self) -> None:
        path = latest_checkpoint(self.ckpt_dir)
        if path is None:
            return
        if not self.cfg.resume:
            raise ValueError(
                f"{self.ckpt_dir} already holds checkpoints but trainer.resume is false: "
                "set trainer.resume: true to continue, or use a new exp_dir"
            )
        load_checkpoint_state_dict(self.module, load_model_state(path), path)
        saved = load_trainer_state(path)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.state = TrainState(**{f.name: saved[f.name] for f in dataclasses.fields(TrainState)})
        if self.state.batches_done == self.train_loader.num_batches(self.state.epoch):  # saved at the epoch's end
            self.state.epoch, self.state.batches_done = self.state.epoch + 1, 0  # as _train_epoch would go on
        if len(saved["rng"]) == self.world_size:
            set_rng_state(saved["rng"][dist.rank()], self.device)
        else:
            logger.warning(
                "%s was written by %d ranks, this run has %d: RNG streams restart from the seed, "
                "so the continuation is not bit-exact", path, len(saved["rng"]), self.world_size,
            )
        self._saved_step = self.state.step
        if self.is_main:
            logger.info(
                "resumed from %s: step %d, epoch %d, %d batches done", path, self.state.step, self.state.epoch,
                self.state.batches_done,
            )


def _log_step(line: str) -> float:
    """The step of a train_log.jsonl line; infinity for a line cut short by a crash (dropped)."""
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return math.inf


def _every(step: int, period: int | None) -> bool:
    return period is not None and step % period == 0
