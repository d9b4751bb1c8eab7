"""Tune the LM and prior scales on rescored dev N-best lists; write them into a decode config.

    python -m asrllm.bin.tune_scales --nbest-dir exp/ctc/tune_dev_rescore_tiny --data data/dev --lm tiny \\
        --template conf/decode_fusion.yaml [--template conf/rescore.yaml ...] --out-dir exp/ctc/tune_tiny \\
        [--lm-grid 0,0.2,0.4,...] [--prior-grid 0,0.2,...] [--refine-rounds 2] [--normalizer NAME]

Reads the merged parts of `--nbest-dir` (asrllm.bin.rescore output: score columns ctc, the LM,
prior), grid-searches (λ_lm, prior scale) with AM scale 1 for the lowest WER, refines around the
best point (asrllm.search.tuning), and writes to `--out-dir`:
- `tuning.json`: the chosen scales, their dev WER, the WER of the lists as ranked, every point tried;
- `grid.png`: dev WER over the points;
- per `--template` (a decode config, or a rescoring config of asrllm.bin.rescore) a copy under its
  file name with the tuned scales in every method that uses `--lm` (decode: `fusion.weights.<lm>`
  and `fusion.prior_scale`; rescoring: `weights.<lm>` and `prior_scale`; a method whose template
  prior_scale is 0 or unset stays without a prior and gets the λ tuned without one): first-pass decoding and
  rescoring of dev and test reuse them (the paper: "tuned on dev N-best, reused for first-pass
  search"). Tuning several LMs chains: the next tuning's templates are the previous outputs.
Re-runs follow asrllm.provenance (`tuning.json` is the record of the search, whose inputs are the
N-best lists, references and grid, not the templates: a re-run with other or more templates writes
their copies with the recorded scales, without searching again).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import re
import sys
from pathlib import Path

import yaml

from asrllm.config import ConfigError, atomic_write_text, load_yaml
from asrllm.data.datadir import read_datadir
from asrllm.eval.decode_dir import merge_parts, nbest_digests
from asrllm.eval.normalizer import DEFAULT_NORMALIZER, NORMALIZERS
from asrllm.provenance import datadir_digest, decide, write_record
from asrllm.search.hyps import group_by_utterance
from asrllm.search.tuning import plot_grid, tune_scales

log = logging.getLogger("asrllm.tune_scales")

DEFAULT_LM_GRID = "0,0.2,0.4,0.6,0.8,1.0,1.2,1.5"
DEFAULT_PRIOR_GRID = "0,0.2,0.4,0.6,0.8"


def tuned_config(template: dict, lm: str, with_prior: tuple[float, float], lm_only: float, where: str) -> dict:
    """`template` (decode: methods.*.fusion; rescoring: methods.*) with every method that weights `lm`
    set to the tuned scales: with_prior = (λ, prior scale) where the template's prior_scale is > 0,
    else λ = lm_only tuned without a prior (the "without prior" ablation stays without one).
    `where` names the template in errors."""
    out = {**template, "methods": {}}
    for name, method in _methods(template, where).items():
        method = dict(method or {})
        target = _scales(method)
        if lm in (target.get("weights") or {}):
            if float(target.get("prior_scale") or 0.0) > 0:
                target.update(weights={**target["weights"], lm: with_prior[0]}, prior_scale=with_prior[1])
            else:
                target.update(weights={**target["weights"], lm: lm_only})
            if "fusion" in method:
                method["fusion"] = target
        out["methods"][name] = method
    return out


def uses_lm(template: dict, lm: str, where: str) -> bool:
    """Whether a method of `template` weights `lm` (and so gets tuned scales)."""
    return any(lm in (_scales(dict(m or {})).get("weights") or {}) for m in _methods(template, where).values())


def _methods(template: dict, where: str) -> dict:
    methods = template.get("methods")
    if not isinstance(methods, dict):
        raise ConfigError(f"{where}: no methods")
    return methods


def _scales(method: dict) -> dict:
    """The dict with a method's LM weights and prior scale: a copy of its `fusion` (decode), or the
    method itself (rescoring)."""
    return dict(method.get("fusion") or {}) if "fusion" in method else method


def _grid(text: str, option: str) -> list[float]:
    try:
        return [float(x) for x in re.split(r"[,\s]+", text.strip())]
    except ValueError:
        raise ValueError(f"{option} {text!r}: expected numbers separated by commas or spaces") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nbest-dir", required=True, type=Path, help="rescored dev N-best lists (asrllm.bin.rescore)")
    parser.add_argument("--data", required=True, type=Path, help="the data dir of the N-best lists (references)")
    parser.add_argument("--lm", required=True, help="the LM score column to tune (a name of the rescoring lms)")
    parser.add_argument("--template", required=True, type=Path, action="append",
                        help="decode or rescoring config whose methods get the scales (repeatable)")
    parser.add_argument("--out-dir", required=True, type=Path, help="where tuning.json, grid.png, the configs go")
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
        names = [t.name for t in args.template]
        if len(set(names)) != len(names):
            raise ValueError(f"--template: file names must differ (they name the outputs): {names}")
        templates = [(t, load_yaml(t)) for t in args.template]
        # each template may leave this LM out (e.g. fusion methods only for some LMs), not all of them
        if not any(uses_lm(cfg, args.lm, str(t)) for t, cfg in templates):
            raise ConfigError(f"--template {', '.join(map(str, args.template))}: no method weights LM {args.lm!r}")
        # the search depends on the N-best lists and the grid, not on the templates: a new template
        # (e.g. more fusion methods) gets the recorded scales without tuning again
        inputs = {
            **nbest_digests(args.nbest_dir),
            "data": datadir_digest(args.data), "lm": args.lm,
            "lm_grid": lm_grid, "prior_grid": prior_grid, "refine_rounds": args.refine_rounds,
            "normalizer": args.normalizer,
        }
        if decide(record, inputs, args.force, f"scale tuning {args.out_dir}"):
            _, _, entries = merge_parts(args.nbest_dir)
            refs = {u.id: u.text for u in read_datadir(args.data)}
            nbest = group_by_utterance(entries)
            result = tune_scales(nbest, refs, args.lm, lm_grid, prior_grid, args.refine_rounds, args.normalizer)
            no_prior = tune_scales(nbest, refs, args.lm, lm_grid, [0.0], args.refine_rounds, args.normalizer)
            args.out_dir.mkdir(parents=True, exist_ok=True)
            plot_grid(result, args.lm, args.out_dir / "grid.png")
            write_record(record, inputs, **dataclasses.asdict(result), without_prior=dataclasses.asdict(no_prior))
            log.info("%s: %s=%g prior_scale=%g: dev WER %.2f %% (as ranked %.2f %%, %d points)", args.out_dir,
                     args.lm, result.lm_scale, result.prior_scale, result.wer, result.baseline_wer, len(result.grid))
        else:
            log.info("%s: tuned already from the same inputs; writing the templates' copies", args.out_dir)
        tuned = json.loads(record.read_text(encoding="utf-8"))
        configs = {t.name: tuned_config(cfg, args.lm, (tuned["lm_scale"], tuned["prior_scale"]),
                                        tuned["without_prior"]["lm_scale"], str(t))
                   for t, cfg in templates}
    except (ConfigError, ValueError, OSError) as e:
        log.error("%s", e)
        return 1
    for template in args.template:
        header = (f"# Scales tuned on {args.nbest_dir} ({tuned['num_utts']} utts) by asrllm.bin.tune_scales: "
                  f"{args.lm}={tuned['lm_scale']:g}, prior_scale={tuned['prior_scale']:g}, dev WER {tuned['wer']:.2f} % "
                  f"(without prior: {args.lm}={tuned['without_prior']['lm_scale']:g}, "
                  f"{tuned['without_prior']['wer']:.2f} %; as ranked {tuned['baseline_wer']:.2f} %). Template: {template}\n")
        atomic_write_text(args.out_dir / template.name, header + yaml.safe_dump(configs[template.name], sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
