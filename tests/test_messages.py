"""Issue 7 §5: each bad input is ONE line naming file, key and value; outputs get umask permissions.

The messages are asserted whole, through the CLIs a user runs (decode, train), so that a change
in any layer (loader, CLI, model build) that drops the file, the key or the value shows here.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from asrllm.bin import decode, train
from asrllm.config import atomic_write_text, make_temp_dir, plain_mode, umask
from asrllm.train.checkpoint import save_checkpoint


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_unknown_search_method_names_file_key_value_and_known(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = tmp_path / "decode.yaml"
    config.write_text("methods:\n  greedy: {method: ctc_greedyy, beam: 1, nbest: 1}\n")
    with caplog.at_level(logging.ERROR):
        assert decode.main(["--config", str(config), "--model-dir", str(tmp_path), "--data", str(tmp_path)]) == 1
    assert _errors(caplog) == [
        f"{config}: DecodeConfig.methods.greedy.method: 'ctc_greedyy' is not one of ['ctc_greedy', 'ctc_time_sync', 'label_sync']"
    ]


def test_search_validation_error_names_file_and_method_entry(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = tmp_path / "decode.yaml"
    config.write_text("methods:\n  beam8: {beam: 8, nbest: 9}\n")
    with caplog.at_level(logging.ERROR):
        assert decode.main(["--config", str(config), "--model-dir", str(tmp_path), "--data", str(tmp_path)]) == 1
    assert _errors(caplog) == [f"{config}: DecodeConfig.methods.beam8: nbest=9 must not exceed beam=8"]


@pytest.fixture
def lm_yaml(tmp_path: Path) -> Path:
    (tmp_path / "lm.txt").write_text("hello world\nfoo bar\n")
    config = tmp_path / "lm.yaml"
    config.write_text(
        f"model_kind: lm\nmodel:\n  llm: {{source: {tmp_path}/no_such_llm}}\n"
        "trainer: {max_epochs: 1, progress_bar: false, tensorboard: false, plot: false}\n"
    )
    return config


def _train(config: Path, *overrides: str) -> int:
    root = config.parent
    return train.main(["--config", str(config), "--train-data", str(root / "lm.txt"), "--exp-dir", str(root / "exp"),
                       *overrides])


def test_missing_llm_dir_names_yaml_key_and_path(lm_yaml: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        assert _train(lm_yaml) == 1
    missing = lm_yaml.parent / "no_such_llm"
    assert _errors(caplog) == [
        f"{lm_yaml}: model.llm.source='{missing}': no such directory (a local HF model dir or a "
        "CausalLM.save dir; set allow_online to download a hub id)"
    ]


def test_override_into_a_scalar_names_override_key_and_value(lm_yaml: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        assert _train(lm_yaml, "trainer.max_epochs.x=1") == 1
    assert _errors(caplog) == [
        f"{lm_yaml}: override trainer.max_epochs.x=1: trainer.max_epochs is 1 (int), not a mapping"
    ]


def test_override_that_is_not_yaml_names_override_and_problem(lm_yaml: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        assert _train(lm_yaml, "x=[16,") == 1
    assert _errors(caplog) == [
        "override 'x=[16,': value '[16,' is not YAML: expected the node content, but found '<stream end>' (column 5)"
    ]


# -- permissions: what a plain write gives, under the umask ---------------------------------------


@pytest.fixture(params=[0o022, 0o027])
def mask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_umask_is_read_without_changing_it(mask: int) -> None:
    assert umask() == mask and umask() == mask
    assert plain_mode() == 0o666 & ~mask and plain_mode(directory=True) == 0o777 & ~mask


def test_atomic_write_and_temp_dirs_get_umask_permissions(tmp_path: Path, mask: int) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("x\n")
    (tmp_path / "plain_dir").mkdir()
    atomic_write_text(tmp_path / "atomic.txt", "x\n")
    assert _mode(tmp_path / "atomic.txt") == _mode(plain) == 0o666 & ~mask
    assert _mode(make_temp_dir(tmp_path, ".tmp-")) == _mode(tmp_path / "plain_dir") == 0o777 & ~mask


def test_checkpoint_dirs_and_files_get_umask_permissions(tmp_path: Path, mask: int) -> None:
    ckpt = save_checkpoint(tmp_path / "checkpoints", 3, {"w": torch.zeros(2)}, {"step": 3})
    assert _mode(ckpt) == 0o777 & ~mask
    assert {p.name: _mode(p) for p in ckpt.iterdir()} == dict.fromkeys(
        ["model.safetensors", "trainer_state.pt", "DONE"], 0o666 & ~mask
    )


def test_saved_llm_dir_gets_umask_permissions(tmp_path: Path, mask: int) -> None:
    """HF `save_pretrained` writes safetensors 0600 into a mkdtemp dir (0700); `CausalLM.save` fixes both."""
    from asrllm.data.tokenizer import CharTokenizer
    from asrllm.models.llm import LLMConfig, build_llm

    arch = dict(model_type="llama", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                num_attention_heads=2, num_key_value_heads=1)
    build_llm(LLMConfig(arch=arch), label_tokenizer=CharTokenizer(list("ab"))).save(tmp_path / "lm")
    modes = {str(p.relative_to(tmp_path)): _mode(p) for p in [tmp_path / "lm", *(tmp_path / "lm").rglob("*")]}
    assert "lm/model/model.safetensors" in modes
    assert modes == {name: 0o777 & ~mask if (tmp_path / name).is_dir() else 0o666 & ~mask for name in modes}
