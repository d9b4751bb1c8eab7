"""The strict YAML -> dataclass loader: unknown keys, wrong types and overrides name what is wrong."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import pytest

from asrllm.config import ConfigError, atomic_write_text, from_dict, load_config, parse_overrides, save_config


@dataclasses.dataclass(frozen=True)
class Inner:
    size: int = 4  # a count
    rate: float = 0.5  # a fraction
    kind: Literal["a", "b"] = "a"  # a choice


@dataclasses.dataclass(frozen=True)
class Outer:
    name: str  # required
    inner: Inner = dataclasses.field(default_factory=Inner)
    layers: tuple[int, ...] = ()
    weights: dict[str, float] = dataclasses.field(default_factory=dict)
    limit: float | None = None


def test_nested_values_are_converted() -> None:
    cfg = from_dict(Outer, {"name": "x", "inner": {"size": 2, "rate": 1}, "layers": [4, 10], "weights": {"lm": 1}})
    assert cfg == Outer("x", Inner(2, 1.0), (4, 10), {"lm": 1.0})
    assert isinstance(cfg.inner.rate, float)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "x", "inner": {"sise": 2}}, "Outer.inner: unknown key 'sise'"),
        ({"name": "x", "inner": {"size": "two"}}, "Outer.inner.size: expected int, got 'two'"),
        ({"name": "x", "inner": {"size": True}}, "Outer.inner.size: expected int, got True"),
        ({"name": "x", "inner": {"kind": "c"}}, "Outer.inner.kind: 'c' is not one of ['a', 'b']"),
        ({"name": "x", "layers": 3}, "Outer.layers: expected a list"),
        ({"name": "x", "inner": {"rate": "fast"}}, "Outer.inner.rate: expected float, got 'fast'"),
        ({}, "Outer: "),
    ],
)
def test_errors_name_the_key(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        from_dict(Outer, data)
    assert message in str(e.value)


def test_yaml_scientific_notation_without_dot_is_a_float() -> None:
    # YAML 1.1 (PyYAML) reads `1e-3` as a string; a float field still accepts it.
    assert from_dict(Inner, {"rate": "1e-3"}).rate == 1e-3


def test_load_config_applies_overrides_and_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("name: base\ninner:\n  size: 3\n")
    cfg = load_config(Outer, path, parse_overrides(["inner.rate=1e-3", "limit=null", "layers=[1, 2]"]))
    assert cfg == Outer("base", Inner(3, 1e-3), (1, 2), {}, None)
    path.write_text("name: base\nbogus: 1\n")
    with pytest.raises(ConfigError, match=f"{path}: Outer: unknown key 'bogus'"):
        load_config(Outer, path)
    with pytest.raises(ConfigError, match="not of the form"):
        parse_overrides(["inner.rate"])


def test_save_config_round_trips(tmp_path: Path) -> None:
    cfg = Outer("x", Inner(2, 0.25, "b"), (4, 10), {"lm": 0.5}, 3.0)
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(Outer, tmp_path / "config.yaml") == cfg


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.txt"
    atomic_write_text(target, "old\n")
    atomic_write_text(target, "new\n")
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.txt"]
