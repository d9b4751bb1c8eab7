"""Runs egs/mini_synth/asr1/run.sh through every stage at a tiny size, so CI catches broken stages,
then re-runs it after changing, in turn, the decode config, the checkpoint, the AM config and the
test sets: each re-run redoes exactly what changed with `--force true` and stops with an error
naming what differs without it (issue 7, acceptance 2; asserted from file contents).

The recipe is copied (with its symlinks) into a temporary tree of the same shape, whose path holds
a space, and the tokenizer's name holds one too, so that the shell's quoting is tested as well. The
test neither needs nor touches the checkout's data/ and exp/.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from asrllm.train.experiment import resolve_config

REPO = Path(__file__).resolve().parents[2]
TINY_CORPUS = "--num-train 24 --num-dev 6 --num-test 6"
TINY_TRAINING = (
    "trainer.max_epochs=2 trainer.log_every_steps=1 trainer.progress_bar=false trainer.plot=true "
    "model.encoder.num_layers=2 model.encoder.d_model=32 model.encoder.num_heads=2 model.encoder.ff_dim=64 "
    "optim.warmup_steps=2 data.max_batch_seconds=30 optim.betas=[0.9, 0.98]"  # a value with a space
)
TOKEN = ("--token-name", "my char")
# LM stages 6-9, kept to what the unit tests do not cover (every LM config is checked by
# test_lm_configs_resolve, SmolLM2 by tests/models/test_llm.py): the transcriptions stand in for the
# LM text (data/lm is the full text even for a tiny corpus), a 2 x 32 tiny LLM, one epoch of
# re-vocabularised fine-tuning, and the re-vocabularised LLM before fine-tuning.
TINY_LM = (
    "--lm-text-set", "train", "--lm-tokenizers", "unigram256:train bpe2k:train",
    "--llm-pretrain-args", "trainer.max_steps=4 trainer.save_every_steps=2 trainer.valid_every_steps=2 "
    "model.llm.arch.hidden_size=32 model.llm.arch.intermediate_size=64 model.llm.arch.num_hidden_layers=2",
    "--lm-configs", "conf/lm/tiny_llm_ft_unigram256.yaml",
    "--lm-train-args", "trainer.max_epochs=1",
    "--lm-zeroshot-configs", "conf/lm/tiny_llm_ft_unigram256.yaml",
)
LMS = ("tiny_llm_pretrain", "tiny_llm_ft_unigram256", "tiny_llm_ft_unigram256_zeroshot")
# Combination stages 10-13 with the one LM the tiny run trains (SentencePiece pieces, the AM has
# characters: delayed fusion with re-tokenisation, and N-best rescoring); the recipe's own configs
# (every LM) are checked by test_combination_configs_load.
RESCORE_TINY = """
lms:
  tiny: {model_dir: exp/tiny_llm_ft_unigram256}
methods:
  rescore_tiny: {weights: {tiny: 0.5}, prior_scale: 0.3}
"""
FUSION_TINY = """
lms:
  tiny: {model_dir: exp/tiny_llm_ft_unigram256}
methods:
  beam4_prior: {beam: 4, fusion: {prior_scale: 0.3}}
  v2e5_tiny: {beam: 4, fusion: {schedule: delayed, retokenize: true, every: 5, weights: {tiny: 0.5}, prior_scale: 0.3}}
  v2end_tiny_noprior: {beam: 4, fusion: {schedule: delayed, retokenize: true, trigger: end, weights: {tiny: 0.5}}}
