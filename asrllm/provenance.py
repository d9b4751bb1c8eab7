"""What a stage output was made from, and the one re-run rule every stage follows.

Every stage output (a tokenizer dir, a trained model, averaged weights, a decode part, a perplexity
dir, ...) is written together with a *record*: a JSON file holding the stage's inputs as a flat
mapping `name -> value`, where a value is a config value (configs are flattened to dotted keys, so
a difference names the key: `search.beam`) or the content digest of an input file or directory
(`model.weights: sha256:…`). On a re-run the stage computes its inputs again and asks `decide`:

    no record            -> make the output (first run, or a run that crashed before finishing)
    same inputs          -> skip: the output is up to date
    different inputs     -> with force: make it again (the caller removes the old output first);
                            without: `StaleOutputError` naming the record and every differing key

The record is written LAST (atomically), after the output it describes, so its presence means
"complete" and a crash mid-stage leaves no record and is redone (or resumed) on the next run.

What is hashed: files and directories by content (sha256 over the sorted relative paths and
bytes). Data dirs are hashed through their manifest files (`wav.scp`, `text`, `utt2spk`,
`utt2dur`), not the audio they point to: hashing a 960 h corpus on every stage would cost minutes,
and audio files are replaced by data preparation, which changes the manifests' durations too.

>>> inputs = {"search.beam": 8, "data": "sha256:ab"}
>>> differing_keys({"search.beam": 4, "data": "sha256:ab"}, inputs)
['search.beam']
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from asrllm.config import atomic_write_text, to_dict

logger = logging.getLogger(__name__)

DATADIR_MANIFESTS = ("wav.scp", "text", "utt2spk", "utt2dur")
RECORD_FILE = "inputs.json"  # the record's name where the output is a whole directory
_CHUNK = 1 << 20


class StaleOutputError(RuntimeError):
    """An output exists but was made from other inputs; the message names the record and the keys."""


def file_digest(path: str | Path) -> str:
    """`sha256:<hex>` of a file's bytes, or of a directory tree (relative paths and file bytes, sorted).

    Symlinks are followed; a missing path is a FileNotFoundError naming it.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: does not exist")
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if f is not path:
            h.update(f.relative_to(path).as_posix().encode() + b"\0")
        with open(f, "rb") as stream:
            while chunk := stream.read(_CHUNK):
                h.update(chunk)
        h.update(b"\0")
    return f"sha256:{h.hexdigest()}"


def datadir_digest(data_dir: str | Path) -> str:
    """Digest of a Kaldi data dir's manifest files (see the module docstring), or of a plain text file."""
    data_dir = Path(data_dir)
    if data_dir.is_file():
        return file_digest(data_dir)
    h = hashlib.sha256()
    for name in DATADIR_MANIFESTS:
        f = data_dir / name
        h.update(name.encode() + b"\0" + (file_digest(f).encode() if f.is_file() else b"-") + b"\0")
    if not any((data_dir / name).is_file() for name in DATADIR_MANIFESTS):
        raise FileNotFoundError(f"{data_dir}: not a data dir (none of {', '.join(DATADIR_MANIFESTS)})")
    return f"sha256:{h.hexdigest()}"


def corpus_digest(root: str | Path) -> str:
    """Digest of a raw corpus tree, cheap enough for thousands of hours: every file's relative path
    and size, and the bytes of its text files (`*.txt`: transcripts). Audio is not read (data
    preparation decodes it anyway); an audio file rewritten to the same size goes unnoticed."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such directory")
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(root).as_posix()}\0{f.stat().st_size}\0".encode())
        if f.suffix == ".txt":
            h.update(f.read_bytes())
    return f"sha256:{h.hexdigest()}"


def flatten(obj: Any, prefix: str) -> dict[str, Any]:
    """A config (dataclass or nested mapping) as dotted keys under `prefix`; lists stay values.

    >>> flatten({"a": 1, "b": {"c": [1, 2]}}, "cfg")
    {'cfg.a': 1, 'cfg.b.c': [1, 2]}
    """
    obj = to_dict(obj)
    if not isinstance(obj, dict):
        return {prefix: obj}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    if not obj:
        out[prefix] = {}
    return out


def without_defaults(inputs: dict[str, Any], added_later: dict[str, Any]) -> dict[str, Any]:
    """`inputs` without the keys of options added after records had been written, where they hold
    the default that keeps the old behaviour (`added_later`: key -> that default), so that those
    records stay up to date; set to anything else, the option is recorded.

    >>> without_defaults({"search.beam": 4, "search.free_eos": False}, {"search.free_eos": False})
    {'search.beam': 4}
    """
    return {k: v for k, v in inputs.items() if k not in added_later or _normalise(v) != _normalise(added_later[k])}


def differing_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Sorted keys whose values differ (or that only one side has)."""
    return sorted(k for k in set(old) | set(new) if old.get(k, _ABSENT) != new.get(k, _ABSENT))


_ABSENT = object()


def read_record(path: str | Path) -> dict[str, Any] | None:
    """The inputs stored in record `path`, or None when there is none."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))["inputs"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise StaleOutputError(f"{path}: unreadable stage record ({e}); delete it to redo that output") from None


def _normalise(inputs: Any) -> Any:
    # what JSON gives back (tuples become lists), so that a fresh record compares equal to a stored one
    return json.loads(json.dumps(inputs, sort_keys=True))


def describe_difference(old: dict[str, Any], new: dict[str, Any], limit: int = 6) -> str:
    """`search.beam (8 -> 16), model.weights` — values shown where they are short."""
    parts = []
    for key in differing_keys(old, new)[:limit]:
        a, b = old.get(key, "(absent)"), new.get(key, "(absent)")
        short = all(len(json.dumps(v)) <= 40 for v in (a, b)) and not str(a).startswith("sha256:")
        parts.append(f"{key} ({json.dumps(a)} -> {json.dumps(b)})" if short else key)
    rest = len(differing_keys(old, new)) - limit
    return ", ".join(parts) + (f" and {rest} more" if rest > 0 else "")


def decide(record: str | Path, inputs: dict[str, Any], force: bool, what: str) -> bool:
    """True when the output of `record` must be (re)made, False when it is up to date.

    Raises `StaleOutputError` when the record holds other inputs and `force` is false; `what`
    names the output in that message (e.g. "decode part 0-of-2 of exp/am/decode_dev_beam8").
    """
    old = read_record(record)
    if old is None:
        return True
    new = _normalise(inputs)
    if old == new:
        return False
    diff = describe_difference(old, new)
    if not force:
        raise StaleOutputError(
            f"{what} was made from different inputs (differs in: {diff}; record {record}); "
            "re-run with --force true to redo it, or use another output dir"
        )
    logger.warning("%s was made from different inputs (differs in: %s): redoing it (--force)", what, diff)
    return True


def write_record(record: str | Path, inputs: dict[str, Any], **extra: Any) -> None:
    """Store `inputs` (and informative `extra` fields, not compared) as the record of a finished output."""
    atomic_write_text(record, json.dumps({"inputs": _normalise(inputs), **extra}, indent=2, sort_keys=True) + "\n")
