"""The decode CLI's re-run rule (asrllm.provenance): same inputs skip, other inputs are an error
naming what differs, `--force` redoes exactly the stale parts; one writer per part.

The model is an untrained tiny CTC model written as an experiment dir by hand (config.yaml, the
tokenizer, weights): decoding's records do not care whether the weights were trained.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from asrllm.bin import decode, score
from asrllm.bin.estimate_prior import main as estimate_prior
from asrllm.data.tokenizer import TokenizerConfig, train_tokenizer
from asrllm.locking import DirLock
from asrllm.search import read_nbest_jsonl
from asrllm.testing.dummies import make_ctc_exp_dir, make_datadir, make_lm_exp_dir
from asrllm.train.checkpoint import MODEL_FILE

DECODE = """
methods:
  greedy: {method: ctc_greedy, beam: 1}
  beam4: {method: ctc_time_sync, beam: 4, nbest: 2}
"""


@pytest.fixture()
def setup(tmp_path: Path) -> Path:
    make_datadir(tmp_path / "data/dev", 4, seed=0)
    make_ctc_exp_dir(tmp_path / "exp", seed=0)
    (tmp_path / "decode.yaml").write_text(DECODE)
    return tmp_path


def run(root: Path, *extra: str, checkpoint: str = "average", nj: int = 1, job: int = 0) -> int:
    return decode.main([
        "--config", str(root / "decode.yaml"), "--model-dir", str(root / "exp"), "--data", str(root / "data/dev"),
        "--checkpoint", checkpoint, "--num-jobs", str(nj), "--job", str(job), *extra,
    ])


def part_files(root: Path, method: str) -> dict[str, bytes]:
    parts = root / f"exp/decode_dev_{method}/parts"
    return {p.name: p.read_bytes() for p in sorted(parts.glob("[0-9]*-of-*.*"))}  # not the lock files


def info(root: Path, method: str, part: str = "0-of-1") -> dict:
    return json.loads((root / f"exp/decode_dev_{method}/parts/{part}.info.json").read_text())


def test_same_inputs_skip_and_changed_search_is_named(setup: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert run(setup) == 0
    greedy, beam = part_files(setup, "greedy"), part_files(setup, "beam4")
    assert info(setup, "beam4")["inputs"]["search.beam"] == 4
    assert run(setup) == 0  # same inputs: nothing rewritten
    assert part_files(setup, "greedy") == greedy and part_files(setup, "beam4") == beam

    caplog.set_level(logging.ERROR)
    assert run(setup, "methods.beam4.beam=3") == 1
    assert "decode part 0-of-1 of" in caplog.text and "differs in: search.beam (4 -> 3)" in caplog.text
    assert "--force true" in caplog.text
    assert part_files(setup, "beam4") == beam  # nothing lost

    assert run(setup, "--force", "methods.beam4.beam=3") == 0
    assert info(setup, "beam4")["inputs"]["search.beam"] == 3
    assert part_files(setup, "greedy") == greedy  # the unchanged method is not redone


def test_changed_weights_and_checkpoint(setup: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert run(setup) == 0
    before = info(setup, "greedy")
    make_ctc_exp_dir(setup / "exp", seed=1)  # "retrained"
    caplog.set_level(logging.ERROR)
    assert run(setup) == 1
    assert "differs in: model.weights" in caplog.text
    assert run(setup, "--force") == 0
    after = info(setup, "greedy")
    assert after["inputs"]["model.weights"] != before["inputs"]["model.weights"]

    caplog.clear()
    assert run(setup, checkpoint="step_00000007") == 1  # a missing checkpoint is an error, decoded or not
    assert "step_00000007" in caplog.text and "does not exist" in caplog.text
    make_ctc_exp_dir(setup / "exp", seed=2, name=f"checkpoints/step_00000007/{MODEL_FILE}")
    assert run(setup, checkpoint="step_00000007") == 1
    assert "checkpoint" in caplog.text and "model.weights" in caplog.text
    assert run(setup, "--force", checkpoint="step_00000007") == 0
    assert info(setup, "greedy")["inputs"]["checkpoint"] == "step_00000007"


def test_other_job_count_and_merged_outputs_are_cleared(setup: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert run(setup) == 0
    (setup / "exp/decode_dev_greedy/metrics.json").write_text("{}")  # as if scored
    caplog.set_level(logging.ERROR)
    assert run(setup, nj=2, job=0) == 1
    assert "another --num-jobs" in caplog.text
    assert run(setup, "--force", nj=2, job=0) == 0 and run(setup, "--force", nj=2, job=1) == 0
    assert sorted(part_files(setup, "greedy")) == [
        f"{j}-of-2.{kind}" for j in range(2) for kind in ("hyp.txt", "info.json", "nbest.jsonl")
    ]
    assert not (setup / "exp/decode_dev_greedy/metrics.json").exists()
    hyps = [line.split()[0] for j in range(2)
            for line in (setup / f"exp/decode_dev_greedy/parts/{j}-of-2.hyp.txt").read_text().splitlines()]
    assert sorted(hyps) == [f"dummy-{i:04d}" for i in range(4)]


def test_changed_data_is_named(setup: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert run(setup) == 0
    make_datadir(setup / "data/dev", 3, seed=5)
    caplog.set_level(logging.ERROR)
    assert run(setup) == 1
    assert "differs in: data" in caplog.text


def test_second_decoder_on_the_same_part_refuses(setup: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    with DirLock(setup / "exp/decode_dev_greedy/parts", "decoding", ".0-of-1.lock"):
        assert run(setup) == 1
    assert "is in use by PID" in caplog.text
    assert run(setup) == 0


def test_scoring_refuses_parts_of_another_model(setup: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert run(setup) == 0
    argv = ["--decode-dir", str(setup / "exp/decode_dev_greedy"), "--data", str(setup / "data/dev")]
    assert score.main(argv) == 0
    metrics = json.loads((setup / "exp/decode_dev_greedy/metrics.json").read_text())
    assert metrics["num_utts"] == 4 and metrics["normalizer"] == "open_asr_2026_03"
    make_ctc_exp_dir(setup / "exp", seed=1)  # retrained, not yet decoded again
    caplog.set_level(logging.ERROR)
    assert score.main(argv) == 1
    assert "was decoded from other inputs than" in caplog.text and "differs in: model.weights" in caplog.text


def test_label_wise_fusion_with_prior_from_the_decode_config(setup: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_lm_exp_dir(setup / "exp_lm", setup / "exp/tokenizer", seed=0)
    assert estimate_prior(["--model-dir", str(setup / "exp"), "--data", str(setup / "data/dev")]) == 0
    (setup / "decode.yaml").write_text(f"""
