"""N-best rescoring and scale tuning: the library against independent references, and the CLIs end to end.

- `rescore` adds exactly each scorer's whole-sequence score (a full forward pass of the LLM), and
  `rerank` orders by the same log-linear total the search uses.
- `tune_scales` gives, at every grid point, the WER that re-ranking + corpus scoring give.
- decode (N-best) -> rescore -> score -> tune_scales -> decode with the tuned config, with the
  records and the bad inputs of acceptance 5 (N-best lists of another model).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from asrllm.bin import decode, rescore, score, tune_scales
from asrllm.bin.decode import DecodeConfig
from asrllm.bin.estimate_prior import main as estimate_prior
from asrllm.config import load_config
from asrllm.data.datadir import read_datadir
from asrllm.eval.wer import score_corpus
from asrllm.search import NBestEntry, read_nbest_jsonl
from asrllm.search.hyps import group_by_utterance
from asrllm.search.lm_scorer import LMSpec, load_lm_scorer
from asrllm.search.rescoring import label_reader, rerank
from asrllm.search.rescoring import rescore as rescore_nbest
from asrllm.search.tuning import tune_scales as tune
from asrllm.testing.dummies import make_ctc_exp_dir, make_datadir, make_lm_exp_dir


def _entry(utt: str, rank: int, text: str, **scores: float) -> NBestEntry:
    return NBestEntry(utt, rank, [], text, scores.get("ctc", 0.0), scores)


def test_rerank_orders_by_the_weighted_total_and_names_missing_columns() -> None:
    nbest = [[_entry("u", 0, "a", ctc=-1.0, lm=-5.0), _entry("u", 1, "b", ctc=-2.0, lm=-1.0)]]
    assert [e.text for e in rerank(nbest, {"ctc": 1.0})[0]] == ["a", "b"]
    ranked = rerank(nbest, {"ctc": 1.0, "lm": 0.5})[0]
    assert [(e.text, e.rank, e.score) for e in ranked] == [("b", 0, -2.5), ("a", 1, -3.5)]
    with pytest.raises(ValueError, match=r"utterance 'u' has no scores \['prior'\]"):
        rerank(nbest, {"ctc": 1.0, "prior": -0.3})


def test_tuning_matches_reranking_and_scoring_at_every_grid_point() -> None:
    g = torch.Generator().manual_seed(0)
    words = ["a", "b", "c", "d"]
    refs, nbest = {}, []
    for u in range(12):
        ref = " ".join(words[int(i)] for i in torch.randint(0, 4, (4,), generator=g))
        refs[f"u{u}"] = ref
        entries = []
        for r in range(5):
            hyp = ref.split()
            hyp[int(torch.randint(0, 4, (1,), generator=g))] = words[r % 4] if r else hyp[0]
            s = torch.randn(3, generator=g).tolist()
            entries.append(_entry(f"u{u}", r, " ".join(hyp), ctc=s[0] - r, lm=s[1] * 3, prior=s[2]))
        nbest.append(entries)
    result = tune(nbest, refs, "lm", lm_grid=[0.0, 0.5, 1.0], prior_grid=[0.0, 0.5], refine_rounds=1)
    assert len(result.grid) > 6  # the refinement added points
    for lm, prior, wer in result.grid:
        ranked = rerank(nbest, {"ctc": 1.0, "lm": lm, "prior": -prior})
        hyps = {u[0].utt_id: u[0].text for u in ranked}
        assert wer == pytest.approx(100 * score_corpus(refs, hyps).wer, abs=1e-9), (lm, prior)
    assert result.wer == min(w for _, _, w in result.grid)
    with pytest.raises(ValueError, match="rescore the N-best lists with LM 'llm' first"):
        tune(nbest, refs, "llm", [0.0], [0.0])


@pytest.fixture()
def setup(tmp_path: Path) -> Path:
    make_datadir(tmp_path / "data/dev", 5, seed=0)
    make_ctc_exp_dir(tmp_path / "exp", seed=0)
    make_lm_exp_dir(tmp_path / "exp_lm", tmp_path / "exp/tokenizer", seed=0)
    assert estimate_prior(["--model-dir", str(tmp_path / "exp"), "--data", str(tmp_path / "data/dev")]) == 0
    (tmp_path / "decode_nbest.yaml").write_text("methods:\n  nbest: {beam: 6, nbest: 6}\n")
    (tmp_path / "rescore.yaml").write_text(f"""
lms:
  lm: {{model_dir: {tmp_path / 'exp_lm'}, checkpoint: average}}
methods:
  resc: {{weights: {{lm: 0.5}}, prior_scale: 0.3}}
  resc_lm_only: {{weights: {{lm: 0.8}}}}
""")
    (tmp_path / "template.yaml").write_text(f"""
