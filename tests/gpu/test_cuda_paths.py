"""The recipe CLIs on a CUDA device: training (bf16 autocast) and decoding on the GPU, for a CTC AM and a speech LLM.

Runs only where CUDA is available (CI machines have none; run it on a GPU box with
`python -m pytest tests/gpu`). Trains with `device: auto, amp: auto` (the GPU, bf16 autocast),
decodes the checkpoint on the GPU and on the CPU, and asserts both give the same hypotheses.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from asrllm.bin import decode, train
from asrllm.testing.dummies import make_char_tokenizer, make_datadir

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")

CONFIG = """
model_kind: ctc
model:
  encoder: {num_layers: 2, d_model: 32, num_heads: 2, ff_dim: 64, conv_kernel: 3, dropout: 0.1}
data: {max_batch_seconds: 12.0, num_buckets: 2}
trainer: {max_epochs: 3, amp: auto, device: auto, log_every_steps: 1, progress_bar: false, plot: false}
optim: {lr: 1.0e-3, warmup_steps: 2}
"""
DECODE = """
device: {device}
methods:
  greedy: {{method: ctc_greedy, beam: 1}}
  beam4: {{method: ctc_time_sync, beam: 4, nbest: 2}}
"""


def test_train_and_decode_on_cuda_match_cpu(tmp_path: Path) -> None:
    make_datadir(tmp_path / "data/train", 16, seed=0, min_duration=1.0, max_duration=3.0)
    make_datadir(tmp_path / "data/test", 4, seed=1, min_duration=1.0, max_duration=3.0)
    make_char_tokenizer(tmp_path / "data/train", tmp_path / "token")
    (tmp_path / "train.yaml").write_text(CONFIG)
    exp = tmp_path / "exp"
    assert train.main(["--config", str(tmp_path / "train.yaml"), "--train-data", str(tmp_path / "data/train"),
                       "--tokenizer", str(tmp_path / "token"), "--exp-dir", str(exp)]) == 0

    hyps = {}
    for device in ("cuda", "cpu"):
        (tmp_path / f"decode_{device}.yaml").write_text(DECODE.format(device=device))
        model_dir = tmp_path / device
        model_dir.mkdir()
        for name in ("config.yaml", "tokenizer", "checkpoints"):
            (model_dir / name).symlink_to(exp / name)
        assert decode.main(["--config", str(tmp_path / f"decode_{device}.yaml"), "--model-dir", str(model_dir),
                            "--checkpoint", "latest", "--data", str(tmp_path / "data/test")]) == 0
        for method in ("greedy", "beam4"):
            part = model_dir / f"decode_test_{method}/parts/0-of-1"
            hyps[device, method] = Path(f"{part}.hyp.txt").read_text()
            assert json.loads(Path(f"{part}.info.json").read_text())["num_utts"] == 4
    for method in ("greedy", "beam4"):
        assert hyps["cuda", method] == hyps["cpu", method], method


SPEECH_LLM = """
model_kind: speech_llm
model:
  llm: {{arch: {{model_type: llama, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2,
                num_attention_heads: 2, num_key_value_heads: 1}}}}
  label_unit: am_tokenizer
  am_tokenizer: {token}
  interface: {interface}
  prompt: {{before: "", after: ""}}
  encoder: {{num_layers: 2, d_model: 32, num_heads: 2, ff_dim: 64, conv_kernel: 3, dropout: 0.1}}
  aux_ctc_weight: 0.3
data: {{max_batch_seconds: 12.0, num_buckets: 2}}
trainer: {{max_epochs: 3, amp: auto, device: auto, log_every_steps: 1, progress_bar: false, plot: false}}
optim: {{lr: 1.0e-3, warmup_steps: 2}}
"""
DECODE_SPEECH_LLM = """
device: {device}
methods:
  greedy: {{method: label_sync, beam: 1, max_length: 40, max_length_ratio: null}}
  beam4: {{method: label_sync, beam: 4, nbest: 2, max_length: 40, max_length_ratio: null}}
  ctc: {{method: ctc_greedy, beam: 1}}
"""


@pytest.mark.parametrize("interface", ["prefix", "merged_attention"])
def test_speech_llm_trains_under_bf16_and_decodes_on_cuda_as_on_cpu(tmp_path: Path, interface: str) -> None:
    make_datadir(tmp_path / "data/train", 16, seed=0, min_duration=1.0, max_duration=3.0)
    make_datadir(tmp_path / "data/test", 4, seed=1, min_duration=1.0, max_duration=3.0)
    make_char_tokenizer(tmp_path / "data/train", tmp_path / "token")
    (tmp_path / "train.yaml").write_text(SPEECH_LLM.format(token=tmp_path / "token", interface=interface))
    exp = tmp_path / "exp"
    assert train.main(["--config", str(tmp_path / "train.yaml"), "--train-data", str(tmp_path / "data/train"),
                       "--exp-dir", str(exp)]) == 0
    hyps = {}
    for device in ("cuda", "cpu"):
        (tmp_path / f"decode_{device}.yaml").write_text(DECODE_SPEECH_LLM.format(device=device))
        model_dir = tmp_path / device
        model_dir.mkdir()
        for name in ("config.yaml", "tokenizer", "checkpoints"):
            (model_dir / name).symlink_to(exp / name)
        assert decode.main(["--config", str(tmp_path / f"decode_{device}.yaml"), "--model-dir", str(model_dir),
                            "--checkpoint", "latest", "--data", str(tmp_path / "data/test")]) == 0
        for method in ("greedy", "beam4", "ctc"):
            hyps[device, method] = (model_dir / f"decode_test_{method}/parts/0-of-1.hyp.txt").read_text()
    for method in ("greedy", "beam4", "ctc"):
        assert hyps["cuda", method] == hyps["cpu", method], method
