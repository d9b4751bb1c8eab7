"""RESULTS.md from the metrics.json files of decode directories (STYLE.md R15, icefall RESULTS.md style).

Every number in the tables sits next to the exact command that produced it (metrics.json
"command"). Order is deterministic: test sets by name, rows by (model, method, directory).
Language models get a perplexity table from `<exp>/<model>/ppl_<set>/metrics.json`
(asrllm.bin.perplexity): one row per model, word and token perplexity per set.

Where a row's metrics.json lacks "test_set", "model" or "method", they are taken from the path
`<exp>/<model>/decode_<test_set...>/metrics.json` (test set = directory name after "decode_").

WERs are only comparable when scored with the same normaliser (asrllm.eval.normalizer), so each
metrics.json must name its normaliser ("normalizer", written by asrllm.eval.report since scoring was
versioned; an older file is an error asking to re-run scoring), every WER table says which one it
used, and rows scored with different normalisers are refused rather than put into one table.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from asrllm.config import atomic_write_text
from asrllm.eval.comparison import comparison_section, system_kind


@dataclasses.dataclass(frozen=True)
class ResultRow:
    """One decode directory's headline numbers (rates in %)."""

    decode_dir: str  # as given / found, POSIX form
    test_set: str
    model: str
    method: str
    normalizer: str  # the scoring signature: name of the leaderboard normaliser (asrllm.eval.normalizer)
    wer: float | None
    sub: float | None
    dele: float | None
    ins: float | None
    rtfx: float | None
    num_utts: int | None
    command: str | None  # the decoding command
    train_command: str | None  # the command that trained the model
    num_params: int | None  # model parameters
    checkpoint: str | None  # which weights were decoded (e.g. "average")
    train_seconds: float | None = None  # wall-clock training time (the trainer's train_log.jsonl)
    lm_calls: float | None = None  # LLM forward calls per utterance (utterance-calls / utts), all fused LMs
    lm_tokens: float | None = None  # tokens fed to the LLMs per utterance
    search: str = "–"  # the search in brief (describe_search)
    kind: str | None = None  # the system's kind for the comparison table (asrllm.eval.comparison)
    hallucination: dict[str, Any] = dataclasses.field(default_factory=dict)  # asrllm.eval.hallucination metrics
    by_category: dict[str, Any] = dataclasses.field(default_factory=dict)  # the same per utt2category group


def find_metrics(paths: Iterable[str | Path]) -> list[Path]:
    """metrics.json files under `paths`, sorted.

    A path may be a decode dir (`decode_*`, holding metrics.json) or its metrics.json, a model dir
    (decode_*/metrics.json) or an experiment root (*/decode_*/metrics.json).
    """
    return _find_metrics(paths, "decode_")


def _find_metrics(paths: Iterable[str | Path], prefix: str) -> list[Path]:
    """metrics.json of the `<prefix>*` dirs that `paths` are, or hold one or two levels down, sorted."""
    found: set[Path] = set()
    for p in map(Path, paths):
        if p.name == "metrics.json" and p.parent.name.startswith(prefix):
            found.add(p)
        elif p.name.startswith(prefix) and (p / "metrics.json").is_file():
            found.add(p / "metrics.json")
        else:
            found.update(p.glob(f"{prefix}*/metrics.json"))
            found.update(p.glob(f"*/{prefix}*/metrics.json"))
    return sorted(found)