lms:
  lm: {{model_dir: {tmp_path / 'exp_lm'}, checkpoint: average}}
methods:
  beam: {{beam: 4}}
  fused: {{beam: 4, fusion: {{schedule: label_wise, weights: {{lm: 1.0}}, prior_scale: 0.1}}}}
  fused_noprior: {{beam: 4, fusion: {{schedule: label_wise, weights: {{lm: 1.0}}}}}}
""")
    return tmp_path


def _args(root: Path, model: str = "exp") -> list[str]:
    return ["--config", str(root / "rescore.yaml"), "--model-dir", str(root / model),
            "--nbest-dir", str(root / "exp/decode_dev_nbest"), "--data", str(root / "data/dev")]


def test_decode_rescore_score_tune_decode(setup: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = ["--data", str(setup / "data/dev")]
    assert decode.main(["--config", str(setup / "decode_nbest.yaml"), "--model-dir", str(setup / "exp"), *data]) == 0
    assert rescore.main(_args(setup)) == 0
    entries = read_nbest_jsonl(setup / "exp/decode_dev_resc/parts/0-of-1.nbest.jsonl")
    first_pass = read_nbest_jsonl(setup / "exp/decode_dev_nbest/parts/0-of-1.nbest.jsonl")
    assert sorted((e.utt_id, e.tokens) for e in entries) == sorted((e.utt_id, e.tokens) for e in first_pass)
    scorer = load_lm_scorer(LMSpec(str(setup / "exp_lm"), "average"), torch.device("cpu"))
    length = max(1, max(len(e.tokens) for e in entries))
    direct = scorer.score_sequence(torch.tensor([e.tokens + [0] * (length - len(e.tokens)) for e in entries]),
                                   torch.tensor([len(e.tokens) for e in entries]))
    assert [e.scores["lm"] for e in entries] == pytest.approx(direct.tolist(), abs=1e-5)
    for u in group_by_utterance(entries):
        assert [e.score for e in u] == sorted((e.score for e in u), reverse=True)
        for e in u:
            assert e.score == pytest.approx(e.scores["ctc"] + 0.5 * e.scores["lm"] - 0.3 * e.scores["prior"], abs=1e-9)
    info = json.loads((setup / "exp/decode_dev_resc/parts/0-of-1.info.json").read_text())
    assert info["lm_costs"]["lm"]["calls"] == 1 and info["lm_costs"]["lm"]["utterance_calls"] == 5
    assert info["inputs"]["prior"].startswith("sha256:") and "prior" not in json.loads(
        (setup / "exp/decode_dev_resc_lm_only/parts/0-of-1.info.json").read_text())["inputs"]
    assert rescore.main(_args(setup)) == 0 and "rescored already" in caplog.text  # same inputs: skipped

    assert score.main(["--decode-dir", str(setup / "exp/decode_dev_resc"), *data]) == 0
    metrics = json.loads((setup / "exp/decode_dev_resc/metrics.json").read_text())
    assert metrics["num_utts"] == 5 and metrics["lm_costs"]["lm"]["tokens"] > 0

    out = setup / "exp/tune_lm"
    argv = ["--nbest-dir", str(setup / "exp/decode_dev_resc"), *data, "--lm", "lm",
            "--template", str(setup / "template.yaml"), "--template", str(setup / "rescore.yaml"),
            "--out-dir", str(out), "--lm-grid", "0 0.5 1",
            "--prior-grid", "0 0.5"]
    assert tune_scales.main(argv) == 0
    result = json.loads((out / "tuning.json").read_text())
    assert (out / "grid.png").stat().st_size > 1000
    cfg = load_config(DecodeConfig, out / "template.yaml", {})
    assert cfg.methods["fused"].fusion.weights == {"lm": result["lm_scale"]}
    assert cfg.methods["fused"].fusion.prior_scale == result["prior_scale"] and cfg.methods["beam"].fusion.weights == {}
    lm_only = result["without_prior"]["lm_scale"]
    assert cfg.methods["fused_noprior"].fusion.weights == {"lm": lm_only} and cfg.methods["fused_noprior"].fusion.prior_scale == 0
    tuned = load_config(rescore.RescoreConfig, out / "rescore.yaml", {})
    assert tuned.methods["resc"].weights == {"lm": result["lm_scale"]} and tuned.methods["resc"].prior_scale == result["prior_scale"]
    assert tuned.methods["resc_lm_only"].weights == {"lm": lm_only} and tuned.methods["resc_lm_only"].prior_scale == 0
    refs = {u.id: u.text for u in read_datadir(setup / "data/dev")}
    ranked = rerank(group_by_utterance(entries), {"ctc": 1.0, "lm": result["lm_scale"], "prior": -result["prior_scale"]})
    assert result["wer"] == pytest.approx(100 * score_corpus(refs, {u[0].utt_id: u[0].text for u in ranked}).wer)
    assert decode.main(["--config", str(out / "template.yaml"), "--model-dir", str(setup / "exp"), *data]) == 0

    # one more template (e.g. the on-request fusion methods): its copy gets the recorded scales, no new search
    (setup / "more.yaml").write_text((setup / "template.yaml").read_text())
    (out / "grid.png").unlink()
    caplog.clear()
    assert tune_scales.main([*argv, "--template", str(setup / "more.yaml")]) == 0
    assert "tuned already from the same inputs" in caplog.text and not (out / "grid.png").exists()
    assert json.loads((out / "tuning.json").read_text()) == result
    assert (out / "more.yaml").read_text().split("\n", 1)[1] == (out / "template.yaml").read_text().split("\n", 1)[1]
    # a template without a method for this LM is copied as it is; only when no template has one is it an error
    (setup / "other.yaml").write_text("methods:\n  plain: {beam: 4}\n")
    assert tune_scales.main([*argv, "--template", str(setup / "other.yaml")]) == 0
    assert load_config(DecodeConfig, out / "other.yaml", {}).methods["plain"].beam == 4
    caplog.clear()
    alone = ["--nbest-dir", str(setup / "exp/decode_dev_resc"), *data, "--lm", "lm", "--out-dir", str(out),
             "--lm-grid", "0 0.5 1", "--prior-grid", "0 0.5", "--template", str(setup / "other.yaml")]
    assert tune_scales.main(alone) == 1
    assert "no method weights LM 'lm'" in caplog.text


def test_nbest_lists_of_another_model_are_refused(setup: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = ["--data", str(setup / "data/dev")]
    assert decode.main(["--config", str(setup / "decode_nbest.yaml"), "--model-dir", str(setup / "exp"), *data]) == 0
    make_ctc_exp_dir(setup / "other", seed=1)  # another AM (its own tokenizer dir, same characters)
    caplog.set_level(logging.ERROR)
    assert rescore.main(_args(setup, model="other")) == 1
    assert "these N-best lists were decoded by another model than" in caplog.text
    assert "differs in: model.weights" in caplog.text and "rescore them with --model-dir" in caplog.text
    make_ctc_exp_dir(setup / "exp", seed=2)  # the AM was retrained after decoding
    caplog.clear()
    assert rescore.main(_args(setup)) == 1 and "was decoded from other inputs than" in caplog.text


def test_rescoring_with_own_tokens_equals_delayed_fusion_at_the_end(tmp_path: Path) -> None:
    """Acceptance 2 through the rescoring code: the final scores of delayed v2 "at the end" are the
    `rescore` scores of that (CTC) beam, with `label_reader` re-tokenising as the search does."""
    from asrllm.data.hf_tokenizer import HFTokenizer
    from asrllm.data.tokenizer import CharTokenizer, TokenizerConfig
    from asrllm.models.llm import LLMConfig, build_llm
    from asrllm.search.fusion import DelayedFusion
    from asrllm.search.lm_scorer import LMScorer
    from asrllm.search.retokenize import WordRetokenizer
    from asrllm.search.time_sync import CTCTimeSyncSearch

    (tmp_path / "text").write_text("AB BA ABBA B A BAB\n" * 30)
    own = HFTokenizer.train(TokenizerConfig(kind="hf", vocab_size=270), tmp_path / "text", tmp_path)
    am = CharTokenizer(list("AB"))
    torch.manual_seed(0)
    llm = build_llm(LLMConfig(arch=dict(model_type="llama", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2)), label_tokenizer=own).eval()
    scorer = LMScorer(llm)
    lp = (torch.randn(2, 15, am.vocab_size, generator=torch.Generator().manual_seed(3)) * 2).log_softmax(-1)
    lens = torch.tensor([15, 10])
    plain = CTCTimeSyncSearch(0, beam=5, nbest=5, token_prune_topk=None)(lp, lens, ["x", "y"])
    fusion = DelayedFusion({"lm": scorer}, {"lm": 0.5}, None, "end", retokenizers={"lm": WordRetokenizer(am, own)})
    delayed = CTCTimeSyncSearch(0, beam=5, nbest=5, token_prune_topk=None, fusion=fusion)(lp, lens, ["x", "y"])
    rescored, _ = rescore_nbest(plain, {"lm": scorer}, {"lm": label_reader(scorer, am)})
    for r, d in zip(rerank(rescored, {"ctc": 1.0, "lm": 0.5}), delayed):
        assert [e.tokens for e in r] == [e.tokens for e in d]
        assert [e.scores["lm"] for e in r] == pytest.approx([e.scores["lm"] for e in d], abs=1e-4)
        assert [e.score for e in r] == pytest.approx([e.score for e in d], abs=1e-4)
