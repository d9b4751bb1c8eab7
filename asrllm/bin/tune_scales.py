"""Tune the LM and prior scales on rescored dev N-best lists; write them into a decode config.

    python -m asrllm.bin.tune_scales --nbest-dir exp/ctc/decode_dev_rescore_tiny --data data/dev \\
        --lm tiny --template conf/decode_fusion.yaml --out-dir exp/ctc/tune_tiny \\
        [--lm-grid "0 0.2 0.4 ..."] [--prior-grid "0 0.2 ..."] [--refine-rounds 2] [--normalizer NAME]

Reads the merged parts of `--nbest-dir` (asrllm.bin.rescore output: score columns ctc, the LM,
prior), grid-searches (λ_lm, prior scale) with AM scale 1 for the lowest WER, refines around the
best point (asrllm.search.tuning), and writes to `--out-dir`:
- `tuning.json`: the chosen scales, their dev WER, the WER of the lists as ranked, every point tried;
- `grid.png`: dev WER over the points;
- `decode.yaml`: `--template` (a decode config) with `fusion.weights.<lm>` and `fusion.prior_scale`
  of every method that fuses `--lm` set to the tuned scales: first-pass decoding of dev and test
  reuses them (the paper: "tuned on dev N-best, reused for first-pass search").
Re-runs follow asrllm.provenance (`tuning.json` is the record).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

import yaml

from asrllm.config import ConfigError, atomic_write_text, load_yaml
from asrllm.data.datadir import read_datadir
from asrllm.eval.decode_dir import merge_parts
from asrllm.eval.normalizer import DEFAULT_NORMALIZER, NORMALIZERS
from asrllm.provenance import datadir_digest, decide, file_digest, write_record
from asrllm.search.hyps import group_by_utterance
from asrllm.search.tuning import plot_grid, tune_scales

log = logging.getLogger("asrllm.tune_scales")

DEFAULT_LM_GRID = "0 0.2 0.4 0.6 0.8 1.0 1.2 1.5"
DEFAULT_PRIOR_GRID = "0 0.2 0.4 0.6 0.8"


def tuned_decode_config(template: dict, lm: str, lm_scale: float, prior_scale: float) -> dict:
    """The decode config `template` with every method that fuses `lm` set to the tuned scales."""
    methods = template.get("methods")
    if not isinstance(methods, dict):
        raise ConfigError("decode template: no methods")
    out = {**template, "methods": {}}
    hits = 0
    for name, method in methods.items():
        fusion = (method or {}).get("fusion") or {}
        if lm in (fusion.get("weights") or {}):
            fusion = {**fusion, "weights": {**fusion["weights"], lm: lm_scale}, "prior_scale": prior_scale}
            method = {**method, "fusion": fusion}
            hits += 1
        out["methods"][name] = method
    if not hits:
        raise ConfigError(f"decode template: no method fuses LM {lm!r} (fusion.weights.{lm})")
    return out


def _grid(text: str, option: str) -> list[float]:
    try:
        return [float(x) for x in text.split()]
    except ValueError:
        raise ValueError(f"{option} {text!r}: expected numbers separated by spaces") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nbest-dir", required=True, type=Path, help="rescored dev N-best lists (asrllm.bin.rescore)")
    parser.add_argument("--data", required=True, type=Path, help="the data dir of the N-best lists (references)")
    parser.add_argument("--lm", required=True, help="the LM score column to tune (a name of the rescoring lms)")
    parser.add_argument("--template", required=True, type=Path, help="decode config whose fused methods get the scales")
    parser.add_argument("--out-dir", required=True, type=Path, help="where tuning.json, grid.png, decode.yaml go")
    parser.add_argument("--lm-grid", default=DEFAULT_LM_GRID, help=f"LM scales (default: {DEFAULT_LM_GRID!r})")
    parser.add_argument("--prior-grid", default=DEFAULT_PRIOR_GRID, help=f"prior scales (default: {DEFAULT_PRIOR_GRID!r})")
    parser.add_argument("--refine-rounds", type=int, default=2, help="step halvings around the best point")
    parser.add_argument("--normalizer", default=DEFAULT_NORMALIZER, choices=sorted(NORMALIZERS))
    parser.add_argument("--force", action="store_true", help="redo a tuning made from other inputs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    record = args.out_dir / "tuning.json"
    try:
        lm_grid, prior_grid = _grid(args.lm_grid, "--lm-grid"), _grid(args.prior_grid, "--prior-grid")
        inputs = {
            **{f"nbest.{p.name}": file_digest(p) for p in sorted((args.nbest_dir / "parts").glob("*.nbest.jsonl"))},
            "data": datadir_digest(args.data), "template": file_digest(args.template), "lm": args.lm,
            "lm_grid": lm_grid, "prior_grid": prior_grid, "refine_rounds": args.refine_rounds,
            "normalizer": args.normalizer,
        }
        if not decide(record, inputs, args.force, f"scale tuning {args.out_dir}"):
            log.info("%s: tuned already from the same inputs; skipping", args.out_dir)
            return 0
        _, _, entries = merge_parts(args.nbest_dir)
        refs = {u.id: u.text for u in read_datadir(args.data)}
        nbest = group_by_utterance(entries)
        result = tune_scales(nbest, refs, args.lm, lm_grid, prior_grid, args.refine_rounds, args.normalizer)
        decode_cfg = tuned_decode_config(load_yaml(args.template), args.lm, result.lm_scale, result.prior_scale)
    except (ConfigError, ValueError, OSError) as e:
        log.error("%s", e)
        return 1
    args.out_dir.mkdir(parents=True, exist_ok=True)
    header = (f"# Scales tuned on {args.nbest_dir} ({result.num_utts} utts) by asrllm.bin.tune_scales: "
              f"{args.lm}={result.lm_scale:g}, prior_scale={result.prior_scale:g}, dev WER {result.wer:.2f} % "
              f"(as ranked {result.baseline_wer:.2f} %). Template: {args.template}\n")
    atomic_write_text(args.out_dir / "decode.yaml", header + yaml.safe_dump(decode_cfg, sort_keys=False))
    plot_grid(result, args.lm, args.out_dir / "grid.png")
    write_record(record, inputs, **dataclasses.asdict(result))
    log.info("%s: %s=%g prior_scale=%g: dev WER %.2f %% (as ranked %.2f %%, %d points)", args.out_dir, args.lm,
             result.lm_scale, result.prior_scale, result.wer, result.baseline_wer, len(result.grid))
    return 0


if __name__ == "__main__":
    sys.exit(main())