def _read_metrics(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read metrics: {e}") from None


def load_row(metrics_path: str | Path) -> ResultRow:
    """Read one metrics.json; errors name the file. One without the normaliser's name is an error."""
    path = Path(metrics_path)
    m = _read_metrics(path)
    if not isinstance(m.get("normalizer"), str):
        raise ValueError(
            f"{path}: records no 'normalizer', so what its WER was scored with is unknown (scored before "
            "scoring was versioned); re-run scoring (stage 5, python -m asrllm.bin.score) for this decode dir"
        )
    decode_dir = path.parent
    dir_set = decode_dir.name[len("decode_") :] if decode_dir.name.startswith("decode_") else decode_dir.name
    costs, utts = m.get("lm_costs") or {}, m.get("num_utts") or 0
    per_utt = (lambda key: sum(c.get(key, 0) for c in costs.values()) / utts) if costs and utts else None
    return ResultRow(
        decode_dir=decode_dir.as_posix(),
        test_set=str(m.get("test_set") or dir_set),
        model=str(m.get("model") or decode_dir.parent.name),
        method=str(m.get("method") or "-"),
        normalizer=m["normalizer"],
        wer=m.get("wer"),
        sub=m.get("sub"),
        dele=m.get("del"),
        ins=m.get("ins"),
        rtfx=m.get("rtfx"),
        num_utts=m.get("num_utts"),
        command=m.get("command"),
        train_command=m.get("train_command"),
        num_params=m.get("num_params"),
        checkpoint=m.get("checkpoint"),
        train_seconds=m.get("train_seconds"),
        lm_calls=per_utt("utterance_calls") if per_utt else None,
        lm_tokens=per_utt("tokens") if per_utt else None,
        search=describe_search(m.get("search")),
        kind=system_kind(m.get("model_kind"), m.get("search")),
        hallucination=m.get("hallucination") or {},
        by_category=m.get("by_category") or {},
    )


def save_rows(path: str | Path, rows: Sequence[ResultRow], ppl_rows: Sequence[PerplexityRow]) -> None:
    """The rows behind a RESULTS.md as JSON (what `load_saved_rows` reads back), written atomically."""
    data = {"results": [dataclasses.asdict(r) for r in rows], "perplexities": [dataclasses.asdict(r) for r in ppl_rows]}
    atomic_write_text(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def load_saved_rows(path: str | Path) -> tuple[list[ResultRow], list[PerplexityRow]]:
    """The rows `save_rows` wrote to `path`; an unreadable file is a ValueError naming it."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return [ResultRow(**r) for r in data["results"]], [PerplexityRow(**r) for r in data["perplexities"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not the rows of a RESULTS.md written by make_results ({e})") from None


def describe_search(search: Any) -> str:
    """A decode's search options (metrics.json "search": a SearchConfig, or rescoring's
    {"rescoring", "first_pass"}) in brief: "beam 8; delayed v2 every 5: tiny 0.9, prior 0.6"."""
    if not isinstance(search, dict):
        return "–"
    if "rescoring" in search:
        r, first = search["rescoring"], search.get("first_pass") or {}
        scales = ", ".join([*(f"{k} {v:g}" for k, v in r.get("weights", {}).items()),
                            *([f"prior {r['prior_scale']:g}"] if r.get("prior_scale") else [])])
        return f"rescoring {first.get('nbest', '?')}-best: {scales}"
    if search.get("method") == "ctc_greedy":
        return "greedy"
    text = f"beam {search.get('beam')}"
    for key, what in (("blank_collapse", "blank collapse"), ("soft_collapse", "soft collapse")):
        if search.get(key) is not None:
            text += f", {what} {search[key]:g}"
    fusion = search.get("fusion") or {}
    schedule = fusion.get("schedule", "none")
    if schedule == "delayed":
        when = {"every": f"every {fusion.get('every', 1)}", "end": "at the end",
                "shortest": "shortest hyp"}[fusion.get("trigger", "every")]
        schedule = f"delayed {'v2' if fusion.get('retokenize') else 'v1'} {when}"
    scales = [*(f"{k} {v:g}" for k, v in (fusion.get("weights") or {}).items()),
              *([f"prior {fusion['prior_scale']:g}"] if fusion.get("prior_scale") else [])]
    if scales:
        text += f"; {schedule.replace('_', '-') if schedule != 'none' else 'CTC'}: {', '.join(scales)}"
    if search.get("ctc_weight"):
        text += f"; joint CTC {search['ctc_weight']:g}"
        if search.get("ctc_model"):
            text += f" ({search['ctc_model']})"
    if search.get("pre_beam") is not None:
        text += f", pre-beam {search['pre_beam']}{' + EOS' if search.get('pre_beam_eos') else ''}"
    if search.get("ctc_window") is not None:
        text += f", window {search['ctc_window']}"
    return text


@dataclasses.dataclass(frozen=True)
class PerplexityRow:
    """One perplexity directory's numbers (asrllm.bin.perplexity)."""

    ppl_dir: str  # as found, POSIX form
    test_set: str
    model: str
    word_ppl: float  # exp(NLL / (words + sentences))
    token_ppl: float  # exp(NLL / predicted tokens)
    vocab_size: int | None  # the LM's label vocabulary
    num_unk: int | None  # <unk> tokens in the text (they make perplexities look better than they are)
    num_params: int | None
    checkpoint: str | None
    command: str | None  # the perplexity command
    train_command: str | None  # the command that trained the LM; None for zero-shot models
    train_seconds: float | None  # wall-clock time of that training job


def find_ppl_metrics(paths: Iterable[str | Path]) -> list[Path]:
    """ppl_*/metrics.json files under `paths` (exp roots, model dirs or ppl dirs), sorted."""
    return _find_metrics(paths, "ppl_")


def load_ppl_row(metrics_path: str | Path) -> PerplexityRow:
    """Read one perplexity metrics.json; errors name the file."""
    path = Path(metrics_path)
    m = _read_metrics(path)
    try:
        return PerplexityRow(
            ppl_dir=path.parent.as_posix(),
            test_set=str(m["test_set"]),
            model=str(m["model"]),
            word_ppl=float(m["word_ppl"]),
            token_ppl=float(m["token_ppl"]),
            vocab_size=m.get("vocab_size"),
            num_unk=m.get("num_unk"),
            num_params=m.get("num_params"),
            checkpoint=m.get("checkpoint"),
            command=m.get("command"),
            train_command=m.get("train_command"),
            train_seconds=m.get("train_seconds"),
        )
    except (ValueError, KeyError) as e:
        raise ValueError(f"{path}: not perplexity metrics: {e!r}") from None


def _perplexities(rows: list[PerplexityRow]) -> list[str]:
    """Model x set perplexity table, then per model its training and evaluation commands."""
    sets = sorted({r.test_set for r in rows})
    models = sorted({r.model for r in rows})
    by_key = {(r.model, r.test_set): r for r in rows}
    out = [
        "## Language models: perplexity",
        "",
        "Word perplexity = exp(NLL / (words + sentences)) compares label units (it divides the NLL of the",
        "same text by the same count); token perplexity = exp(NLL / tokens incl. EOS) is per label unit.",
        "Models without a training command were evaluated as built (zero-shot: pre-trained weights, and",
        "for a re-vocabularised LLM its freshly initialised label embeddings).",
        "",
    ]
    columns = [("#", "r"), ("model", "l"), ("V", "r"), ("params", "r"), ("train time", "r")]
    columns += [(f"{s} {unit} ppl", "r") for s in sets for unit in ("word", "token")]
    table = []
    for n, model in enumerate(models, 1):
        first = next(r for r in rows if r.model == model)
        vocab = "–" if first.vocab_size is None else str(first.vocab_size)
        took = "–" if first.train_seconds is None else f"{first.train_seconds / 60:.1f} min"
        cells = [str(n), model, vocab, _params(first.num_params), took]
        for s in sets:
            r = by_key.get((model, s))
            cells += [_num(r.word_ppl if r else None), _num(r.token_ppl if r else None, 3)]
        table.append(cells)
    out += _table(columns, table) + [""]
    for n, model in enumerate(models, 1):
        group = [by_key[(model, s)] for s in sets if (model, s) in by_key]
        first = group[0]
        unk = sum(r.num_unk or 0 for r in group)
        note = f" ({unk} `<unk>` tokens in the evaluated text)" if unk else ""
        out += [f"{n}. `{model}`, checkpoint `{first.checkpoint or '–'}`{note}", "", "   ```bash"]
        out.append(f"   {first.train_command}" if first.train_command else "   # not trained here (zero-shot)")
        out += [f"   {c or '# command not recorded'}" for c in dict.fromkeys(r.command for r in group)]  # sets share one
        out += ["   ```", ""]
    return out


def _num(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _categories(by_category: dict[str, Any]) -> str:
    """`long 57.0 · noise 16.4 w · trunc 18.9`: each category's WER, or its words on silence where
    nothing is scored (noise-only audio)."""
    if not by_category:
        return "–"
    cells = []
    for name, m in sorted(by_category.items()):
        if m.get("wer") is not None:
            cells.append(f"{name} {m['wer']:.1f}")
        else:
            cells.append(f"{name} {_num((m.get('hallucination') or {}).get('words_on_silence'), 1)} w")
    return " · ".join(cells)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _params(num_params: int | None) -> str:
    return "–" if num_params is None else f"{num_params / 1e6:.2f}M"


def _table(columns: Sequence[tuple[str, str]], rows: Iterable[Sequence[str]]) -> list[str]:
    """Markdown table lines: columns are (header, "l" | "r" alignment); every cell is escaped."""
    lines = ["| " + " | ".join(_cell(h) for h, _ in columns) + " |",
             "|" + "".join("---|" if align == "l" else "---:|" for _, align in columns)]
    return lines + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]


def _summary(rows: list[ResultRow], sets: list[str], scoring: str) -> list[str]:
    """Model × test-set WER table with the unweighted mean (the leaderboard's average)."""
    systems = sorted({(r.model, r.method) for r in rows})
    best: dict[tuple[str, str, str], ResultRow] = {}
    for r in rows:  # several dirs for one (system, set): keep the first in order
        best.setdefault((r.model, r.method, r.test_set), r)
    table = []
    for model, method in systems:
        found = [best[(model, method, s)] for s in sets if (model, method, s) in best]
        wers = [best[(model, method, s)].wer if (model, method, s) in best else None for s in sets]
        table.append([model, method, *(_num(w) for w in wers), _num(_mean(wers) if len(found) == len(sets) else None),
                      _num(_mean([r.rtfx for r in found]), 1), _num(_mean([r.lm_calls for r in found]), 1),
                      _num(_mean([r.lm_tokens for r in found]), 1), found[0].search])
    columns = [("model", "l"), ("method", "l"), *((s, "r") for s in sets), ("mean", "r"), ("RTFx", "r"),
               ("LLM calls/utt", "r"), ("LLM tokens/utt", "r"), ("search", "l")]
    note = ("The mean is unweighted over the sets (as the Open ASR leaderboard averages); RTFx and the LLM "
            "columns are means over the sets; – = missing.")
    return ["## Summary: WER [%] per test set", "", scoring, "", *_table(columns, table), "", note, ""]


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known and len(known) == len(values) else None


def _models(rows: list[ResultRow]) -> list[str]:
    """Per model: size, decoded checkpoint, training time and the exact training command (icefall RESULTS.md style)."""
    out = ["## Models", ""]
    for model in sorted({r.model for r in rows}):
        r = next(r for r in rows if r.model == model)
        took = "" if r.train_seconds is None else f" in {r.train_seconds / 60:.1f} min"
        out += [f"- `{model}`: {_params(r.num_params)} parameters, checkpoint `{r.checkpoint or '–'}`, trained{took} with", "",
                "  ```bash", f"  {r.train_command or '# command not recorded'}", "  ```", ""]
    return out


def check_one_normalizer(rows: Sequence[ResultRow]) -> str | None:
    """The normaliser all `rows` were scored with (None for no rows); a ValueError naming each
    normaliser and one decode dir scored with it when they differ."""
    example: dict[str, str] = {}
    for r in sorted(rows, key=lambda r: r.decode_dir):
        example.setdefault(r.normalizer, r.decode_dir)
    if len(example) > 1:
        which = ", ".join(f"{name} (e.g. {example[name]})" for name in sorted(example))
        raise ValueError(
            f"rows scored with different normalisers cannot share a table: {which}; "
            "re-score them with one --normalizer (python -m asrllm.bin.score) or make separate tables"
        )
    return next(iter(example), None)


def render_results(rows: list[ResultRow], title: str = "RESULTS", ppl_rows: Sequence[PerplexityRow] = (),
                   select_on: str = "dev", probe: str | None = None, plot_file: str | None = None) -> str:
    """Markdown: the best system of each kind (asrllm.eval.comparison: chosen on `select_on`, with
    the `probe` set's hallucination metrics and the `plot_file` image, when given), a summary (when
    there are several test sets), then per test set a table + commands, then the perplexity table
    of the language models. Every WER table names its normaliser; rows scored with different
    normalisers are a ValueError (`check_one_normalizer`)."""
    scoring = f"Scoring: {check_one_normalizer(rows)} normaliser."  # under each WER table heading
    rows = sorted(rows, key=lambda r: (r.test_set, r.model, r.method, r.decode_dir))
    sets = sorted({r.test_set for r in rows})
    out = [
        f"# {title}",
        "",
        "Generated by `python -m asrllm.bin.make_results` from the metrics.json of decode and perplexity directories; "
        "do not edit by hand.",
        "WER/Sub/Del/Ins in % of reference words after the Open ASR leaderboard's text normaliser of the "
        "version named under each table (asrllm.eval.normalizer); over-long / loops / empty = % of utterances whose "
        "hypothesis has > 1.5x the reference's words, repeats a 1-4 word run 3 times in a row, is empty for a "
        "non-empty reference (asrllm.eval.hallucination); RTFx = audio seconds / decoding seconds; "
        "LLM calls/utt = LLM forward calls an utterance took part in, LLM tokens/utt = tokens fed to the LLM "
        "(summed over the fused LMs; – = no LM).",
        "",
    ]
    if not rows and not ppl_rows:
        return "\n".join(out + ["No results yet.", ""])
    out += comparison_section(rows, sets, select_on, probe if probe in sets else None, plot_file)
    if len(sets) > 1:
        out += _summary(rows, sets, scoring)
    out += _models(rows) if rows else []
    for test_set in sets:
        group = [r for r in rows if r.test_set == test_set]
        columns = [("#", "r"), ("model", "l"), ("method", "l"),
                   *((name, "r") for name in ("WER", "Sub", "Del", "Ins", "over-long", "loops", "empty", "RTFx",
                                              "utts", "LLM calls/utt", "LLM tokens/utt"))]
        table = [[str(n), r.model, r.method, _num(r.wer), _num(r.sub), _num(r.dele), _num(r.ins),
                  *(_num(r.hallucination.get(key)) for key in ("over_long", "loops", "empty")), _num(r.rtfx, 1),
                  "–" if r.num_utts is None else str(r.num_utts), _num(r.lm_calls, 1), _num(r.lm_tokens, 1)]
                 for n, r in enumerate(group, 1)]
        if any(r.by_category for r in group):
            columns.append(("by category: WER / words on silence", "l"))
            for row, r in zip(table, group):
                row.append(_categories(r.by_category))
        out += [f"## {test_set}", "", scoring, "", *_table(columns, table), ""]
        for n, r in enumerate(group, 1):
            command = r.command or "# command not recorded"
            out += [f"{n}. `{r.decode_dir}`", "", "   ```bash", f"   {command}", "   ```", ""]
    if ppl_rows:
        out += _perplexities(list(ppl_rows))
    return "\n".join(out)
