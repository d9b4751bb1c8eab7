"""YAML <-> typed, frozen dataclasses.

Every experiment is a YAML file that maps onto a tree of dataclasses. Loading is strict: an unknown
or misspelled key is an error that names the key and its path, a value of the wrong type is an
error that names the field. Defaults live once, in the dataclasses, never in shell scripts.

Every error of loading is ONE line that names the file, the key path and the value, so that no
config class or CLI has to add them itself:
- `from_dict` names the key path, also for a `ValueError` that a dataclass's `__post_init__`
  raises: such messages name the field as `Class.field=...` or start `Class: ...`, and the class
  name is replaced by the key path where that object sits (`SearchConfig: beam=0 ...` at
  `methods.greedy` becomes `DecodeConfig.methods.greedy: beam=0 ...`). Errors found later, while
  a config is used (a missing LLM dir), are named the same way by `keyed` from the loaded tree.
- `load_config` and the CLIs prepend the file; overrides (`parse_overrides`, `apply_overrides`)
  name the override as written.

Outputs written through a temp file or dir (`atomic_write_text`, `make_temp_dir`) or by
safetensors (`apply_umask`) get the permissions a plain `open()` / `mkdir()` would give (0666 /
0777 less the umask), not the 0600 / 0700 of `tempfile`: results are meant to be shared as any
other file the user writes. The umask is read per call (`umask`), as a test or a launcher may
change it after import.

>>> @dataclasses.dataclass(frozen=True)
... class Opt:
...     beam: int = 4  # hypotheses kept per utterance
>>> from_dict(Opt, {"beam": 8})
Opt(beam=8)
>>> try:
...     from_dict(Opt, {"bean": 8})
... except ConfigError as e:
...     print(e)
Opt: unknown key 'bean' (known: beam)
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value or key is wrong; the message names it."""


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass `cls` from a plain dict, recursively, rejecting unknown keys."""
    where = where or cls.__name__
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}: {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(fields))})")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _convert(hints[name], value, f"{where}.{name}") for name, value in data.items()}
    try:
        obj = cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise ConfigError(f"{where}: {e}") from None
    except ValueError as e:  # __post_init__ validation (ConfigError included): name the key path
        raise ConfigError(_at_key(str(e), cls.__name__, where)) from None
    return obj


def _at_key(message: str, cls_name: str, where: str) -> str:
    """`message` about an object of class `cls_name` that sits at key path `where`.

    >>> _at_key("LLMConfig.source='x' is missing", "LLMConfig", "model.llm")
    "model.llm.source='x' is missing"
    >>> _at_key("SearchConfig: beam=0 must be >= 1", "SearchConfig", "DecodeConfig.methods.g")
    'DecodeConfig.methods.g: beam=0 must be >= 1'
    >>> _at_key("beam=0 must be >= 1", "SearchConfig", "methods.g")
    'methods.g: beam=0 must be >= 1'
    """
    if message.startswith(f"{cls_name}.") or message.startswith(f"{cls_name}: "):
        return where + message[len(cls_name):]
    if message.startswith(f"{where}:") or message.startswith(f"{where}."):  # named already (nested from_dict)
        return message
    return f"{where}: {message}"


def keyed(error: Exception, root: Any, where: str) -> str:
    """The message of `error`, raised while using config tree `root` (at key path `where`), with
    its `Class.field` / `Class:` prefix replaced by the key path of the one object of that class
    in the tree (as `from_dict` does for validation errors); unchanged prefix + `where` otherwise.
    """
    message = str(error)
    name = message.split(".", 1)[0].split(":", 1)[0]
    paths = [path for path, obj in _walk(root, where) if type(obj).__name__ == name]
    if len(paths) == 1:
        return _at_key(message, name, paths[0])
    return f"{where}: {message}"


def _walk(obj: Any, where: str) -> typing.Iterator[tuple[str, Any]]:
    """(key path, dataclass object) of every dataclass in the tree `obj`, depth first."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        yield where, obj
        for f in dataclasses.fields(obj):
            yield from _walk(getattr(obj, f.name), f"{where}.{f.name}")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk(v, f"{where}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{where}[{i}]")


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {tp}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)  # type: ignore[arg-type]
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {value!r}")
            return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        items = [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {_convert(kt, k, where): _convert(vt, v, f"{where}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads `1e-3` (no dot) as a string
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected float, got {value!r}") from None
    if tp in (int, float, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported field type {tp}")


def to_dict(obj: Any) -> Any:
    """Dataclass tree -> plain dict/list/scalars (tuples become lists), ready for YAML."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with `yaml.safe_load`; errors name the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def load_config(cls: type[T], path: str | Path, overrides: dict[str, Any] | None = None) -> T:
    """Load YAML file `path` into dataclass `cls`; `overrides` (dotted keys) are applied first.

    Errors name the file as well as the key.
    """
    data = load_yaml(path)
    apply_overrides(data, overrides or {}, path)
    try:
        return from_dict(cls, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any], where: str | Path) -> None:
    """Set each dotted key of `overrides` in the YAML mapping `data` (in place; parents are made).

    `where` (the YAML file) starts every error.

    >>> data = {"trainer": {"max_epochs": 3}}
    >>> apply_overrides(data, {"trainer.max_epochs": 5, "optim.lr": 0.1}, "x.yaml")
    >>> data
    {'trainer': {'max_epochs': 5}, 'optim': {'lr': 0.1}}
    >>> try:
    ...     apply_overrides(data, {"trainer.max_epochs.x": 1}, "x.yaml")
    ... except ConfigError as e:
    ...     print(e)
    x.yaml: override trainer.max_epochs.x=1: trainer.max_epochs is 5 (int), not a mapping
    """
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for i, p in enumerate(parents):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                key = ".".join(parents[: i + 1])
                raise ConfigError(
                    f"{where}: override {dotted}={value!r}: {key} is {node!r} ({type(node).__name__}), not a mapping"
                )
        node[leaf] = value


_OVERRIDE_START = re.compile(r"\s+(?=[A-Za-z_][\w.-]*=)")  # whitespace before the next `key.path=`


def split_overrides(text: str) -> list[str]:
    """One string of overrides (a recipe's `--train-args "a=1 b=[16, 16]"`, passed to Python as ONE
    argument so that the shell neither splits nor globs it) -> one item per `key.path=value`.
    Whitespace splits only where a new `key=` follows, so values keep their inner spaces.

    >>> split_overrides(" trainer.max_epochs=2  data.seeds=[16, 16] name=a b")
    ['trainer.max_epochs=2', 'data.seeds=[16, 16]', 'name=a b']
    >>> split_overrides("  ")
    []
    """
    return [item for item in _OVERRIDE_START.split(text.strip()) if item]


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`["optim.lr=1e-3", "model.encoder.num_layers=4"]` -> dict; values are parsed as YAML.
    An item may hold several overrides (`split_overrides`).

    >>> parse_overrides(["data.seeds=[16, 16]", "a=1 b=x y"])
    {'data.seeds': [16, 16], 'a': 1, 'b': 'x y'}
    >>> try:
    ...     parse_overrides(["x=[16,"])
    ... except ConfigError as e:
    ...     print(e)
    override 'x=[16,': value '[16,' is not YAML: expected the node content, but found '<stream end>' (column 5)
    """
    out: dict[str, Any] = {}
    for item in (one for text in items for one in split_overrides(text)):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key.path=value")
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: value {value!r} is not YAML: {_yaml_problem(e)}") from None
    return out


def _yaml_problem(e: yaml.YAMLError) -> str:
    """One line for a YAML parse error: the problem and its column (PyYAML's own text spans lines)."""
    if isinstance(e, yaml.MarkedYAMLError) and e.problem:
        mark = e.problem_mark
        return f"{e.problem} (column {mark.column + 1})" if mark is not None else e.problem
    return " ".join(str(e).split())


def umask() -> int:
    """The process's umask, read when asked (it may change at run time).

    Linux reports it in /proc/self/status ("Umask:", since 4.7) without changing it; elsewhere
    it is read by setting and restoring it (`os.umask` has no read-only form), which is not
    thread-safe: a file made by another thread in between would get mode 0777 & ~0o077.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def plain_mode(directory: bool = False) -> int:
    """The mode a plain `open(path, "w")` (0666) or `mkdir` (0777) gives under the current umask.

    >>> old = os.umask(0o027)
    >>> oct(plain_mode()), oct(plain_mode(directory=True))
    ('0o640', '0o750')
    >>> _ = os.umask(old)
    """
    return (0o777 if directory else 0o666) & ~umask()


def apply_umask(path: str | Path) -> None:
    """Give `path`, and everything under it if it is a dir, the `plain_mode` permissions.

    For outputs made by code that does not honour the umask: `tempfile` (0600 / 0700) and
    safetensors' `save_file` (0600, also inside HF `save_pretrained`). Symlinks are left alone.
    """
    path = Path(path)
    if path.is_symlink():
        return
    if not path.is_dir():
        os.chmod(path, plain_mode())
        return
    os.chmod(path, plain_mode(directory=True))
    for sub, dirs, files in os.walk(path):
        for name in dirs + files:
            child = Path(sub, name)
            if not child.is_symlink():
                os.chmod(child, plain_mode(directory=name in dirs))


def make_temp_dir(parent: str | Path, prefix: str) -> Path:
    """`tempfile.mkdtemp` in `parent`, but with the permissions of a plain `mkdir` (not 0700):
    the dir is renamed into place as an output (a checkpoint, a converted model)."""
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    apply_umask(tmp)
    return tmp


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` so that readers see either the old or the whole new file.

    The file gets the permissions of a plain write (`plain_mode`), not mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, plain_mode())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_config(obj: Any, path: str | Path) -> None:
    """Write the fully resolved config next to what it produced."""
    atomic_write_text(path, yaml.safe_dump(to_dict(obj), sort_keys=False))
