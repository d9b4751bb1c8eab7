"""The "integration vs. combination" section of RESULTS.md (asrllm.eval.comparison): each system's
kind from its model kind and search, the best per kind chosen on dev (not on test), the probe's
hallucination metrics next to it, and the WER-vs-RTFx plot."""

from __future__ import annotations

from pathlib import Path

import pytest

from asrllm.bin.make_results import main as make_results
from asrllm.eval.comparison import system_kind
from asrllm.eval.report import write_scoring

REFS = {"u1": "alpha beta gamma delta", "u2": "echo foxtrot golf hotel", "n1": "<noise>"}

SYSTEMS = {  # model: (model_kind, method, search)
    ("am", "greedy"): ("ctc", {"method": "ctc_greedy", "beam": 1}),
    ("am", "beam8"): ("ctc", {"method": "ctc_time_sync", "beam": 8, "fusion": {"schedule": "none", "weights": {}}}),
    ("am", "lw"): ("ctc", {"method": "ctc_time_sync", "beam": 8,
                           "fusion": {"schedule": "label_wise", "weights": {"lm": 0.5}}}),
    ("am", "rescore"): ("ctc", {"rescoring": {"weights": {"lm": 0.5}}, "first_pass": {"nbest": 16}}),
    ("sllm", "beam4"): ("speech_llm", {"method": "label_sync", "beam": 4, "ctc_weight": 0.0}),
    ("sllm", "joint"): ("speech_llm", {"method": "label_sync", "beam": 4, "ctc_weight": 0.3, "pre_beam": 8}),
    ("sllm", "aux_ctc"): ("speech_llm", {"method": "ctc_greedy", "beam": 1}),
}


def test_system_kinds() -> None:
    kinds = {key: system_kind(kind, search) for key, (kind, search) in SYSTEMS.items()}
    assert kinds == {("am", "greedy"): "CTC", ("am", "beam8"): "CTC", ("am", "lw"): "CTC + LM",
                     ("am", "rescore"): "CTC + LM", ("sllm", "beam4"): "speech LLM",
                     ("sllm", "joint"): "speech LLM + CTC", ("sllm", "aux_ctc"): None}
    assert system_kind("aed", {"method": "label_sync", "ctc_weight": 0.5}) == "AED + CTC"
    assert system_kind(None, {"method": "label_sync"}) is None  # metrics from before model_kind was recorded


def test_best_per_kind_is_chosen_on_dev_and_shows_the_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hyps = {  # (model, method, set) -> hypothesis of u1 (u2 always right); the probe's noise gets words
        ("am", "greedy", "dev"): "alpha beta gamma", ("am", "greedy", "test"): "alpha beta gamma delta",
        ("am", "beam8", "dev"): "alpha beta gamma delta", ("am", "beam8", "test"): "alpha beta",  # dev-best, test-worse
    }
    for (model, method), (kind, search) in SYSTEMS.items():
        for test_set in ("dev", "test", "probe"):
            u1 = hyps.get((model, method, test_set), "alpha beta gamma delta")
            noise = "la la la la" if method == "beam4" else ""
            write_scoring(tmp_path / "exp" / model / f"decode_{test_set}_{method}", REFS,
                          {"u1": u1, "u2": "echo foxtrot golf hotel", "n1": noise}, 10.0, 0.5 if kind == "ctc" else 2.0,
                          extra={"model": model, "method": method, "test_set": test_set, "model_kind": kind,
                                 "search": search, "command": "x"})
    monkeypatch.chdir(tmp_path)
    assert make_results(["exp", "--out", "RESULTS.md"]) == 0
    md = (tmp_path / "RESULTS.md").read_text()
    section = md[md.index("## Integration vs. combination"):md.index("## Summary")]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| kind")]
    assert [r.split(" | ")[0:3] for r in rows] == [["| CTC", "am", "beam8"], ["| CTC + LM", "am", "lw"],
                                                   ["| speech LLM", "sllm", "beam4"],
                                                   ["| speech LLM + CTC", "sllm", "joint"]]
    assert "| CTC | am | beam8 | 0.00 | 0.00 | 25.00 | 0 | 0 | 0 | 20.0 |" in section  # dev, probe, test; RTFx
    assert "| speech LLM | sllm | beam4 | 0.00 | 0.00 | 0.00 | 33.33 | 33.33 | 4 | 5.0 |" in section  # la la la la
    assert "![WER against RTFx of every system](RESULTS_wer_rtfx.png)" in section
    assert (tmp_path / "RESULTS_wer_rtfx.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rows_of_gone_experiments_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for model in ("a", "b"):
        write_scoring(tmp_path / "exp" / model / "decode_dev_greedy", REFS, {"u1": "alpha", "u2": "", "n1": ""}, 10.0, 1.0,
                      extra={"model": model, "method": "greedy", "test_set": "dev", "command": f"run {model}-model"})
    assert make_results(["exp", "--out", "RESULTS.md"]) == 0
    first = (tmp_path / "RESULTS.md").read_text()
    assert (tmp_path / "RESULTS.json").is_file()
    (tmp_path / "RESULTS.json").rename(tmp_path / "old.json")
    import shutil

    shutil.rmtree(tmp_path / "exp" / "a")  # a's experiment is gone (another session)
    assert make_results(["exp", "--out", "RESULTS.md"]) == 0
    assert "run a-model" not in (tmp_path / "RESULTS.md").read_text()
    assert make_results(["exp", "--out", "RESULTS.md", "--keep", "old.json"]) == 0
    assert (tmp_path / "RESULTS.md").read_text() == first  # a's row from the kept file, b's from its dir
    (tmp_path / "bad.json").write_text("{}")
    assert make_results(["exp", "--out", "RESULTS.md", "--keep", "bad.json"]) == 1