"""
TINY_COMBINATION = (
    "--nbest-config", "conf/decode_nbest.yaml", "--rescore-config", "conf/rescore_tiny.yaml",
    "--fusion-config", "conf/decode_fusion_tiny.yaml", "--tune-lms", "tiny",
    "--tune-args", "--lm-grid 0,0.5 --prior-grid 0,0.5 --refine-rounds 1",
)

# Speech-LLM stages 14-15 with the recipe's own configs (both interfaces, as run.sh runs them), shrunk
# to the tiny AM's encoder (which initialises theirs) and one epoch; the probe set; the grid's decode
# config (the demo's methods and beam search with and without length normalisation).
TINY_SLLM = (
    "--speech-llm-configs", "conf/speech_llm/sllm_tiny_prefix.yaml conf/speech_llm/sllm_tiny_merged.yaml",
    "--speech-llm-extra-sets", "probe", "--speech-llm-decode-config", "conf/decode_speech_llm_grid.yaml",
    "--speech-llm-args", "trainer.max_epochs=1 trainer.log_every_steps=1 trainer.progress_bar=false "
    "model.encoder.num_layers=2 model.encoder.d_model=32 model.encoder.num_heads=2 model.encoder.ff_dim=64 "
    "optim.warmup_steps=2 data.max_batch_seconds=30",
)
SLLMS = ("sllm_tiny_prefix", "sllm_tiny_merged")


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo") / "with space"
    for part in ("egs/TEMPLATE", "egs/mini_synth", "utils"):
        shutil.copytree(REPO / part, root / part, symlinks=True,
                        ignore=shutil.ignore_patterns("data", "exp", "corpus", "RESULTS.md"))
    recipe = root / "egs/mini_synth/asr1"
    (recipe / "conf/rescore_tiny.yaml").write_text(RESCORE_TINY)
    (recipe / "conf/decode_fusion_tiny.yaml").write_text(FUSION_TINY)
    return recipe


def run_recipe(recipe: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(
        ["./run.sh", *args], cwd=recipe, env=env, capture_output=True, text=True, timeout=900, check=False
    )


def test_all_stages_run_and_leave_results(recipe: Path) -> None:
    proc = run_recipe(recipe, "--corpus-args", TINY_CORPUS, "--train-args", TINY_TRAINING, "--average-last", "2",
                      *TOKEN, *TINY_LM, *TINY_COMBINATION, *TINY_SLLM)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    assert len(list((recipe / "corpus/LibriSpeech/train").rglob("*.flac"))) == 24
    assert len((recipe / "data/test/wav.scp").read_text().splitlines()) == 6
    assert (recipe / "data/token/my char/tokenizer.yaml").is_file()
    am = recipe / "exp/train_ctc_small"
    train_command = (am / "logs/train.log").read_text().splitlines()[0]
    assert f"'{TINY_TRAINING}'" in train_command and "--tokenizer 'data/token/my char'" in train_command
    assert (am / "model_avg.safetensors").is_file()
    assert (am / "config.yaml").is_file() and (am / "learning_curve.png").is_file()
    for dset in ("dev", "test"):
        for method in ("greedy", "beam8"):
            metrics = json.loads((am / f"decode_{dset}_{method}/metrics.json").read_text())
            assert metrics["num_utts"] == 6
            assert 0.0 <= metrics["wer"]
            assert metrics["command"].startswith("python -m asrllm.bin.decode")
            assert "result.txt" in os.listdir(am / f"decode_{dset}_{method}")
    results = (recipe / "RESULTS.md").read_text()
    assert "greedy" in results and "beam8" in results

    assert (recipe / "data/token/unigram256/spm.model").is_file()
    assert (recipe / "data/token/bpe2k/tokenizer.json").is_file()
    assert (recipe / "exp/tiny_llm_pretrain/llm/llm.yaml").is_file()  # the exported stand-in LLM
    for lm in LMS:
        for dset in ("dev", "test"):
            metrics = json.loads((recipe / f"exp/{lm}/ppl_{dset}/metrics.json").read_text())
            assert metrics["num_sentences"] == 6 and metrics["word_ppl"] > 1.0, (lm, metrics)
            assert metrics["command"].startswith("python -m asrllm.bin.perplexity")
            assert (metrics["train_seconds"] is None) == lm.endswith("_zeroshot"), (lm, metrics)
        assert f"| {lm} |" in results
    assert "Language models: perplexity" in results
    assert not (recipe / "exp/smollm2_135m_lora").exists()  # stage 16 runs only on request

    assert (am / "prior.safetensors").is_file() and (am / "prior.safetensors.inputs.json").is_file()
    tuning = json.loads((am / "tune/tiny/tuning.json").read_text())
    assert {"lm_scale", "prior_scale", "wer", "without_prior"} <= set(tuning) and (am / "tune/tiny/grid.png").is_file()
    tuned = (am / "tune/tiny/decode_fusion_tiny.yaml").read_text()
    assert f"tiny: {tuning['lm_scale']}" in tuned and f"tiny: {tuning['without_prior']['lm_scale']}" in tuned
    assert (am / "tune_dev_rescore_tiny/parts/0-of-1.nbest.jsonl").is_file() and "tune_dev" not in results
    for dset in ("dev", "test"):
        for method in ("nbest16", "rescore_tiny", "beam4_prior", "v2e5_tiny", "v2end_tiny_noprior"):
            metrics = json.loads((am / f"decode_{dset}_{method}/metrics.json").read_text())
            assert metrics["num_utts"] == 6, (dset, method)
            assert method in results, method
        costs = json.loads((am / f"decode_{dset}_v2e5_tiny/metrics.json").read_text())["lm_costs"]["tiny"]
        assert costs["calls"] >= 1 and costs["tokens"] > 0

    for sllm in SLLMS:
        exp = recipe / "exp" / sllm
        assert (exp / "model_avg.safetensors").is_file() and (exp / "tokenizer/tokenizer.yaml").is_file()
        assert "initialised" in (exp / "logs/train.log").read_text()  # the encoder from the AM
        for dset in ("dev", "test"):
            for method in ("greedy", "beam4", "beam4_ln1", "aux_ctc_greedy"):
                metrics = json.loads((exp / f"decode_{dset}_{method}/metrics.json").read_text())
                assert metrics["num_utts"] == 6 and set(metrics["hallucination"]) >= {"over_long", "loops", "empty"}
            costs = json.loads((exp / f"decode_{dset}_beam4/metrics.json").read_text())["lm_costs"]["speech_llm"]
            assert costs["calls"] >= 1 and costs["tokens"] > 0  # the prefill at least
        assert f"| {sllm} | beam4 |" in results
        probe = json.loads((exp / "decode_probe_greedy/metrics.json").read_text())
        assert probe["num_utts"] == 30 and probe["dropped_empty_refs"] == 20  # noise only: out of WER
        assert probe["hallucination"]["words_on_silence"] is not None
    assert json.loads((am / "decode_probe_beam8/metrics.json").read_text())["num_utts"] == 30  # the AM on it too
    assert (recipe / "data/probe/wav.scp").is_file() and len((recipe / "data/probe/text").read_text().splitlines()) == 50

    # A second run skips every finished stage: no output is rewritten.
    before = snapshot(recipe)
    again = run_recipe(recipe, "--corpus-args", TINY_CORPUS, "--train-args", TINY_TRAINING, *TOKEN, *TINY_LM,
                       *TINY_COMBINATION, *TINY_SLLM)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert snapshot(recipe) == before
    assert (recipe / "RESULTS.md").read_text() == results


def snapshot(recipe: Path) -> dict[str, bytes]:
    """Every stage output of the AM, tokenizers, data and LMs (not logs, locks or RESULTS.md), by path."""
    out = {}
    for top in ("data", "exp"):
        for p in sorted((recipe / top).rglob("*")):
            rel = p.relative_to(recipe).as_posix()
            if p.is_file() and "/logs/" not in f"/{rel}" and not p.name.startswith(".") and "tensorboard" not in rel:
                out[rel] = p.read_bytes()
    return out


def changed(before: dict[str, bytes], after: dict[str, bytes]) -> set[str]:
    return {k for k in set(before) | set(after) if before.get(k) != after.get(k)}


AM_STAGES = ("--stage", "3", "--stop-stage", "5", *TOKEN)


def test_reruns_redo_exactly_what_changed(recipe: Path) -> None:
    """Runs after test_all_stages_run_and_leave_results, on its outputs."""
    am = "exp/train_ctc_small"
    assert (recipe / am / "model_avg.safetensors").is_file(), "needs the recipe run of the test before"

    def rerun(*args: str) -> subprocess.CompletedProcess[str]:
        return run_recipe(recipe, *AM_STAGES, "--train-args", TINY_TRAINING, "--average-last", "2", *args)

    def decoded(dset: str, method: str) -> dict:
        return json.loads((recipe / am / f"decode_{dset}_{method}/parts/0-of-1.info.json").read_text())

    # 1. The decode config: beam8's beam becomes 12.
    conf = recipe / "conf/decode_ctc.yaml"
    conf.write_text(conf.read_text().replace("beam: 8", "beam: 12"))
    before = snapshot(recipe)
    proc = rerun()
    assert proc.returncode != 0 and "differs in: search.beam (8 -> 12)" in proc.stdout + proc.stderr
    assert snapshot(recipe) == before  # nothing lost
    proc = rerun("--force", "true")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    redone = changed(before, snapshot(recipe))
    assert {p.split("/")[2] for p in redone} == {"decode_dev_beam8", "decode_test_beam8"}, sorted(redone)
    assert decoded("test", "beam8")["inputs"]["search.beam"] == 12

    # 2. The checkpoint: the newest instead of the average.
    before = snapshot(recipe)
    proc = rerun("--checkpoint", "latest")
    assert proc.returncode != 0 and 'checkpoint ("average" -> "latest")' in proc.stdout + proc.stderr
    assert snapshot(recipe) == before
    proc = rerun("--checkpoint", "latest", "--force", "true")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    redone = changed(before, snapshot(recipe))
    assert {p.split("/")[2] for p in redone} == {f"decode_{d}_{m}" for d in ("dev", "test") for m in ("greedy", "beam8")}
    assert decoded("dev", "greedy")["inputs"]["checkpoint"] == "latest"

    # 3. The AM config: a wider feed-forward layer.
    weights = (recipe / am / "model_avg.safetensors").read_bytes()
    before = snapshot(recipe)
    wider = ("--train-args", TINY_TRAINING.replace("ff_dim=64", "ff_dim=48"))
    proc = run_recipe(recipe, *AM_STAGES, *wider, "--average-last", "2")
    assert proc.returncode != 0 and "model.encoder.ff_dim (64 -> 48)" in proc.stdout + proc.stderr
    assert snapshot(recipe) == before
    proc = run_recipe(recipe, *AM_STAGES, *wider, "--average-last", "2", "--force", "true")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "ff_dim: 48" in (recipe / am / "config.yaml").read_text()
    assert (recipe / am / "model_avg.safetensors").read_bytes() != weights
    redone = changed(before, snapshot(recipe))
    assert all(p.startswith(f"{am}/") for p in redone)  # no tokenizer, data or LM output
    for dset in ("dev", "test"):
        for method in ("greedy", "beam8"):
            assert f"{am}/decode_{dset}_{method}/parts/0-of-1.info.json" in redone

    # 4. The test sets: train joins dev and test; only train is decoded.
    before = snapshot(recipe)
    proc = run_recipe(recipe, *AM_STAGES, *wider, "--average-last", "2", "--test-sets", "dev test train")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    redone = changed(before, snapshot(recipe))
    assert {p.split("/")[2] for p in redone if "/parts/" in p} == {"decode_train_greedy", "decode_train_beam8"}
    assert "| train |" in (recipe / "RESULTS.md").read_text() or "train" in (recipe / "RESULTS.md").read_text()


def test_unknown_option_is_rejected(recipe: Path) -> None:
    proc = run_recipe(recipe, "--no-such-option", "1")
    assert proc.returncode != 0
    assert "unknown option --no-such-option" in proc.stderr


@pytest.mark.parametrize("config", sorted((REPO / "egs/mini_synth/asr1/conf/lm").glob("*.yaml")), ids=lambda p: p.name)
def test_lm_configs_resolve(config: Path) -> None:
    """Every LM config of the recipe (also those the tiny run leaves out, e.g. stage 16's) is valid."""
    exp = resolve_config(config, [], None)
    assert exp.config.model_kind == "lm" and exp.model.llm is not None


def test_on_request_fusion_sweep_uses_the_demo_tuning() -> None:
    """local/fusion_schedules.sh's config loads, none of its methods is also in the demo's, and each
    weights only LMs that run.sh tunes (their scales come from the demo's stage 12)."""
    from asrllm.bin.decode import DecodeConfig
    from asrllm.config import load_config

    recipe = REPO / "egs/mini_synth/asr1"
    extra = load_config(DecodeConfig, recipe / "conf/decode_fusion_schedules.yaml", {})
    demo = load_config(DecodeConfig, recipe / "conf/decode_fusion.yaml", {})
    assert "--fusion-config conf/decode_fusion_schedules.yaml" in (recipe / "local/fusion_schedules.sh").read_text()
    assert extra.methods and not set(extra.methods) & set(demo.methods)
    tuned = (recipe / "run.sh").read_text().split('--tune-lms "')[1].split('"')[0].split()
    assert {lm for m in extra.methods.values() for lm in m.fusion.weights} <= set(tuned) <= set(extra.lms)


@pytest.mark.parametrize(("script", "rescore_conf", "fusion_conf"), [
    ("run.sh", "rescore.yaml", "decode_fusion.yaml"),
    ("local/am_unigram256.sh", "rescore_unigram256.yaml", "decode_fusion_unigram256.yaml"),
    ("conf/rescore_smollm2.yaml", "rescore_smollm2.yaml", "decode_fusion_smollm2.yaml"),  # its comment: the command
])
def test_combination_configs_load(script: str, rescore_conf: str, fusion_conf: str) -> None:
    """The recipe's stage 11-13 configs load; every LM they name is trained by run.sh's stage 8, and
    every LM the script tunes has its rescore_<lm> method."""
    from asrllm.bin.decode import DecodeConfig
    from asrllm.bin.rescore import RescoreConfig
    from asrllm.config import from_dict, load_config, load_yaml
    from asrllm.train.experiment import TrainExperimentConfig

    recipe = REPO / "egs/mini_synth/asr1"
    conf = recipe / "conf"
    run_sh, text = (recipe / "run.sh").read_text(), (recipe / script).read_text()
    nbest = load_config(DecodeConfig, conf / "decode_nbest.yaml", {})
    assert len(nbest.methods) == 1 and next(iter(nbest.methods.values())).nbest > 1
    fusion = load_config(DecodeConfig, conf / fusion_conf, {})
    rescore = load_config(RescoreConfig, conf / rescore_conf, {})
    for lms in (fusion.lms, rescore.lms):
        for spec in lms.values():
            assert f"conf/lm/{Path(spec.model_dir).name}.yaml" in run_sh, spec  # stage 8 or 16 trains it
    assert f"--rescore-config conf/{rescore_conf}" in text and f"--fusion-config conf/{fusion_conf}" in text
    tuned = text.split('--tune-lms "')[1].split('"')[0].split()
    assert tuned and all(f"rescore_{lm}" in rescore.methods for lm in tuned)
    assert {lm for m in fusion.methods.values() for lm in m.fusion.weights} <= set(tuned)
    am_config = text.split("--am-config ")[1].split()[0] if "--am-config " in text else "conf/train_ctc_small.yaml"
    exp = from_dict(TrainExperimentConfig, load_yaml(recipe / am_config))
    if exp.init.from_model is not None:  # the AM it starts from is the one run.sh trains
        assert exp.init.from_model == "exp/train_ctc_small/model_avg.safetensors" and "train_ctc_small.yaml" in run_sh


@pytest.mark.parametrize("config", sorted((REPO / "egs/mini_synth/asr1/conf/speech_llm").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_speech_llm_configs_resolve(config: Path) -> None:
    """Every speech-LLM config of the recipe is valid and starts its encoder from an AM the recipe
    trains: run.sh's, or (trained with noise) local/noise_training.sh's."""
    exp = resolve_config(config, [], None)
    assert exp.config.model_kind == "speech_llm"
    am_dirs = {"exp/train_ctc_small/model_avg.safetensors": "run.sh",
               "exp/train_ctc_small_noise/model_avg.safetensors": "local/noise_training.sh"}
    assert exp.config.init.from_model in am_dirs
    script = (REPO / "egs/mini_synth/asr1" / am_dirs[exp.config.init.from_model]).read_text()
    assert exp.config.init.from_model.split("/")[1] in script or "train_ctc_small.yaml" in script
    assert exp.config.init.include == ["frontend.*", "encoder.*"]
    from asrllm.config import load_yaml

    am = load_yaml(REPO / "egs/mini_synth/asr1/conf/train_ctc_small.yaml")["model"]
    assert exp.config.model["encoder"] == {**exp.config.model["encoder"], **am["encoder"]}  # init.from_model's shapes
