"""Options of the trainer and of its optimiser/LR schedule (the `trainer:` and `optim:` YAML sections).

Both are frozen dataclasses validated once in `__post_init__`; every error names the option.

>>> TrainerConfig(max_epochs=2, accum_grad=4).accum_grad
4
>>> try:
...     TrainerConfig(accum_grad=0)
... except ValueError as e:
...     print(e)
trainer.accum_grad must be >= 1, got 0
"""

from __future__ import annotations

import dataclasses
from typing import Literal


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW and the per-step learning-rate schedule (formulas in `asrllm/train/schedule.py`)."""

    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.01  # AdamW decoupled weight decay
    betas: tuple[float, float] = (0.9, 0.98)  # AdamW moment decay rates
    eps: float = 1e-8  # AdamW denominator epsilon
    decay_bias_and_norm: bool = False  # also decay 1-D parameters (biases, norm gains); usually harmful
    grad_clip: float = 5.0  # clip the global gradient L2 norm to this; 0 disables clipping
    schedule: Literal["warmup_cosine", "one_cycle", "constant"] = "warmup_cosine"  # LR shape over steps
    warmup_steps: int = 1000  # linear warm-up (warmup_cosine, constant) or rising phase (one_cycle)
    total_steps: int | None = None  # schedule length; None: the trainer's planned number of steps
    min_lr_ratio: float = 0.0  # warmup_cosine: final LR = lr * min_lr_ratio
    div_factor: float = 25.0  # one_cycle: initial LR = lr / div_factor
    final_div_factor: float = 1e4  # one_cycle: final LR = initial LR / final_div_factor
    # per parameter group: glob of parameter names -> LR multiplier, first match wins (e.g. a speech
    # LLM's new projector faster than its pre-trained LLM: {"projector.*": 5.0, "llm.*": 0.5})
    lr_scales: dict[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(self.lr > 0, "optim.lr", "must be > 0", self.lr)
        _check(self.weight_decay >= 0, "optim.weight_decay", "must be >= 0", self.weight_decay)
        _check(all(0 <= b < 1 for b in self.betas), "optim.betas", "must lie in [0, 1)", self.betas)
        _check(self.eps > 0, "optim.eps", "must be > 0", self.eps)
        _check(self.grad_clip >= 0, "optim.grad_clip", "must be >= 0 (0 disables)", self.grad_clip)
        _check(self.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0", self.warmup_steps)
        _check(self.total_steps is None or self.total_steps > 0, "optim.total_steps", "must be > 0", self.total_steps)
        _check(0 <= self.min_lr_ratio <= 1, "optim.min_lr_ratio", "must lie in [0, 1]", self.min_lr_ratio)
        for pattern, scale in self.lr_scales.items():
            _check(scale > 0, f"optim.lr_scales[{pattern!r}]", "must be > 0", scale)
        _check(self.div_factor > 0, "optim.div_factor", "must be > 0", self.div_factor)
        _check(self.final_div_factor > 0, "optim.final_div_factor", "must be > 0", self.final_div_factor)


@dataclasses.dataclass(frozen=True)
class InitConfig:
    """Initial weights from another trained model (fine-tuning; ESPnet's `init_param`).

    E.g. the encoder of a trained CTC model under a new output layer for another vocabulary:
    `from_model: exp/train_ctc_small/model_avg.safetensors`, `exclude: ["heads.*"]`; or a speech
    LLM's encoder from a CTC AM: `include: ["frontend.*", "encoder.*"]`. Applied when training
    starts; a resumed run continues from its own checkpoint instead.
    """

    from_model: str | None = None  # weights file (or checkpoint dir) of a trained model; None: random init
    include: list[str] = dataclasses.field(default_factory=lambda: ["*"])  # glob patterns of the weight names
    #                                                                        involved (the model's and the file's)
    exclude: list[str] = dataclasses.field(default_factory=list)  # glob patterns of weight names NOT taken from it

    def __post_init__(self) -> None:
        _check(not self.exclude or self.from_model is not None, "init.exclude", "needs init.from_model", self.exclude)
        _check(self.include == ["*"] or self.from_model is not None, "init.include", "needs init.from_model",
               self.include)
        _check(bool(self.include), "init.include", "must name at least one pattern (['*'] = every weight)",
               self.include)


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    """How long to train, on what, and what to write into the experiment directory."""

    max_epochs: int | None = 10  # epochs to train (numbered from 1); None: stop by max_steps only
    max_steps: int | None = None  # optimizer steps to train; None: stop by max_epochs only
    accum_grad: int = 1  # micro-batches per optimizer step (gradient accumulation)
    amp: Literal["auto", "bf16", "none"] = "auto"  # bf16 autocast; "auto": on CUDA devices that support bf16
    device: str = "auto"  # "auto": cuda:<LOCAL_RANK> when CUDA is available, else cpu
    seed: int = 0  # seeds python/numpy/torch at the start of fit (plus the rank: dropout differs per rank)
    num_threads: int | None = None  # torch.set_num_threads; None leaves torch's default
    find_unused_parameters: bool = False  # DDP: set when some parameters get no gradient in a step
    log_every_steps: int = 100  # log line, TensorBoard and train_log.jsonl scalars every N steps
    valid_every_steps: int | None = None  # validate every N steps, in addition to every epoch end
    save_every_steps: int | None = None  # checkpoint every N steps, in addition to every epoch end
    keep_last: int = 3  # newest step checkpoints kept; checkpoints that end an epoch follow keep_epochs
    keep_epochs: int | None = None  # newest epoch checkpoints kept; None keeps all
    resume: bool = True  # continue from the newest complete checkpoint in exp_dir, if there is one
    progress_bar: bool = True  # tqdm on rank 0, shown only when stderr is a terminal
    tensorboard: bool = True  # TensorBoard scalars under exp_dir/tensorboard (rank 0)
    plot: bool = True  # draw exp_dir/learning_curve.png from train_log.jsonl at the end of fit (rank 0)

    def __post_init__(self) -> None:
        _check(
            self.max_epochs is not None or self.max_steps is not None,
            "trainer.max_epochs/trainer.max_steps",
            "at least one must be set",
            (self.max_epochs, self.max_steps),
        )
        _check(self.max_epochs is None or self.max_epochs >= 1, "trainer.max_epochs", "must be >= 1", self.max_epochs)
        _check(self.max_steps is None or self.max_steps >= 1, "trainer.max_steps", "must be >= 1", self.max_steps)
        _check(self.accum_grad >= 1, "trainer.accum_grad", "must be >= 1", self.accum_grad)
        _check(self.num_threads is None or self.num_threads >= 1, "trainer.num_threads", "must be >= 1", self.num_threads)
        _check(self.log_every_steps >= 1, "trainer.log_every_steps", "must be >= 1", self.log_every_steps)
        for name in ("valid_every_steps", "save_every_steps", "keep_epochs"):
            value = getattr(self, name)
            _check(value is None or value >= 1, f"trainer.{name}", "must be >= 1 or null", value)
        _check(self.keep_last >= 1, "trainer.keep_last", "must be >= 1 (resume needs one)", self.keep_last)
        _check(
            self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda"),
            "trainer.device",
            "must be auto, cpu, cuda or cuda:<index>",
            self.device,
        )


def _check(ok: bool, option: str, requirement: str, value: object) -> None:
    if not ok:
        raise ValueError(f"{option} {requirement}, got {value!r}")
