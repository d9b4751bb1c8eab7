"""Training survives SIGKILL at any moment, and one exp dir has one trainer (issue 7, acceptance 3).

The fault test trains a tiny CTC Conformer (SpecAugment and dropout on, `data.num_workers: 1`,
a checkpoint after every step, validation every 4 steps) to the end once, then again in a fresh
exp dir where each run is killed with SIGKILL and resumed, again and again, until a run gets to
the end. The killed run must end bit-identical to the uninterrupted one (every parameter
`torch.equal`), with the same train_log.jsonl records (each step once, same losses).

Kill moments. Most kills come after a seeded random delay drawn from [0, S + 4 tau], where S is
the set-up time of a run (config, data, record check, model, loaders, resume: measured as the
time a finished run takes) and tau the time per step, both measured on the uninterrupted run:
about half land in the set-up, the rest in steps, checkpoint writes and validation, and each
resumed run gets a few steps further. Every fifth run is instead killed the moment a checkpoint
write is under way (its temp dir appears) or a validation pass has begun (the log shows the train
record of a validation step), so that both are hit on every machine. After each kill the test
tells from the files where it landed and counts it; the counts are in the assertion message.

The runs are forked from a fork server that has imported `asrllm.bin.train` once (multiprocessing
"forkserver" with that preload), and each calls `train.main(argv)` exactly as
`python -m asrllm.bin.train` does: a real process with its own DataLoader worker, killed by the
kernel, but without the 2-3 s of imports per run that would make 20+ kills too slow for CI. The
lock test starts the real `python -m asrllm.bin.train` twice.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from asrllm.bin import train
from asrllm.testing.dummies import make_char_tokenizer, make_datadir
from asrllm.train.checkpoint import MODEL_FILE, latest_checkpoint, load_model_state

logger = logging.getLogger(__name__)

CONFIG = """
model_kind: ctc
model:
  specaugment: {num_time_masks: 2, max_time_width: 5, num_freq_masks: 1, max_freq_width: 5, ramp_steps: 4}
  encoder: {num_layers: 2, d_model: 16, num_heads: 2, ff_dim: 32, conv_kernel: 3, dropout: 0.1}
data: {max_batch_seconds: 3.0, num_buckets: 2, seed: 3, num_workers: 1}
trainer:
  max_epochs: 3
  log_every_steps: 1
  valid_every_steps: 4
  save_every_steps: 1
  keep_last: 2
  progress_bar: false
  tensorboard: false
  plot: false
  seed: 1
  num_threads: 1
optim: {lr: 1.0e-3, warmup_steps: 2}
"""
VALID_EVERY = 4
MIN_KILLS = 20
MAX_CHAINS = 3
KILL_SEED = 20261201


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fault")
    make_datadir(root / "data/train", 10, seed=0, min_duration=2.0, max_duration=3.0)  # 10 batches an epoch
    make_datadir(root / "data/dev", 2, seed=1, min_duration=2.0, max_duration=3.0)
    make_char_tokenizer(root / "data/train", root / "data/token/char")
    (root / "train.yaml").write_text(CONFIG)
    return root


def cli_args(root: Path, exp_dir: Path, *overrides: str) -> list[str]:
    return [
        "--config", str(root / "train.yaml"), "--train-data", str(root / "data/train"),
        "--valid-data", str(root / "data/dev"), "--tokenizer", str(root / "data/token/char"),
        "--exp-dir", str(exp_dir), *overrides,
    ]


def run_cli(argv: list[str], log_path: str) -> None:
    """The body of a forked run: `python -m asrllm.bin.train` less the interpreter start."""
    os.setsid()  # a process group of its own, with its DataLoader workers: see `group_ended`
    multiprocessing.set_start_method(None, force=True)  # DataLoader workers as in a fresh interpreter, not forkserver
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.exit(train.main(argv))


@pytest.fixture(scope="module")
def forkserver() -> multiprocessing.context.BaseContext:
    ctx = multiprocessing.get_context("forkserver")
    # torch._dynamo: AdamW imports it on first use (1.4 s), part of the start-up cost saved here
    ctx.set_forkserver_preload(["asrllm.bin.train", "torch._dynamo", __name__])
    return ctx


class Runs:
    """Starts forked runs of the train CLI on one exp dir, each with its own log file."""

    def __init__(self, ctx: multiprocessing.context.BaseContext, root: Path, exp_dir: Path) -> None:
        self.ctx, self.root, self.exp_dir = ctx, root, exp_dir
        self.count = 0

    def start(self) -> tuple[multiprocessing.process.BaseProcess, Path]:
        self.count += 1
        log = self.exp_dir.with_name(f"{self.exp_dir.name}.run{self.count:03d}.log")
        proc = self.ctx.Process(target=run_cli, args=(cli_args(self.root, self.exp_dir), str(log)))
        proc.start()
        return proc, log

    def run_to_end(self) -> float:
        start = time.perf_counter()
        proc, log = self.start()
        proc.join()
        assert proc.exitcode == 0, log.read_text()
        return time.perf_counter() - start


def live_members(pgid: int) -> list[int]:
    """PIDs of the processes of group `pgid` that are alive (zombies, which PID 1 reaps only every
    second or so here, do not count)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path("/proc", entry, "stat").read_text()
            except OSError:
                continue
            state, _, pgrp = stat.rsplit(")", 1)[1].split()[:3]
            if int(pgrp) == pgid and state != "Z":
                pids.append(int(entry))
    return pids


