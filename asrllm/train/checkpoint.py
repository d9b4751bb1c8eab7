"""Checkpoints: atomic save, listing, resume lookup, pruning, averaging, RNG state.

Layout of `exp_dir/checkpoints/`:

    step_00001200/           one checkpoint = the state after optimizer step 1200
        model.safetensors    the unwrapped model's state_dict (tied tensors stored once, see below),
                             less the weights it rebuilds from its config (`checkpoint_state_dict`)
        trainer_state.pt     optimizer, scheduler, step, epoch, batches done in that epoch,
                             best and current valid loss, RNG states of every rank;
                             plain tensors/numbers only: torch.load(weights_only=True) reads it
        DONE                 written last: a directory without it is never used
    epoch_3 -> step_00001200 relative symlink to the checkpoint that ended epoch 3
    latest -> step_00001200  relative symlink to the newest checkpoint, for people and scripts

A checkpoint is written into a hidden temp directory (with the umask's permissions, as a plain
`mkdir` gives, not mkdtemp's 0700) and renamed into place, so a crash leaves
either the old set of checkpoints or the new one, never half a checkpoint; resume scans for the
newest complete `step_*` directory (the scan, not the `latest` link, is authoritative). Epoch
checkpoints are symlinks rather than copies: no extra disk, and pruning keeps every step directory
that an epoch link points to.

safetensors refuses tensors that share memory (tied input/output embeddings): each group of
identical views is stored once under its first name and the other names are recorded in the
file's metadata (`aliases`, JSON {alias: stored name}), which `load_model_state` expands again.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from asrllm.config import apply_umask, make_temp_dir

MODEL_FILE = "model.safetensors"
STATE_FILE = "trainer_state.pt"
DONE_FILE = "DONE"
_STEP_DIR = re.compile(r"^step_(\d{8,})$")
_EPOCH_LINK = re.compile(r"^epoch_(\d+)$")


def step_dir_name(step: int) -> str:
    """`step_00001200` for step 1200."""
    return f"step_{step:08d}"


# ---- model weights -----------------------------------------------------------------------------


def save_model_state(state_dict: dict[str, torch.Tensor], path: str | Path) -> None:
    """Write a state_dict to a safetensors file, storing tied tensors once (not atomic by itself)."""
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    views: dict[tuple[Any, ...], str] = {}  # identical view -> first name
    storages: set[int] = set()
    for name, tensor in state_dict.items():
        assert isinstance(tensor, torch.Tensor), (name, type(tensor))
        tensor = tensor.detach().cpu()
        view = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tensor.shape, tensor.stride(), tensor.dtype)
        if view in views:
            aliases[name] = views[view]
            continue
        views[view] = name
        ptr = tensor.untyped_storage().data_ptr()
        # different views of one storage (rare: a slice of another parameter) are stored as copies
        tensors[name] = tensor.clone().contiguous() if ptr in storages else tensor.contiguous()
        storages.add(ptr)
    save_file(tensors, str(path), metadata={"format": "pt", "aliases": json.dumps(aliases)})
    apply_umask(path)  # safetensors writes 0600


def _read_model_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as f:
        aliases = json.loads((f.metadata() or {}).get("aliases", "{}"))
        return {name: f.get_tensor(name) for name in f.keys()}, aliases


def _expand(tensors: dict[str, torch.Tensor], aliases: dict[str, str]) -> dict[str, torch.Tensor]:
    return {**tensors, **{alias: tensors[name] for alias, name in aliases.items()}}


def load_model_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a file written by `save_model_state` (or a checkpoint directory) into a state_dict on CPU."""
    return _expand(*_read_model_file(_model_file(path)))


def checkpoint_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """What a checkpoint stores of `model`: its state_dict without the weights it rebuilds from its config.

    A model names such weights (state_dict keys) in an optional `rebuilt_from_config()` method,
    e.g. `LMModel`: the frozen weights of a pre-trained LLM under LoRA, which `llm.source` /
    `llm.gguf` reload as they were. A LoRA checkpoint of SmolLM2-135M is then its 4.9M trainable
    parameters (20 MB) instead of the whole model (570 MB).
    """
    rebuilt = _rebuilt_from_config(model)
    return {name: t for name, t in model.state_dict().items() if name not in rebuilt}


