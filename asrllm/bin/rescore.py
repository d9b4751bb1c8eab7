"""Rescore the N-best lists of a decode dir with LMs (and the AM's label prior): N-best rescoring.

    python -m asrllm.bin.rescore --config conf/rescore.yaml --model-dir exp/ctc \\
        --nbest-dir exp/ctc/decode_dev_nbest64 --data data/dev [--force] [key.path=value ...]

The N-best lists are the merged parts of `--nbest-dir` (asrllm.bin.decode with nbest > 1). Every LM
of `lms` adds its whole-sequence score (EOS included; `asrllm.search.rescoring`), the prior file
adds the "prior" column, and each method of `methods` re-ranks by ctc + Σ λ·lm − prior_scale·prior.
Method M writes `<model-dir>/decode_<set>_M/parts/0-of-1.{hyp.txt,nbest.jsonl,info.json}` like a
decode job, so `asrllm.bin.score` scores it; its nbest.jsonl holds every score column, which
`asrllm.bin.tune_scales` reads (`--out-prefix tune` puts such dev lists apart from the results).

The N-best lists must come from `--model-dir`'s model as it is now, and from `--data`: lists of
another model (or of a retrained one) are an error naming what differs. Re-runs follow
asrllm.provenance (the record holds the N-best lists' record, the LMs', the prior's digest and the
method's weights). Timing: a method is charged the first pass plus its LMs' rescoring time.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import math
import shlex
import sys
import time
from pathlib import Path

import torch

from asrllm.config import ConfigError, atomic_write_text, load_config, parse_overrides
from asrllm.data.datadir import read_datadir
from asrllm.data.tokenizer import load_tokenizer
from asrllm.eval.decode_dir import MERGED_OUTPUTS, check_current, merge_parts, nbest_digests
from asrllm.locking import DirLock
from asrllm.models.ctc_prior import load_prior
from asrllm.models.trained import model_record
from asrllm.provenance import StaleOutputError, datadir_digest, decide, describe_difference, file_digest, flatten, write_record
from asrllm.search import LabelPrior, write_nbest_jsonl
from asrllm.search.fusion import PRIOR
from asrllm.search.hyps import group_by_utterance
from asrllm.search.lm_scorer import LMSpec, lm_record, load_lm_scorer
from asrllm.search.rescoring import label_reader, rerank, rescore
from asrllm.search.scorer import Scorer

log = logging.getLogger("asrllm.rescore")


@dataclasses.dataclass(frozen=True)
class Combination:
    """One rescoring method: the weight of each LM and the prior scale (CTC weight 1)."""

    weights: dict[str, float]  # LM name (key of RescoreConfig.lms) -> λ
    prior_scale: float = 0.0  # the prior column counts -prior_scale

    def __post_init__(self) -> None:
        for name, w in {**self.weights, "prior_scale": self.prior_scale}.items():
            if not math.isfinite(w) or w < 0:
                raise ValueError(f"Combination: {name}={w} must be finite and >= 0")


@dataclasses.dataclass(frozen=True)
class RescoreConfig:
    """The rescoring YAML: the LMs, the prior file and the methods (combinations) to write."""

    methods: dict[str, Combination]  # output name -> weights; names become decode dir suffixes
    lms: dict[str, LMSpec] = dataclasses.field(default_factory=dict)  # LM name -> trained LM exp dir
    prior: str | None = None  # prior file (default: <model-dir>/prior.safetensors), read when a method uses it
    chunk_size: int = 256  # hypotheses per LM forward call (whole utterances per chunk)
    num_threads: int | None = 1
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not self.methods:
            raise ValueError("RescoreConfig: methods must name at least one combination")
        if self.chunk_size < 1:
            raise ValueError(f"RescoreConfig: chunk_size={self.chunk_size} must be >= 1")
        for name, method in self.methods.items():
            unknown = sorted(set(method.weights) - set(self.lms))
            if unknown:
                raise ValueError(f"RescoreConfig.methods.{name}.weights names {unknown}, which lms does not "
                                 f"define (lms: {', '.join(sorted(self.lms)) or 'none'})")

    def prior_file(self, model_dir: Path) -> Path:
        return Path(self.prior) if self.prior else model_dir / "prior.safetensors"


def check_same_model(nbest_dir: Path, infos: list[dict], model_dir: Path) -> None:
    """The N-best lists must be the output of `model_dir`'s model: same weights and tokenizer."""
    now = model_record(model_dir, infos[0]["checkpoint"])
    recorded = {key: infos[0]["inputs"].get(key) for key in now}
    if recorded != now:
        raise StaleOutputError(
            f"{nbest_dir}: these N-best lists were decoded by another model than {model_dir} "
            f"(differs in: {describe_difference(recorded, now)}); rescore them with --model-dir "
            f"{nbest_dir.parent}, or decode {model_dir}'s own N-best lists first"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="rescoring YAML (RescoreConfig)")
    parser.add_argument("--model-dir", required=True, type=Path, help="experiment dir of the AM that made the N-best lists")
    parser.add_argument("--nbest-dir", required=True, type=Path, help="decode dir with N-best lists (nbest > 1)")
    parser.add_argument("--data", required=True, type=Path, help="the data dir that was decoded")
    parser.add_argument("--out-prefix", default="decode",
                        help="method M goes to <model-dir>/<prefix>_<set>_M (default decode: scored and tabled; "
                             "another prefix keeps e.g. the N-best lists for scale tuning out of the results)")
    parser.add_argument("--force", action="store_true", help="redo methods that were made from other inputs")
    parser.add_argument("overrides", nargs="*", help="key.path=value overrides of the rescoring config")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    command = shlex.join(["python", "-m", "asrllm.bin.rescore", *(sys.argv[1:] if argv is None else argv)])
    with contextlib.ExitStack() as locks:
        return run(args, command, locks)