lms:
  lm: {{model_dir: {setup / 'exp_lm'}, checkpoint: average}}
methods:
  beam4: {{method: ctc_time_sync, beam: 4, nbest: 2}}
  fused: {{method: ctc_time_sync, beam: 4, nbest: 2, fusion: {{schedule: label_wise, weights: {{lm: 0.5}}, prior_scale: 0.3}}}}
""")
    assert run(setup) == 0
    inputs = info(setup, "fused")["inputs"]
    assert inputs["lm.lm.model.weights"].startswith("sha256:") and inputs["prior"].startswith("sha256:")
    assert "lm.lm.model.weights" not in info(setup, "beam4")["inputs"]  # only what a method fuses
    for e in read_nbest_jsonl(setup / "exp/decode_dev_fused/parts/0-of-1.nbest.jsonl"):
        assert set(e.scores) == {"ctc", "lm", "prior"}
        assert e.score == pytest.approx(e.scores["ctc"] + 0.5 * e.scores["lm"] - 0.3 * e.scores["prior"], abs=1e-4)
    beam4 = part_files(setup, "beam4")

    make_lm_exp_dir(setup / "exp_lm", setup / "exp/tokenizer", seed=1)  # the LM was retrained
    caplog.set_level(logging.ERROR)
    assert run(setup) == 1 and "differs in: lm.lm.model.weights" in caplog.text
    assert run(setup, "--force") == 0 and part_files(setup, "beam4") == beam4  # only the fused method redone

    (setup / "exp/prior.safetensors").unlink()
    caplog.clear()
    assert run(setup, "--force") == 1 and "prior.safetensors: does not exist" in caplog.text


def test_a_weight_for_an_undefined_lm_is_a_config_error(setup: Path, caplog: pytest.LogCaptureFixture) -> None:
    (setup / "decode.yaml").write_text(
        "methods:\n  fused: {method: ctc_time_sync, beam: 4, fusion: {schedule: label_wise, weights: {llm: 0.5}}}\n")
    caplog.set_level(logging.ERROR)
    assert run(setup) == 1
    assert "DecodeConfig.methods.fused.fusion.weights names ['llm'], which lms does not define (lms: none)" in caplog.text


JOINT = """
ctc_models:
  am: {{model_dir: {am}}}
