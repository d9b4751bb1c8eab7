"""The strict YAML -> dataclass loader: unknown keys, wrong types and overrides name what is wrong."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import pytest

from asrllm.config import (
    ConfigError,
    apply_overrides,
    atomic_write_text,
    from_dict,
    keyed,
    load_config,
    parse_overrides,
    save_config,
)


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


@dataclasses.dataclass(frozen=True)
class Checked:
    low: int = 0  # lower bound
    high: int = 1  # upper bound

    def __post_init__(self) -> None:
        if self.low > self.high:
            raise ValueError(f"Checked: low={self.low} must not exceed high={self.high}")
        if self.high > 100:
            raise ValueError(f"Checked.high={self.high} must be <= 100")
        if self.low < 0:
            raise ValueError(f"low={self.low} must be >= 0")


@dataclasses.dataclass(frozen=True)
class Holder:
    ranges: dict[str, Checked] = dataclasses.field(default_factory=dict)  # name -> range


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"low": 3, "high": 2}, "Holder.ranges.r1: low=3 must not exceed high=2"),  # `Class:` -> key path
        ({"high": 101}, "Holder.ranges.r1.high=101 must be <= 100"),  # `Class.field` -> key path
        ({"low": -1}, "Holder.ranges.r1: low=-1 must be >= 0"),  # no class named: key path prepended
    ],
)
def test_post_init_errors_get_the_key_path_and_the_file(tmp_path: Path, entry: dict, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        from_dict(Holder, {"ranges": {"r0": {}, "r1": entry}})
    assert str(e.value) == message
    path = tmp_path / "h.yaml"
    path.write_text(f"ranges: {{r1: {entry}}}\n".replace("'", ""))
    with pytest.raises(ConfigError) as e:
        load_config(Holder, path)
    assert str(e.value) == f"{path}: {message}"


def test_keyed_names_the_key_of_an_error_found_while_using_a_config() -> None:
    tree = Outer("x", Inner())
    assert keyed(ValueError("Inner.size=4 is too big for the model"), tree, "model") == (
        "model.inner.size=4 is too big for the model"
    )
    assert keyed(ValueError("out of memory"), tree, "model") == "model: out of memory"


def test_override_into_a_scalar_or_list_names_override_key_and_value() -> None:
    data = {"trainer": {"max_epochs": 3, "layers": [1, 2]}}
    with pytest.raises(ConfigError) as e:
        apply_overrides(data, {"trainer.max_epochs.x": 1}, "exp.yaml")
    assert str(e.value) == "exp.yaml: override trainer.max_epochs.x=1: trainer.max_epochs is 3 (int), not a mapping"
    with pytest.raises(ConfigError) as e:
        apply_overrides(data, {"trainer.layers.a.b": "s"}, "exp.yaml")
    assert str(e.value) == "exp.yaml: override trainer.layers.a.b='s': trainer.layers is [1, 2] (list), not a mapping"


def test_load_config_override_into_a_scalar_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("name: base\ninner:\n  size: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(Outer, path, parse_overrides(["inner.size.x=1"]))
    assert str(e.value) == f"{path}: override inner.size.x=1: inner.size is 3 (int), not a mapping"


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("x=[16,", "override 'x=[16,': value '[16,' is not YAML: "
                   "expected the node content, but found '<stream end>' (column 5)"),
        ("x={a: 1", "override 'x={a: 1': value '{a: 1' is not YAML: "
                    "expected ',' or '}', but got '<stream end>' (column 6)"),
    ],
)
def test_override_value_that_is_not_yaml_is_one_line(item: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_overrides([item])
    assert str(e.value) == message
    assert parse_overrides(["x=[16, 16]"]) == {"x": [16, 16]}  # one shell word with a space: a list