def run(args: argparse.Namespace, command: str, locks: contextlib.ExitStack) -> int:
    set_name = args.data.name
    try:
        cfg = load_config(RescoreConfig, args.config, parse_overrides(args.overrides))
        _, infos, entries = merge_parts(args.nbest_dir)
        check_current(args.nbest_dir, infos, args.data)
        check_same_model(args.nbest_dir, infos, args.model_dir)
        utt_ids = {u.id for u in read_datadir(args.data)}
        nbest = group_by_utterance(entries)
        stray = sorted({e[0].utt_id for e in nbest} - utt_ids)
        if stray:
            raise ValueError(f"{args.nbest_dir}: N-best lists of utterances not in {args.data}, e.g. {stray[0]!r}")
        shared = {**model_record(args.model_dir, infos[0]["checkpoint"]), "data": datadir_digest(args.data),
                  **nbest_digests(args.nbest_dir)}
        used = sorted({lm for m in cfg.methods.values() for lm in m.weights})
        lm_inputs = {lm: lm_record(cfg.lms[lm], lm) for lm in used}
        needs_prior = any(m.prior_scale > 0 for m in cfg.methods.values())
        prior_input = {"prior": file_digest(cfg.prior_file(args.model_dir))} if needs_prior else {}
        inputs = {
            name: {**shared, **flatten(dataclasses.asdict(m), "rescoring"),
                   **{k: v for lm in m.weights for k, v in lm_inputs[lm].items()},
                   **(prior_input if m.prior_scale > 0 else {})}
            for name, m in cfg.methods.items()
        }
        out_dirs = {name: args.model_dir / f"{args.out_prefix}_{set_name}_{name}" for name in cfg.methods}
        todo = [name for name, d in out_dirs.items()
                if decide(d / "parts" / "0-of-1.info.json", inputs[name], args.force, f"rescoring {d}")]
        if not todo:
            log.info("%s: every method is rescored already from the same inputs; skipping", args.nbest_dir)
            return 0
        for name in todo:
            locks.enter_context(DirLock(out_dirs[name] / "parts", "rescoring", ".0-of-1.lock"))
            for old in (out_dirs[name] / "parts").glob("*-of-*.*"):
                old.unlink()
            for merged in MERGED_OUTPUTS:
                (out_dirs[name] / merged).unlink(missing_ok=True)
        am_tokenizer = load_tokenizer(args.model_dir / "tokenizer")
        device = torch.device(cfg.device)
        if cfg.num_threads is not None:
            torch.set_num_threads(cfg.num_threads)
        scorers: dict[str, Scorer] = {lm: load_lm_scorer(cfg.lms[lm], device)
                                      for lm in sorted({lm for n in todo for lm in cfg.methods[n].weights})}
        if any(cfg.methods[n].prior_scale > 0 for n in todo):
            probs = load_prior(cfg.prior_file(args.model_dir)).float()
            scorers[PRIOR] = LabelPrior.from_probs(probs, blank_id=am_tokenizer.blank_id)
    except (ConfigError, ValueError, OSError, RuntimeError) as e:
        log.error("%s", e)
        return 1

    readers = {name: label_reader(s, am_tokenizer) for name, s in scorers.items()}
    seconds = {}
    costs = {}
    for name, scorer in scorers.items():  # one scorer at a time: each is charged its own time
        start = time.perf_counter()
        nbest, cost = rescore(nbest, {name: scorer}, {name: readers[name]}, cfg.chunk_size, device)
        seconds[name] = time.perf_counter() - start
        costs[name] = dataclasses.asdict(cost[name])
    first_pass = {key: sum(i[key] for i in infos) for key in ("audio_seconds", "encoder_seconds", "search_seconds",
                                                                 "decode_seconds")}
    for name in todo:
        method = cfg.methods[name]
        weights = {"ctc": 1.0, **method.weights, **({PRIOR: -method.prior_scale} if method.prior_scale > 0 else {})}
        ranked = rerank(nbest, weights)
        own = sum(seconds[s] for s in weights if s in seconds)
        prefix = out_dirs[name] / "parts" / "0-of-1"
        atomic_write_text(f"{prefix}.hyp.txt", "".join(f"{u[0].utt_id} {u[0].text}\n" for u in ranked if u))
        write_nbest_jsonl(f"{prefix}.nbest.jsonl", [e for u in ranked for e in u])
        info = {
            "command": command,
            "method": name,
            "search": {"rescoring": dataclasses.asdict(method), "first_pass": infos[0]["search"]},
            "checkpoint": infos[0]["checkpoint"],
            "num_params": infos[0]["num_params"],
            "num_utts": len(ranked),
            "audio_seconds": first_pass["audio_seconds"],
            "encoder_seconds": first_pass["encoder_seconds"],
            "search_seconds": first_pass["search_seconds"] + own,
            "rescoring_seconds": own,
            "decode_seconds": first_pass["decode_seconds"] + own,
            "lm_costs": {lm: costs[lm] for lm in method.weights},
        }
        write_record(f"{prefix}.info.json", inputs[name], **info)
        log.info("%s %s: %d utts rescored (%.1f s of LM scoring)", set_name, name, len(ranked), own)
    return 0


if __name__ == "__main__":
    sys.exit(main())
