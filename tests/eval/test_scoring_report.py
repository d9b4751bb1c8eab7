"""write_scoring: the files of a decode directory, and RESULTS.md built from them; the scoring signature."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from asrllm.bin import score
from asrllm.bin.make_results import main as make_results
from asrllm.eval.report import write_scoring
from asrllm.eval.results_table import find_metrics, find_ppl_metrics, load_ppl_row, load_row, render_results

REFS = {"u2": "The colour is red.", "u1": "Hello there, world", "u3": "Uh."}
HYPS = {"u2": "the color is read", "u1": "hello world foo", "u3": "hmm yes"}


def test_write_scoring_files(tmp_path: Path) -> None:
    out = tmp_path / "decode_dev_beam4"
    m = write_scoring(out, REFS, HYPS, audio_seconds=12.0, decode_seconds=0.5,
                      extra={"command": "python -m asrllm.bin.decode --beam 4", "method": "beam4", "test_set": "dev"})
    # u1: hello [there→world] [world→foo]... jiwer: C=1 S=2 D=0 I=0; u2: C=3 S=1; u3 dropped
    assert m["counts"] == {"corr": 4, "sub": 3, "del": 0, "ins": 0, "ref_words": 7}
    assert m["wer"] == pytest.approx(100 * 3 / 7, abs=1e-4)
    assert (m["num_utts"], m["dropped_empty_refs"], m["dropped_ids"]) == (2, 1, ["u3"])
    assert m["rtfx"] == 24.0 and m["sent_err"] == 100.0
    assert m["normalizer"] == "open_asr_2026_03"  # the default: the leaderboard version the paper used
    assert json.loads((out / "metrics.json").read_text()) == m
    assert (out / "ref.txt").read_text() == "u1 Hello there, world\nu2 The colour is red.\nu3 Uh.\n"
    assert (out / "hyp.txt").read_text().splitlines()[0] == "u1 hello world foo"
    per_utt = (out / "per_utt.txt").read_text().splitlines()
    assert per_utt[1] == "u1\t3\t1\t2\t0\t0\thello there world\thello world foo"
    assert per_utt[-1] == "# dropped\tu3"
    result = (out / "result.txt").read_text()
    assert "| SPKR    |  # Snt    # Wrd |   Corr    Sub    Del    Ins    Err  S.Err |" in result
    assert "| Sum/Avg |      2        7 |   57.1   42.9    0.0    0.0   42.9  100.0 |" in result
    assert result.endswith("Normaliser: open_asr_2026_03\n")
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temp files
    with pytest.raises(ValueError, match="'wer'"):
        write_scoring(out, REFS, HYPS, 1.0, 1.0, extra={"wer": 1})
    with pytest.raises(ValueError, match="'normalizer'"):
        write_scoring(out, REFS, HYPS, 1.0, 1.0, extra={"normalizer": "mine"})
    with pytest.raises(ValueError, match="unknown normalizer 'whisper'; known: open_asr_2026_03, open_asr_2026_08"):
        write_scoring(out, REFS, HYPS, 1.0, 1.0, normalizer="whisper")


def test_normalizer_is_recorded_and_used(tmp_path: Path) -> None:
    refs, hyps = {"u1": "Uh-huh, it is 3:07 p.m."}, {"u1": "huh it is 3 7 p m"}  # the March reference
    march = write_scoring(tmp_path / "decode_a", refs, hyps, 1.0, 1.0)
    august = write_scoring(tmp_path / "decode_b", refs, hyps, 1.0, 1.0, normalizer="open_asr_2026_08")
    assert (march["normalizer"], march["wer"]) == ("open_asr_2026_03", 0.0)
    assert (august["normalizer"], august["wer"]) == ("open_asr_2026_08", 75.0)  # "it is 37 pm" vs "huh it is 37 p m"
    assert "Normaliser: open_asr_2026_08" in (tmp_path / "decode_b" / "result.txt").read_text()
    assert load_row(tmp_path / "decode_b" / "metrics.json").normalizer == "open_asr_2026_08"


def test_results_md(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exp = tmp_path / "exp"
    for model, test_set, method, hyp_u1 in [
        ("ctc", "test", "greedy", "hello world foo"),
        ("ctc", "dev", "greedy", "hello there world"),
        ("ctc", "dev", "beam4", "hello there"),
        ("ctc_lm", "dev", "labelwise", "hello there world"),
    ]:
        costs = {"lm": {"calls": 3, "tokens": 50, "utterance_calls": 9}} if model == "ctc_lm" else {}
        write_scoring(exp / model / f"decode_{test_set}_{method}", REFS, {**HYPS, "u1": hyp_u1}, 10.0, 0.1,
                      extra={"command": f"run.sh --model {model} --method {method}", "method": method,
                             "model": model, "test_set": test_set, "lm_costs": costs,
                             "train_seconds": 90.0 if model == "ctc" else None})
    files = find_metrics([exp])
    assert len(files) == 4 and files == sorted(files)
    md = render_results([load_row(f) for f in files])
    assert md == render_results([load_row(f) for f in reversed(files)])  # order does not depend on input
    assert "| ctc | greedy | 14.29 | 42.86 | 28.57 |" in md  # summary: dev 1/7, test 3/7, unweighted mean
    assert "| 1 | ctc | beam4 | 28.57 | 14.29 | 14.29 | 0.00 | 33.33 | 0.00 | 0.00 | 100.0 | 2 | – | – |" in md
    assert "run.sh --model ctc_lm --method labelwise" in md
    assert "| 3 | ctc_lm | labelwise | 14.29 | 14.29 | 0.00 | 0.00 | 33.33 | 0.00 | 0.00 | 100.0 | 2 | 4.5 | 25.0 |" in md
    assert md.index("## dev") < md.index("## test")
    assert "- `ctc`: – parameters, checkpoint `–`, trained in 1.5 min with" in md  # the run time of each model
    assert "- `ctc_lm`: – parameters, checkpoint `–`, trained with" in md
    for heading in ("## Summary: WER [%] per test set", "## dev", "## test"):  # each WER table names it
        assert f"{heading}\n\nScoring: open_asr_2026_03 normaliser.\n\n| " in md

    monkeypatch.chdir(tmp_path)
    assert make_results(["exp", "--out", "RESULTS.md", "--title", "toy"]) == 0
    text = (tmp_path / "RESULTS.md").read_text()
    assert text.startswith("# toy") and "`exp/ctc/decode_dev_beam4`" in text


def test_row_fields_fall_back_to_path(tmp_path: Path) -> None:
    d = tmp_path / "exp" / "am" / "decode_test_clean"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"wer": 5.0, "normalizer": "open_asr_2026_03"}))
    row = load_row(d / "metrics.json")
    assert (row.model, row.test_set, row.method, row.command) == ("am", "test_clean", "-", None)
    assert "# command not recorded" in render_results([row])
    (d / "metrics.json").write_text("{oops")
    with pytest.raises(ValueError, match="metrics.json"):
        load_row(d / "metrics.json")


def test_metrics_without_normalizer_ask_for_rescoring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "exp" / "am" / "decode_test_greedy"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"wer": 5.0, "command": "decode"}))  # before scoring was versioned
    with pytest.raises(ValueError, match=r"decode_test_greedy/metrics.json: records no 'normalizer'.*re-run scoring \(stage 5"):
        load_row(d / "metrics.json")
    monkeypatch.chdir(tmp_path)
    assert make_results(["exp", "--out", "RESULTS.md"]) == 1 and not (tmp_path / "RESULTS.md").exists()


def test_rows_of_different_normalizers_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exp = tmp_path / "exp"
    for model, name in [("a", "open_asr_2026_03"), ("b", "open_asr_2026_08"), ("c", "open_asr_2026_08")]:
        write_scoring(exp / model / "decode_dev_greedy", REFS, HYPS, 1.0, 1.0, normalizer=name)
    rows = [load_row(f) for f in find_metrics([exp])]
    with pytest.raises(ValueError, match="open_asr_2026_03 \\(e.g. .*/exp/a/decode_dev_greedy\\), "
                                         "open_asr_2026_08 \\(e.g. .*/exp/b/decode_dev_greedy\\)"):
        render_results(rows)
    assert "Scoring: open_asr_2026_08 normaliser." in render_results(rows[1:])
    monkeypatch.chdir(tmp_path)
    assert make_results(["exp", "--out", "RESULTS.md"]) == 1 and not (tmp_path / "RESULTS.md").exists()
    assert make_results(["exp/b", "exp/c", "--out", "RESULTS.md"]) == 0


def test_score_cli_normalizer_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ddir = tmp_path / "exp" / "am" / "decode_dev_greedy"
    (ddir / "parts").mkdir(parents=True)
    (ddir / "parts" / "0-of-1.hyp.txt").write_text("u1 at 3 7 p m\n")
    (ddir / "parts" / "0-of-1.nbest.jsonl").write_text("")
    info = {"audio_seconds": 2.0, "decode_seconds": 1.0, "method": "greedy", "checkpoint": "average",
            "num_params": 10, "search": {}, "command": "python -m asrllm.bin.decode"}
    (ddir / "parts" / "0-of-1.info.json").write_text(json.dumps(info))
    utt = type("Utt", (), {"id": "u1", "text": "At 3:07 p.m."})
    monkeypatch.setattr(score, "read_datadir", lambda data: [utt])  # references without audio
    monkeypatch.setattr(score, "check_current", lambda *args: None)  # no model: tests/search/test_decode_cli.py
    argv = ["--decode-dir", str(ddir), "--data", str(tmp_path / "data" / "dev")]
    assert score.main(argv) == 0
    m = json.loads((ddir / "metrics.json").read_text())
    assert (m["normalizer"], m["wer"], m["test_set"]) == ("open_asr_2026_03", 0.0, "dev")
    assert score.main([*argv, "--normalizer", "open_asr_2026_08"]) == 0
    m = json.loads((ddir / "metrics.json").read_text())
    assert (m["normalizer"], m["wer"]) == ("open_asr_2026_08", pytest.approx(200 / 3, abs=1e-3))  # "at 37 pm" vs "at 37 p m"
    with pytest.raises(SystemExit):
        score.main([*argv, "--normalizer", "whisper"])


def test_perplexity_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exp = tmp_path / "exp"
    for model, test_set, word_ppl, train_cmd in [
        ("lm_ft", "dev", 20.5, "python -m asrllm.bin.train --config ft.yaml"),
        ("lm_ft", "test", 21.25, "python -m asrllm.bin.train --config ft.yaml"),
        ("smollm2_zeroshot", "dev", 300.0, None),
    ]:
        out = exp / model / f"ppl_{test_set}"
        out.mkdir(parents=True)
        (out / "metrics.json").write_text(json.dumps({
            "test_set": test_set, "model": model, "word_ppl": word_ppl, "token_ppl": 3.5, "vocab_size": 256,
            "num_unk": 2 if model == "lm_ft" else 0, "num_params": 2_000_000, "checkpoint": "latest",
            "command": f"python -m asrllm.bin.perplexity --model-dir exp/{model}", "train_command": train_cmd,
            "train_seconds": 90.0 if train_cmd else None,
        }))
    files = find_ppl_metrics([exp])
    assert len(files) == 3 and find_metrics([exp]) == []  # perplexities are not WER rows
    assert find_ppl_metrics([files[0].parent]) == [files[0]] and find_metrics([files[0].parent, files[1]]) == []
    md = render_results([], ppl_rows=[load_ppl_row(f) for f in files])
    assert "| 1 | lm_ft | 256 | 2.00M | 1.5 min | 20.50 | 3.500 | 21.25 | 3.500 |" in md
    assert "| 2 | smollm2_zeroshot | 256 | 2.00M | – | 300.00 | 3.500 | – | – |" in md
    assert "python -m asrllm.bin.train --config ft.yaml" in md and "# not trained here (zero-shot)" in md
    assert "(4 `<unk>` tokens in the evaluated text)" in md and "No results yet" not in md

    monkeypatch.chdir(tmp_path)
    assert make_results(["exp", "--out", "RESULTS.md"]) == 0
    assert "## Language models: perplexity" in (tmp_path / "RESULTS.md").read_text()


def test_describe_search_in_brief() -> None:
    import dataclasses

    from asrllm.eval.results_table import describe_search
    from asrllm.search import FusionConfig, SearchConfig

    def brief(**kw: object) -> str:
        return describe_search(dataclasses.asdict(SearchConfig(**kw)))  # type: ignore[arg-type]

    assert brief(method="ctc_greedy", beam=1) == "greedy"
    assert brief(beam=8) == "beam 8"
    assert brief(beam=8, fusion=FusionConfig(prior_scale=0.3)) == "beam 8; CTC: prior 0.3"
    assert brief(beam=8, soft_collapse=0.8, fusion=FusionConfig(schedule="label_wise", weights={"lm": 0.55},
                                                                prior_scale=0.45)) == \
        "beam 8, soft collapse 0.8; label-wise: lm 0.55, prior 0.45"
    assert brief(fusion=FusionConfig(schedule="delayed", retokenize=True, every=20, weights={"lm": 0.9})) == \
        "beam 8; delayed v2 every 20: lm 0.9"
    assert brief(fusion=FusionConfig(schedule="delayed", trigger="end", weights={"lm": 1.0})) == \
        "beam 8; delayed v1 at the end: lm 1"
    rescoring = {"rescoring": {"weights": {"lm": 0.5}, "prior_scale": 0.3}, "first_pass": {"nbest": 16}}
    assert describe_search(rescoring) == "rescoring 16-best: lm 0.5, prior 0.3"


def test_a_hypothesis_with_newline_tokens_stays_one_kaldi_line() -> None:
    """An LLM can emit newline or tab tokens; the decode CLI writes each hypothesis on one line, so
    that the merged hyp.txt has exactly one entry per utterance (it once had an entry with id '')."""
    from asrllm.eval.decode_dir import one_line

    assert one_line(" hello\nworld\t again \n") == "hello world again"
    assert one_line("\n") == ""


def test_metrics_per_category_equal_scoring_each_category_alone(tmp_path: Path) -> None:
    refs = {**REFS, "u4": "<noise>", "u5": "a b c"}
    hyps = {**HYPS, "u4": "oh no no", "u5": "a b c c c"}
    categories = {"u1": "long", "u2": "trunc", "u3": "long", "u4": "noise", "u5": "trunc"}
    m = write_scoring(tmp_path / "all", refs, hyps, audio_seconds=1.0, decode_seconds=1.0, categories=categories)
    assert sorted(m["by_category"]) == ["long", "noise", "trunc"]
    for name, got in m["by_category"].items():
        ids = [u for u in refs if categories[u] == name]
        alone = write_scoring(tmp_path / name, {u: refs[u] for u in ids}, {u: hyps[u] for u in ids},
                              audio_seconds=1.0, decode_seconds=1.0)
        wer = alone["wer"] if alone["counts"]["ref_words"] else None  # nothing scored: no WER, not 0
        assert got == {"num_utts": len(ids), "wer": wer, "del": alone["del"], "ins": alone["ins"],
                       "hallucination": alone["hallucination"]}
    assert m["by_category"]["noise"]["wer"] is None and m["by_category"]["noise"]["hallucination"]["words_on_silence"] == 3
    assert "by_category" not in write_scoring(tmp_path / "none", refs, hyps, audio_seconds=1.0, decode_seconds=1.0)
    long_wer = m["by_category"]["long"]["wer"]
    text = render_results([load_row(tmp_path / "all" / "metrics.json")])
    assert "by category: WER / words on silence" in text
    assert f"long {long_wer:.1f} · noise 3.0 w · trunc {m['by_category']['trunc']['wer']:.1f}" in text
