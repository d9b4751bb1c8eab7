"""Benchmark: asrllm's joint speech-LLM + CTC label-synchronous search against ESPnet's
BatchBeamSearch + CTCPrefixScorer, on the SAME trained speech LLM and the SAME CTC log-probs (issue 10).

    cd egs/mini_synth/asr1 && python ../../../benchmarks/bench_espnet_joint.py --recipe . --model exp/<speech LLM> \\
        [--checkpoint average] [--set test] [--max-utts 100] [--beams 4] [--pre-beams 8] \\
        [--ctc-weights 0.3] [--batch-utts 8] [--max-length-ratio 1.0] [--max-length N] \\
        [--venv /tmp/espnet/venv] [--work-dir /tmp/espnet/work] [--out results.json]
    python benchmarks/bench_espnet_joint.py --self-check     # tiny untrained model: must be 100 % identical

Run with the project's venv, from the recipe dir (a model's relative paths, e.g. its LLM source,
are relative to it). The model must be a speech LLM trained with an aux CTC head
(model.aux_ctc_weight > 0). ESPnet lives in a venv of its own (--venv), made where missing:
/usr/bin/python3.11 -m venv, the project's torch pin alone, the project's requirements
(tools/install.sh's steps), asrllm editable, then benchmarks/peers/requirements-espnet.txt with
--no-deps (espnet==202511 and what its beam search and CTC scorer import; never the project's
requirements). Both searches then run in ONE process of that venv (benchmarks/peers/espnet_joint.py),
on one torch thread each, on encoder outputs computed once (batches of --batch-utts utterances
sorted by duration); seconds are the wall clock of the search calls only.

Measured per (λ, K, P): asrllm's `LabelSyncSearch` (build_search, SearchConfig(method="label_sync",
beam=K, pre_beam=P, ctc_weight=λ)) on each utterance alone and on the batches, and ESPnet's
BatchBeamSearch (one utterance at a time: it has no batch over utterances) with weights decoder
1 − λ, ctc λ, pre_beam_score_key "full" and pre_beam_ratio P / K. Columns: identical hypotheses
(ESPnet vs asrllm on single utterances; asrllm batched vs single), the sum of each search's own
best total score over the utterances where both ended a hypothesis, utterances without a finished
hypothesis, search seconds and the speed ratio ESPnet / asrllm. The JSON (--out) also holds each
side's sum of the objective (1 − λ)·log p_LLM(y, EOS) + λ·log p_CTC(y) recomputed by full forward
passes (torch's CTC loss), how many utterances each side scored better on it, and the largest gap
between a search's own score and that recomputation.

The decoder's work per step is ESPnet's kind: benchmarks/peers/espnet_scorers.py wraps the speech
LLM as a BatchScorerInterface with one KV cache per hypothesis (stacked and split every step, as
ESPnet's TransformerDecoder.batch_score does with its per-layer caches), calling the same
`CausalLM.score` as our SpeechLLMScorer. Rules of the two searches and how they were aligned:
- Label spaces: ESPnet's CTC scorer fixes blank = id 0; the ESPnet ids are our CTC columns with
  the blank moved first (identity for an AM char tokenizer, whose blank is label 0; a shift by one
  for an LLM vocabulary, whose blank is the extra column V). SOS/EOS map alike; decoder columns
  that are no label (that extra blank) score −inf.
- Blank: our CTC scorer gives it −inf, ESPnet's log 0 = −1e10 (finite, so a hypothesis could take
  it when too few candidates are left); ESPnet gets −inf from `SearchRules` (a weight-1 partial
  scorer of ESPnet's own interface, applied after the pre-beam as ours is).
- Candidates outside the pre-beam: ours never scores them; ESPnet's CTC gives them −1e10; −inf
  from `SearchRules` too.
- Maximum length: ours allows M = min(max_length, ceil(max_length_ratio·U), LLM positions left)
  labels per utterance (U speech vectors), and a hypothesis with M labels may only end, scoring
  EOS if EOS is among its pre-beam candidates (otherwise it dies). ESPnet's maxlenratio > 0 counts
  CTC frames (int(ratio·T)), and after `maxlen` steps appends EOS WITHOUT its score. Aligned:
  maxlenratio = −(M + 1) (a constant M + 1 steps), and `SearchRules` leaves only EOS at M labels,
  so ESPnet's forced EOS only ever follows −inf hypotheses.
- Ending: both keep K hypotheses, a hypothesis that chose EOS leaves the beam, the best ended one
  by total score wins (length_norm 0; ESPnet normalize_length False, minlenratio 0). Ours stops an
  utterance once its best ended total is at least its best running one (exact: every score is
  ≤ 0); ESPnet runs all M + 1 steps (its end_detect is off for maxlenratio ≠ 0): more work, the
  same result.
- Precision: our search sums float64 scores; ESPnet sums in x's dtype, so x is the CTC log-probs
  in float64 (ESPnet's CTC recursion then runs in float64 like ours) and the decoder wrapper
  returns float64. The LLM itself runs in float32 in both (its batch shapes differ: last-digit
  differences, ~1e-7 per utterance).
Remaining differences: ESPnet keeps a hypothesis whose score is −inf when fewer than K finite
candidates exist (ours marks the slot dead); such a hypothesis never wins, and an utterance where
every hypothesis died counts as "no hypothesis" on both sides. Ties between exactly equal scores
may be broken differently by the two top-k calls.

Not covered: `pre_beam_eos` (ESPnet's pre-beam has no such rule; it stays off), `ctc_window` (ESPnet
windows by attention weights, which a decoder-only LLM has not), `ctc_draft`, nbest > 1, length_norm.

Machine: CPU only; the 2-core shared machine of the project, 1 torch thread per search. The ESPnet
venv's first build took 87 s (pip, wheels from the registry) and takes 1.7 GB under /tmp/espnet;
--self-check then takes ~10 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from bench_fusion_peers import run  # the benchmarks' one subprocess runner (same directory: sys.path[0])

REPO = Path(__file__).resolve().parents[1]
PEER_SCRIPT = REPO / "benchmarks/peers/espnet_joint.py"
ESPNET_REQUIREMENTS = REPO / "benchmarks/peers/requirements-espnet.txt"
BASE_PYTHON = "/usr/bin/python3.11"
PROBE = ("import espnet, espnet.nets.batch_beam_search, espnet.nets.scorers.ctc, asrllm, transformers; "
         "assert espnet.__version__ == '202511', espnet.__version__")


def ensure_espnet_venv(venv: Path) -> tuple[Path, float]:
    """-> (the ESPnet venv's python, seconds spent building it; 0 if it was there)."""
    python = venv / "bin/python"
    if python.exists() and subprocess.run([str(python), "-c", PROBE], capture_output=True).returncode == 0:
        return python, 0.0
    start = time.perf_counter()
    print(f"creating the ESPnet venv {venv}", file=sys.stderr)
    run([BASE_PYTHON, "-m", "venv", str(venv)], f"{BASE_PYTHON} -m venv")
    pip = [str(python), "-m", "pip", "install", "-q"]
    torch_pin = next(line.split()[0] for line in (REPO / "requirements.txt").read_text().splitlines()
                     if line.startswith("torch=="))
    steps = [
        ([*pip, "--upgrade", "pip"], "pip upgrade"),
        ([*pip, torch_pin], f"{torch_pin} alone (the exact pin takes the CPU wheel, not GBs of CUDA wheels)"),
        ([*pip, "-r", str(REPO / "requirements.txt"), "-c", str(REPO / "tools/constraints.txt")], "requirements"),
        ([*pip, "--no-deps", "-r", str(REPO / "tools/requirements-nodeps.txt")], "requirements-nodeps"),
        ([*pip, "--no-deps", "-e", str(REPO)], "asrllm (editable)"),
        ([*pip, "--no-deps", "-r", str(ESPNET_REQUIREMENTS)], "espnet"),
    ]
    for argv, what in steps:
        print(f"  pip: {what}", file=sys.stderr)
        run(argv, f"pip install of {what} into {venv}", cwd=REPO)
    run([str(python), "-c", PROBE], f"import check of the ESPnet venv {venv}")
    return python, time.perf_counter() - start


def make_tiny_setup(dev: Path) -> None:
    """An untrained tiny speech LLM in char labels (blank = label 0) with an aux CTC head, and 6
    utterances, under `dev` (made once)."""
    from asrllm.testing.dummies import make_char_tokenizer, make_datadir, make_speech_llm_exp_dir

    if (dev / "exp/sllm/model_avg.safetensors").exists():
        return
    make_datadir(dev / "data/test", 6, seed=0)
    make_char_tokenizer(dev / "data/test", dev / "exp/am/tokenizer")
    make_speech_llm_exp_dir(dev / "exp/sllm", dev / "exp/am/tokenizer", seed=1)


def table(results: dict, batch_utts: int) -> str:
    head = (f"| λ | K | P | utts | identical % | batched = single % | Σ score asrllm | Σ score ESPnet | no hyp "
            f"asrllm / ESPnet | asrllm s (1 utt) | asrllm s ({batch_utts} utts) | ESPnet s | ESPnet / asrllm "
            f"(1 utt) | ESPnet / asrllm ({batch_utts} utts) |\n"
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    lines = []
    for r in results["rows"]:
        s, t = r["seconds"], r["speedup"]
        lines.append(f"| {r['ctc_weight']:g} | {r['beam']} | {r['pre_beam'] or 'all'} | {r['utts']} | "
                     f"{r['identical_pct']:.1f} | {r['batched_identical_pct']:.1f} | {r['score_sum']['ours']:.3f} | "
                     f"{r['score_sum']['espnet']:.3f} | {r['no_hypothesis']['ours']} / {r['no_hypothesis']['espnet']} | "
                     f"{s['ours_single']:.2f} | {s['ours_batched']:.2f} | {s['espnet']:.2f} | {t['single']:.1f}× | "
                     f"{t['batched']:.1f}× |\n")
    return head + "".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, help="finished mini_synth recipe dir (read only)")
    parser.add_argument("--model", help="speech-LLM exp dir (trained with aux CTC), relative to --recipe")
    parser.add_argument("--checkpoint", default="average")
    parser.add_argument("--set", default="test")
    parser.add_argument("--max-utts", type=int, default=100)
    parser.add_argument("--beams", type=int, nargs="+", default=[4], help="K")
    parser.add_argument("--pre-beams", type=int, nargs="+", default=[8], help="P; 0 = every label")
    parser.add_argument("--ctc-weights", type=float, nargs="+", default=[0.3], help="λ in (0, 1)")
    parser.add_argument("--batch-utts", type=int, default=8, help="utterances per batch of asrllm's batched run")
    parser.add_argument("--max-length-ratio", type=float, default=1.0, help="labels per speech vector at most")
    parser.add_argument("--max-length", type=int, help="labels at most")
    parser.add_argument("--venv", type=Path, default=Path("/tmp/espnet/venv"), help="the ESPnet venv (made if missing)")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/espnet/work"), help="spec and peer output JSON")
    parser.add_argument("--out", type=Path, help="results JSON")
    parser.add_argument("--self-check", action="store_true",
                        help="decode the tiny untrained setup of --dev-dir (K 4, P 8 and all, λ 0.3) instead of "
                             "--recipe/--model; exit 1 unless every hypothesis is identical")
    parser.add_argument("--dev-dir", type=Path, default=Path("/tmp/espnet/dev"), help="--self-check's setup (made once)")
    args = parser.parse_args(argv)
    if args.self_check:
        dev = args.dev_dir.resolve()
        make_tiny_setup(dev)
        args.recipe, args.model, args.checkpoint, args.set, args.max_utts = dev, "exp/sllm", "average", "test", 6
        args.beams, args.pre_beams, args.ctc_weights, args.batch_utts = [4], [8, 0], [0.3], 3
    if args.recipe is None or args.model is None:
        parser.error("--recipe and --model are required (or --self-check)")
    bad = [w for w in args.ctc_weights if not 0 < w < 1]
    if bad:
        parser.error(f"--ctc-weights {bad}: a joint search needs 0 < λ < 1")
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    python, build_seconds = ensure_espnet_venv(args.venv.resolve())
    if build_seconds:
        print(f"ESPnet venv built in {build_seconds:.0f} s", file=sys.stderr)
    spec = {"recipe": str(args.recipe.resolve()), "model": args.model, "checkpoint": args.checkpoint,
            "set": args.set, "max_utts": args.max_utts, "beams": args.beams, "pre_beams": args.pre_beams,
            "ctc_weights": args.ctc_weights, "batch_utts": args.batch_utts,
            "max_length_ratio": args.max_length_ratio, "max_length": args.max_length, "threads": 1}
    spec_file, out_file = work / "spec.json", work / "out.json"
    spec_file.write_text(json.dumps(spec), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(python), str(PEER_SCRIPT), str(spec_file), str(out_file)], env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{PEER_SCRIPT} {spec_file} failed (exit {proc.returncode}); its stderr is above")
    results = json.loads(out_file.read_text(encoding="utf-8"))
    text = (f"Model `{results['model']}` ({results['parameters'] / 1e6:.2f}M parameters, {results['labels']} labels, "
            f"CTC blank column {results['ctc_blank_id']}), {results['utts']} utterances of {args.set}; "
            f"{platform.processor() or platform.machine()}, 1 torch thread. Σ score: each search's own best totals, "
            "over the utterances where both ended a hypothesis.\n\n" + table(results, args.batch_utts))
    print(text)
    if args.out:
        args.out.write_text(json.dumps({"command": sys.argv, "spec": spec, "venv_build_seconds": build_seconds,
                                        "machine": platform.platform(), **results}, indent=1), encoding="utf-8")
    if args.self_check:
        failed = [r for r in results["rows"] if r["identical_pct"] < 100 or r["batched_identical_pct"] < 100]
        print("self-check: " + ("FAILED, hypotheses differ" if failed else "every hypothesis identical"), file=sys.stderr)
        return 1 if failed else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