methods:
  own: {{method: label_sync, beam: 3, max_length_ratio: 2.0, pre_beam: 4, ctc_weight: 0.4}}
  with_am: {{method: label_sync, beam: 3, max_length_ratio: 2.0, pre_beam: 4, ctc_weight: 0.4, ctc_model: am}}
"""


def test_joint_decoding_with_a_separate_ctc_am(setup: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A method with ctc_model decodes with the CTC AM's log-probs in place of the own head's: the
    CLI's hypotheses and scores equal the search run by hand on that input; the AM is an input of
    the method's record; an AM of other labels is an error naming both tokenizers."""
    import dataclasses

    import torch

    from asrllm.data.datadir import read_datadir
    from asrllm.data.loader import inference_batches
    from asrllm.models.trained import load_trained_model
    from asrllm.search import SearchConfig, build_search
    from asrllm.search.model_scorers import SpeechLLMScorer, encoder_output
    from asrllm.testing.dummies import make_speech_llm_exp_dir

    make_speech_llm_exp_dir(setup / "sllm", setup / "exp/tokenizer", seed=2)
    (setup / "joint.yaml").write_text(JOINT.format(am=setup / "exp"))

    def joint(*extra: str) -> int:
        return decode.main(["--config", str(setup / "joint.yaml"), "--model-dir", str(setup / "sllm"),
                            "--data", str(setup / "data/dev"), *extra])

    assert joint() == 0
    sllm = load_trained_model(setup / "sllm", "average", torch.device("cpu"))
    am = load_trained_model(setup / "exp", "average", torch.device("cpu"))
    cfg = SearchConfig(method="label_sync", beam=3, max_length_ratio=2.0, pre_beam=4, ctc_weight=0.4)
    search = build_search(cfg, blank_id=0, model_scorers={"speech_llm": SpeechLLMScorer(sllm)}, eos_id=sllm.eos_id)
    by_hand = {}
    for batch in inference_batches(read_datadir(setup / "data/dev"), 100.0):
        with torch.inference_mode():
            enc = encoder_output(sllm, batch.audio, batch.audio_lens, batch.ids)
            ctc = encoder_output(am, batch.audio, batch.audio_lens, batch.ids)
        for own, with_am in zip(search(enc, batch.ids),
                                search(dataclasses.replace(enc, ctc_log_probs=ctc.ctc_log_probs, ctc_lens=ctc.lens),
                                       batch.ids)):
            by_hand[own[0].utt_id] = (own[0], with_am[0])
    for method, which in (("own", 0), ("with_am", 1)):
        entries = read_nbest_jsonl(setup / f"sllm/decode_dev_{method}/parts/0-of-1.nbest.jsonl")
        assert len(entries) == len(by_hand) == 4
        for e in entries:
            ref = by_hand[e.utt_id][which]
            assert e.tokens == ref.tokens and e.score == pytest.approx(ref.score, abs=1e-9)
    assert any(by_hand[u][0].scores["ctc"] != by_hand[u][1].scores["ctc"] for u in by_hand)  # another CTC
    record = json.loads((setup / "sllm/decode_dev_with_am/parts/0-of-1.info.json").read_text())
    assert "ctc_model.am.model.weights" in record["inputs"] and record["ctc_model_seconds"] > 0

    other = setup / "other"  # a CTC AM over two characters only
    (other / "exp/tokenizer").mkdir(parents=True)
    (other / "exp/tokenizer/text").write_text("ab ba\n")
    train_tokenizer(TokenizerConfig(kind="char"), other / "exp/tokenizer/text", other / "exp/tokenizer")
    make_ctc_exp_dir(other / "exp", seed=0)
    (setup / "joint.yaml").write_text(JOINT.format(am=other / "exp"))
    caplog.set_level(logging.ERROR)
    assert joint("--force") == 1
    assert "ctc_models.am: the labels of" in caplog.text and str(setup / "sllm/tokenizer") in caplog.text

    (setup / "joint.yaml").write_text(JOINT.replace("ctc_model: am", "ctc_model: nope").format(am=setup / "exp"))
    assert joint() == 1
    assert "ctc_model='nope', which ctc_models does not define (ctc_models: am)" in caplog.text