def load_checkpoint_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load what `checkpoint_state_dict` stored; every other weight must be one the model rebuilds.

    source: the file or checkpoint the state came from (named in the error).
    """
    missing, unexpected = model.load_state_dict(state, strict=False)
    absent = sorted(set(missing) - _rebuilt_from_config(model))
    if absent or unexpected:
        raise ValueError(f"{source}: checkpoint does not fit the model of the config: "
                         f"{len(absent)} weights missing {absent[:3]}, {len(unexpected)} unexpected {unexpected[:3]}")


def init_from_model(
    model: nn.Module, path: str | Path, exclude: list[str], include: list[str] | None = None
) -> tuple[int, int]:
    """Copy the weights of the trained model file `path` into `model`: those whose names match a glob
    of `include` (default: all) and none of `exclude`; -> (copied, excluded) counts. Every such
    weight must be in the file with the same shape, and every such weight of the file must be used,
    else a ValueError naming the first ones and what to exclude."""
    import fnmatch

    def matches(name: str, patterns: list[str]) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)

    state = load_model_state(path)
    own = model.state_dict()
    skip = {n for n in {*own, *state} if matches(n, exclude) or not matches(n, include or ["*"])}
    missing = sorted(set(own) - set(state) - skip - _rebuilt_from_config(model))
    unused = sorted(set(state) - set(own) - skip)
    shapes = sorted(n for n in set(own) & set(state) - skip if own[n].shape != state[n].shape)
    if missing or unused or shapes:
        detail = "; ".join(part for part in (
            f"{len(missing)} weights not in it {missing[:3]}" if missing else "",
            f"{len(unused)} of its weights unused {unused[:3]}" if unused else "",
            "other shapes: " + ", ".join(f"{n} {tuple(state[n].shape)} vs {tuple(own[n].shape)}" for n in shapes[:3])
            if shapes else "",
        ) if part)
        raise ValueError(f"init.from_model {path}: does not fit the model ({detail}); exclude such weights with "
                         "init.exclude (glob patterns of weight names, e.g. 'heads.*')")
    taken = {n: state[n] for n in own if n not in skip and n in state}
    model.load_state_dict(taken, strict=False)
    return len(taken), len(skip & set(own))  # "excluded": the model's weights left as they were


def _rebuilt_from_config(model: nn.Module) -> set[str]:
    rebuilt = getattr(model, "rebuilt_from_config", None)
    return set(rebuilt()) if rebuilt is not None else set()


def _model_file(path: str | Path) -> Path:
    path = Path(path)
    return path / MODEL_FILE if path.is_dir() else path


def average_checkpoints(paths: Sequence[str | Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean of the floating-point tensors of several checkpoints (directories or
    safetensors files); integer and bool tensors (e.g. step counters) are taken from the last one.

    Sums are accumulated in at least float32, so bf16 weights lose nothing to the sum.
    """
    assert paths, "no checkpoints to average"
    last, aliases = _read_model_file(_model_file(paths[-1]))
    total = {k: v.to(torch.promote_types(v.dtype, torch.float32), copy=True) for k, v in last.items() if v.is_floating_point()}
    for path in paths[:-1]:
        tensors, other_aliases = _read_model_file(_model_file(path))
        if tensors.keys() != last.keys() or other_aliases != aliases:
            raise ValueError(f"{path}: its tensor names differ from those of {paths[-1]}")
        for name in total:
            total[name] += tensors[name]
    averaged = {k: (total[k] / len(paths)).to(v.dtype) if k in total else v for k, v in last.items()}
    return _expand(averaged, aliases)