def group_ended(pgid: int, timeout: float = 5.0) -> bool:
    """True when no process of the run's group is left within `timeout` s: the DataLoader worker
    of a killed trainer must end with it (`asrllm.data.loader.exit_with_parent`). Kills what is left."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not live_members(pgid):
            return True
        time.sleep(0.005)
    os.killpg(pgid, signal.SIGKILL)
    return False


def kill_after(proc: multiprocessing.process.BaseProcess, delay: float) -> None:
    """SIGKILL `proc` after `delay` seconds unless it has ended by then; wait for it."""
    proc.join(delay)
    proc.kill()
    proc.join()


def kill_when(proc: multiprocessing.process.BaseProcess, happening: Callable[[], bool]) -> None:
    """SIGKILL `proc` as soon as `happening()` (polled every ms) unless it ends first; wait for it."""
    while proc.exitcode is None and not happening():
        time.sleep(0.001)
    proc.kill()
    proc.join()


def temp_checkpoints(exp_dir: Path) -> set[Path]:
    """Checkpoints being written (or left half-written by an earlier kill)."""
    return set((exp_dir / "checkpoints").glob(".tmp-step_*"))


def checkpoint_write_under_way(exp_dir: Path, earlier: set[Path]) -> Callable[[], bool]:
    return lambda: bool(temp_checkpoints(exp_dir) - earlier)


_TRAIN_LINE = re.compile(r"trainer: train step (\d+) ")
_VALID_LINE = re.compile(r"trainer: valid step (\d+) ")


def validation_under_way(log: Path) -> Callable[[], bool]:
    def check() -> bool:
        lines = [line for line in log.read_text().splitlines() if " asrllm.train.trainer: " in line] if log.exists() else []
        match = _TRAIN_LINE.search(lines[-1]) if lines else None
        return match is not None and int(match.group(1)) % VALID_EVERY == 0
    return check


def where_killed(exp_dir: Path, log: Path, earlier: set[Path]) -> str:
    """What the killed run was doing, as far as its files tell (`earlier`: temp checkpoints left before it)."""
    if temp_checkpoints(exp_dir) - earlier:
        return "checkpoint write"
    text = log.read_text() if log.exists() else ""  # killed before it opened its log
    steps = [int(m.group(1)) for m in _TRAIN_LINE.finditer(text)]
    if not steps:
        return "set-up or first step"
    validated = {int(m.group(1)) for m in _VALID_LINE.finditer(text)}
    if steps[-1] % VALID_EVERY == 0 and steps[-1] not in validated:
        return "validation"
    return "step"


def log_records(exp_dir: Path) -> list[dict[str, object]]:
    """train_log.jsonl without start/end events and timings (`items_per_s`, `time`)."""
    records = [json.loads(line) for line in (exp_dir / "train_log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("items_per_s", "time")} for r in records if "event" not in r]


def final_weights(exp_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = latest_checkpoint(exp_dir / "checkpoints")
    assert ckpt is not None
    return load_model_state(ckpt / MODEL_FILE)


def snapshot(exp_dir: Path) -> dict[str, tuple[int, bytes]]:
    """{path: (mtime_ns, bytes)} of every file but the lock; the loaders' reports of left-out
    utterances are rewritten by every run (with the same bytes), so only their bytes count."""
    return {
        str(p.relative_to(exp_dir)): (0 if p.name.startswith("filtered_utts.") else p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(exp_dir.rglob("*")) if p.is_file() and p.name != ".lock"
    }


def test_sigkill_at_random_moments_then_resume_is_bit_exact(
    setup: Path, forkserver: multiprocessing.context.BaseContext, tmp_path: Path
) -> None:
    ref_dir = tmp_path / "reference"
    ref = Runs(forkserver, setup, ref_dir)
    duration = ref.run_to_end()
    ref_weights, ref_log = final_weights(ref_dir), log_records(ref_dir)
    num_steps = max(int(r["step"]) for r in ref_log)  # type: ignore[call-overload]
    assert [r["step"] for r in ref_log if r["split"] == "train"] == list(range(1, num_steps + 1))
    before = snapshot(ref_dir)
    setup_time = ref.run_to_end()  # a finished run: set up, find the last checkpoint, stop
    assert snapshot(ref_dir) == before, "a finished run changed its exp dir"
    per_step = max(duration - setup_time, 0.1) / num_steps
    window = setup_time + 4 * per_step

    rng = random.Random(KILL_SEED)
    kills: Counter[str] = Counter()
    chains = 0
    while sum(kills.values()) < MIN_KILLS and chains < MAX_CHAINS:
        chains += 1
        exp_dir = tmp_path / f"killed{chains}"
        runs = Runs(forkserver, setup, exp_dir)
        while True:
            earlier = temp_checkpoints(exp_dir)
            proc, log = runs.start()
            if runs.count % 5 == 3:
                kill_when(proc, checkpoint_write_under_way(exp_dir, earlier))
            elif runs.count % 5 == 0:
                kill_when(proc, validation_under_way(log))
            else:
                kill_after(proc, rng.uniform(0.0, window))
            if proc.exitcode == 0:  # it got to the end before the kill
                break
            assert proc.exitcode == -signal.SIGKILL, log.read_text()
            assert group_ended(proc.pid), f"run {runs.count}: its DataLoader worker outlived it"
            kills[where_killed(exp_dir, log, earlier)] += 1
            assert runs.count < 200, f"no progress after {runs.count} runs: {dict(kills)}"
        weights = final_weights(exp_dir)
        assert weights.keys() == ref_weights.keys()
        differing = [name for name in weights if not torch.equal(weights[name], ref_weights[name])]
        assert not differing, f"chain {chains} ({dict(kills)}): {len(differing)} tensors differ, e.g. {differing[:3]}"
        assert log_records(exp_dir) == ref_log, f"chain {chains}: train_log.jsonl differs ({dict(kills)})"
    summary = f"{sum(kills.values())} kills in {chains} chains: {dict(kills)}"
    logger.info("%s; uninterrupted run %.2f s, set-up %.2f s, %.3f s a step", summary, duration, setup_time, per_step)
    assert sum(kills.values()) >= MIN_KILLS, summary
    for where in ("set-up or first step", "step", "checkpoint write", "validation"):
        assert kills[where] >= 1, summary


def test_second_trainer_on_one_exp_dir_refuses_with_the_pid(setup: Path, tmp_path: Path) -> None:
    exp_dir = tmp_path / "exp"
    command = [sys.executable, "-m", "asrllm.bin.train", *cli_args(setup, exp_dir, "trainer.max_epochs=1000")]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        lock = exp_dir / ".lock"
        while not (lock.exists() and lock.read_text().startswith(f"{first.pid} ")):
            assert first.poll() is None, first.communicate()[1]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        second = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert second.returncode == 1
        assert f"{exp_dir} is in use by PID {first.pid} training" in second.stderr, second.stderr
        assert first.poll() is None  # the first one trains on, undisturbed
    finally:
        first.kill()
        first.wait()


def test_a_forked_child_does_not_keep_the_lock(tmp_path: Path) -> None:
    # a trainer's DataLoader worker outlives a SIGKILLed trainer by seconds; it must not hold the lock
    script = textwrap.dedent(f"""
        import os, signal, time
        from asrllm.locking import DirLock
        r, w = os.pipe()
        trainer = os.fork()
        if trainer == 0:
            lock = DirLock({str(tmp_path)!r}, "training").acquire()
            me = os.getpid()
            worker = os.fork()
            if worker == 0:  # lingers 3 s after its parent is gone, as a DataLoader worker does
                os.write(w, str(os.getpid()).encode())  # fork() has returned here: the at-fork hooks ran
                while os.getppid() == me:
                    time.sleep(0.01)
                time.sleep(3)
                os._exit(0)
            time.sleep(60)
        worker = int(os.read(r, 20))
        os.kill(trainer, signal.SIGKILL)
        os.waitpid(trainer, 0)
        DirLock({str(tmp_path)!r}, "training").acquire()
        os.kill(worker, 0)  # raises if the worker is gone already
        print("acquired while the worker lives")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "acquired while the worker lives", result.stderr