# ---- RNG ---------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed python's `random`, numpy's global RNG and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's RNG states as plain lists/numbers/tensors (weights_only-loadable)."""
    version, internal, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # type: ignore[misc]
    return {
        "python": [version, list(internal), gauss_next],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore what `rng_state` returned."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


# ---- checkpoint directories --------------------------------------------------------------------


def save_checkpoint(root: str | Path, step: int, model_state: dict[str, torch.Tensor], trainer_state: dict[str, Any]) -> Path:
    """Write `root/step_<step:08d>/` atomically (replacing one of the same step) and point `latest` at it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-step_*"):  # left by a crash during an earlier save
        shutil.rmtree(stale, ignore_errors=True)
    final = root / step_dir_name(step)
    tmp = make_temp_dir(root, f".tmp-{final.name}-")  # umask permissions, as a plain mkdir
    save_model_state(model_state, tmp / MODEL_FILE)
    with open(tmp / STATE_FILE, "wb") as f:
        torch.save(trainer_state, f)
    (tmp / DONE_FILE).write_text(f"{step}\n")
    for name in (MODEL_FILE, STATE_FILE, DONE_FILE, "."):
        _fsync(tmp / name)
    if final.exists():  # same step saved again (e.g. with the epoch-end valid loss): move the old one aside first
        os.replace(final, tmp.with_name(f"{tmp.name}-old"))
    os.replace(tmp, final)
    _fsync(root)
    shutil.rmtree(tmp.with_name(f"{tmp.name}-old"), ignore_errors=True)
    _symlink(root / "latest", final.name)
    return final


def link_epoch(root: str | Path, epoch: int, checkpoint: Path) -> None:
    """Make `root/epoch_<epoch>` point at `checkpoint` (a directory inside `root`)."""
    _symlink(Path(root) / f"epoch_{epoch}", checkpoint.name)


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete `step_*` checkpoint directories under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP_DIR.match(p.name) and not p.is_symlink() and (p / DONE_FILE).is_file()]
    return sorted(found, key=checkpoint_step)


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint under `root`, or None."""
    found = list_checkpoints(root)
    return found[-1] if found else None


def checkpoint_step(path: Path) -> int:
    """The step of a `step_*` directory (symlinks are resolved)."""
    match = _STEP_DIR.match(path.resolve().name)
    assert match, path
    return int(match.group(1))


def epoch_links(root: str | Path) -> dict[int, Path]:
    """{epoch: link} for the `epoch_*` symlinks under `root`."""
    root = Path(root)
    links = {int(m.group(1)): p for p in root.glob("epoch_*") if (m := _EPOCH_LINK.match(p.name)) and p.is_symlink()}
    return dict(sorted(links.items()))


def prune_checkpoints(root: str | Path, keep_last: int, keep_epochs: int | None) -> None:
    """Delete all but the newest `keep_epochs` epoch links (None: keep all), then every step
    checkpoint that is neither among the newest `keep_last` nor the target of an epoch link."""
    links = epoch_links(root)
    if keep_epochs is not None:
        for epoch in list(links)[:-keep_epochs]:
            links.pop(epoch).unlink()
    keep = {p.resolve() for p in links.values()}
    steps = list_checkpoints(root)
    keep.update(p.resolve() for p in steps[-keep_last:])
    for path in steps:
        if path.resolve() not in keep:
            shutil.rmtree(path)


def best_checkpoints(root: str | Path, n: int) -> list[Path]:
    """Up to `n` complete checkpoints with the lowest validation loss recorded at their own step,
    best first (ties: the newer one first)."""
    scored = []
    for path in list_checkpoints(root):
        loss = load_trainer_state(path, mmap=True)["valid_loss"]
        if loss is not None:
            scored.append((loss, -checkpoint_step(path), path))
    return [path for _, _, path in sorted(scored)[:n]]


def load_trainer_state(checkpoint: str | Path, mmap: bool = False) -> dict[str, Any]:
    """`trainer_state.pt` of a checkpoint directory, on CPU; `mmap=True` reads only what is touched."""
    return torch.load(Path(checkpoint) / STATE_FILE, map_location="cpu", weights_only=True, mmap=mmap)


def _symlink(link: Path, target: str) -> None:
    """Create or atomically retarget a relative symlink."""
    tmp = link.with_name(f".tmp-link-{link.name}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
