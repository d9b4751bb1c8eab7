"""Decode a data dir with a trained model (a CTC AM, a speech LLM, an AED): every method of the decode
config from ONE encoder pass. CTC searches read a CTC AM's log-probs, or a speech LLM's aux CTC head
or an AED's CTC head; `label_sync` decodes a speech LLM or an AED (with LMs of its labels fused per
label, or jointly with CTC, if a method says so).

    python -m asrllm.bin.decode --config conf/decode_ctc.yaml --model-dir exp/ctc \\
        --data data/test [--checkpoint average] [--num-jobs 4 --job 0] [--force] [key.path=value ...]

For method M, the part of job J of NJ goes to `<model-dir>/decode_<set>_<M>/parts/J-of-NJ.*`
(hyp.txt, nbest.jsonl, info.json: timing, the exact command and the part's inputs);
`asrllm.bin.score` merges the parts and scores them.

Fusion: `lms` names trained LM exp dirs (loaded once each with `asrllm.search.lm_scorer.
load_lm_scorer`, the one way to get an LM for scoring) that a method's `fusion.weights` fuse;
`prior` is the file of `asrllm.bin.estimate_prior` for methods with `fusion.prior_scale` > 0.
Joint CTC decoding (`ctc_weight` > 0) reads the model's own CTC head, or, for a method with
`ctc_model: <name>`, the CTC AM that `ctc_models` names (same tokenizer as the model; its encoder
runs once per batch, and its time is charged to the methods that use it).

Re-runs (asrllm.provenance): `info.json` is the part's record, written last. Its inputs are the
model (architecture, weights digest, tokenizer digest, checkpoint name), the method's search
options, the LMs it fuses (their records), the prior file's digest and the data dir's digest. A
part made from the same inputs is skipped (a crashed stage resumes with the jobs that did not
finish); one made from other inputs is an error naming what differs, or, with `--force`, is
decoded again (parts of another job count and the merged outputs of that decode dir are removed
first). Batching, threads and device are not inputs: they do not
change the hypotheses.

Timing (RTFx): each method is charged the shared encoder time plus its own search time (plus the
encoder time of the CTC AM it decodes jointly with), i.e. what decoding with that method alone
would have cost.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

from asrllm.config import ConfigError, atomic_write_text, load_config, parse_overrides
from asrllm.data.audio import SAMPLE_RATE
from asrllm.data.datadir import Utterance, read_datadir
from asrllm.data.loader import inference_batches
from asrllm.data.tokenizer import Tokenizer, load_tokenizer
from asrllm.eval.decode_dir import MERGED_OUTPUTS, one_line
from asrllm.locking import DirLock
from asrllm.models.ctc_prior import load_prior
from asrllm.models.trained import load_trained_model, model_record
from asrllm.provenance import StaleOutputError, datadir_digest, decide, file_digest, flatten, write_record
from asrllm.models.aed import AED
from asrllm.models.ctc_model import CTCModel
from asrllm.models.speech_llm import SpeechLLM
from asrllm.search import LabelPrior, NBestEntry, Scorer, SearchConfig, build_search, write_nbest_jsonl
from asrllm.search.config import search_record
from asrllm.search.label_sync import LabelSyncSearch
from asrllm.search.speculative import CTCDraftSearch
from asrllm.search.lm_scorer import LMSpec, lm_record, load_lm_scorer
from asrllm.search.model_scorers import AEDScorer, SpeechLLMScorer, encoder_output

log = logging.getLogger("asrllm.decode")


@dataclasses.dataclass(frozen=True)
class CTCModelSpec:
    """A separate CTC AM for joint decoding: a trained exp dir (`model_kind: ctc`) with the model's labels."""

    model_dir: str  # e.g. exp/train_ctc_small (relative to where decoding runs: the recipe dir)
    checkpoint: str = "average"  # average | latest | step_<N> dir name


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
    """The decode YAML: batching, threads, the LMs to fuse, and the methods to run on each encoder output."""

    methods: dict[str, SearchConfig]  # output name -> search options; names become decode dir suffixes
    lms: dict[str, LMSpec] = dataclasses.field(default_factory=dict)  # scorer name -> LM; methods' fusion.weights use the names
    ctc_models: dict[str, CTCModelSpec] = dataclasses.field(default_factory=dict)  # name -> CTC AM; methods'
    # ctc_model names one
    prior: str | None = None  # prior file for methods with fusion.prior_scale > 0 (default: <model-dir>/prior.safetensors)
    batch_seconds: float = 100.0  # padded audio seconds per decoding batch
    num_threads: int | None = 1  # torch threads; 1 avoids oversubscription when several jobs share a CPU
    device: str = "cpu"  # "cpu" or "cuda[:i]"

    def __post_init__(self) -> None:
        if not self.methods:
            raise ValueError("DecodeConfig: methods must name at least one search")
        if self.batch_seconds <= 0:
            raise ValueError(f"DecodeConfig: batch_seconds={self.batch_seconds} must be > 0")
        for name, method in self.methods.items():
            unknown = sorted(set(method.fusion.weights) - set(self.lms))
            if unknown:
                raise ValueError(f"DecodeConfig.methods.{name}.fusion.weights names {unknown}, which lms does not "
                                 f"define (lms: {', '.join(sorted(self.lms)) or 'none'})")
            if method.ctc_model is not None and method.ctc_model not in self.ctc_models:
                raise ValueError(f"DecodeConfig.methods.{name}.ctc_model={method.ctc_model!r}, which ctc_models does "
                                 f"not define (ctc_models: {', '.join(sorted(self.ctc_models)) or 'none'})")

    def prior_file(self, model_dir: Path) -> Path:
        return Path(self.prior) if self.prior else model_dir / "prior.safetensors"


def fusion_inputs(cfg: DecodeConfig, model_dir: Path) -> dict[str, dict[str, Any]]:
    """What each method fuses, as stage inputs: the records of the LMs it weights, of the CTC AM it
    decodes jointly with and the prior file's digest. Each is hashed once, however many methods use it."""
    used = {lm for m in cfg.methods.values() for lm in m.fusion.weights}
    lm_inputs = {lm: lm_record(cfg.lms[lm], lm) for lm in sorted(used)}
    ctc_used = {m.ctc_model for m in cfg.methods.values() if m.ctc_model is not None}
    ctc_inputs = {c: flatten(model_record(Path(cfg.ctc_models[c].model_dir), cfg.ctc_models[c].checkpoint),
                             f"ctc_model.{c}") for c in sorted(ctc_used)}
    needs_prior = any(m.fusion.prior_scale > 0 for m in cfg.methods.values())
    prior = {"prior": file_digest(cfg.prior_file(model_dir))} if needs_prior else {}
    return {
        name: {
            **{k: v for lm in m.fusion.weights for k, v in lm_inputs[lm].items()},
            **(ctc_inputs[m.ctc_model] if m.ctc_model is not None else {}),
            **(prior if m.fusion.prior_scale > 0 else {}),
        }
        for name, m in cfg.methods.items()
    }


def load_ctc_models(cfg: DecodeConfig, names: set[str], tokenizer: Tokenizer, model_dir: Path,
                    device: torch.device) -> dict[str, torch.nn.Module]:
    """The CTC AMs `names` of cfg.ctc_models, in eval mode; one whose tokenizer is not the decoded
    model's (the same labels in the same order, the same blank) is a ValueError naming both dirs."""
    models = {}
    for name in sorted(names):
        spec = cfg.ctc_models[name]
        am_dir = Path(spec.model_dir)
        am_tok = load_tokenizer(am_dir / "tokenizer")
        if am_tok.pieces != tokenizer.pieces or am_tok.blank_id != tokenizer.blank_id:
            raise ValueError(f"ctc_models.{name}: the labels of {am_dir / 'tokenizer'} ({am_tok.vocab_size}, blank "
                             f"{am_tok.blank_id}) are not those of {model_dir / 'tokenizer'} ({tokenizer.vocab_size}, "
                             f"blank {tokenizer.blank_id}): joint decoding scores one label space")
        model = load_trained_model(am_dir, spec.checkpoint, device)
        if not isinstance(model, CTCModel):
            raise ValueError(f"ctc_models.{name}: {am_dir} holds a {type(model).__name__}, not a CTC AM (model_kind ctc)")
        models[name] = model
    return models


_PART = re.compile(r"^(\d+)-of-(\d+)\.")


def clear_stale(out_dir: Path, part: str, num_jobs: int, force: bool) -> None:
    """Remove what a decoding with other inputs left in `out_dir`: parts of other job counts (an error
    without `force`) and the merged outputs (the scoring stage makes them again)."""
    parts = out_dir / "parts"
    other = sorted(p for p in parts.glob("*-of-*.*") if (m := _PART.match(p.name)) and int(m.group(2)) != num_jobs)
    if other and not force:
        raise StaleOutputError(
            f"{parts} holds parts of a decoding with another --num-jobs ({other[0].name}, ...); "
            "re-run with --force true to redo it"
        )
    for path in other:
        path.unlink(missing_ok=True)
    for name in MERGED_OUTPUTS:
        (out_dir / name).unlink(missing_ok=True)
    log.info("%s: decoding part %s", out_dir, part)


def search_roles(model: torch.nn.Module, tokenizer_blank_id: int) -> tuple[dict[str, Scorer], int | None, int | None]:
    """What the searches get from the model: its label-synchronous scorer ({} for a CTC AM), the
    CTC blank id of its CTC head (None: no head) and its EOS label (None: not label-synchronous)."""
    if isinstance(model, AED):
        return {"aed": AEDScorer(model)}, tokenizer_blank_id if model.ctc_head is not None else None, model.eos_id
    if isinstance(model, SpeechLLM):
        blank = model.ctc_blank_id if model.ctc_head is not None else None
        return {"speech_llm": SpeechLLMScorer(model)}, blank, model.eos_id
    return {}, tokenizer_blank_id, None


def job_slice(utts: list[Utterance], num_jobs: int, job: int) -> list[Utterance]:
    """Job `job`'s share of the (id-sorted) utterances: every num_jobs-th one, so durations balance."""
    return utts[job::num_jobs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="decode YAML (DecodeConfig)")
    parser.add_argument("--model-dir", required=True, type=Path, help="experiment dir of the trained model")
    parser.add_argument("--checkpoint", default="average", help="average | latest | step_<N> dir name")
    parser.add_argument("--data", required=True, type=Path, help="Kaldi-style data dir to decode")
    parser.add_argument("--num-jobs", type=int, default=1, help="total number of decoding jobs")
    parser.add_argument("--job", type=int, default=0, help="this job's index, 0-based")
    parser.add_argument("--force", action="store_true", help="redo parts that were made from other inputs")
    parser.add_argument("overrides", nargs="*", help="key.path=value overrides of the decode config")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "-m", "asrllm.bin.decode", *argv])

    with contextlib.ExitStack() as locks:  # one writer per part: released however the job ends
        return decode(args, command, locks)


def decode(args: argparse.Namespace, command: str, locks: contextlib.ExitStack) -> int:
    """The job of `main`'s arguments: plan what is stale, lock it, decode it, write its parts."""
    set_name = args.data.name
    part = f"{args.job}-of-{args.num_jobs}"
    try:
        if not 0 <= args.job < args.num_jobs:
            raise ValueError(f"--job {args.job} must lie in [0, --num-jobs={args.num_jobs})")
        cfg = load_config(DecodeConfig, args.config, parse_overrides(args.overrides))
        shared_inputs = {**model_record(args.model_dir, args.checkpoint), "data": datadir_digest(args.data)}
        fused = fusion_inputs(cfg, args.model_dir)
        inputs = {name: {**shared_inputs, **search_record(scfg), **fused[name]} for name, scfg in cfg.methods.items()}
        out_dirs = {name: args.model_dir / f"decode_{set_name}_{name}" for name in cfg.methods}
        todo = [
            name for name, out_dir in out_dirs.items()
            if decide(out_dir / "parts" / f"{part}.info.json", inputs[name], args.force,
                      f"decode part {part} of {out_dir}")
        ]
        if not todo:
            log.info("job %s of %s is decoded already from the same inputs; skipping", part, set_name)
            return 0
        for name in todo:
            locks.enter_context(DirLock(out_dirs[name] / "parts", "decoding", f".{part}.lock"))
            clear_stale(out_dirs[name], part, args.num_jobs, args.force)
        tokenizer = load_tokenizer(args.model_dir / "tokenizer")
        device = torch.device(cfg.device)
        used = {lm for name in todo for lm in cfg.methods[name].fusion.weights}
        scorers = {lm: load_lm_scorer(cfg.lms[lm], device) for lm in sorted(used)}
        log_prior = None
        if any(cfg.methods[name].fusion.prior_scale > 0 for name in todo):
            probs = load_prior(cfg.prior_file(args.model_dir)).float()
            log_prior = LabelPrior.from_probs(probs, blank_id=tokenizer.blank_id).log_prior
        if cfg.num_threads is not None:
            torch.set_num_threads(cfg.num_threads)
        model = load_trained_model(args.model_dir, args.checkpoint, device)
        model_scorers, blank_id, eos_id = search_roles(model, tokenizer.blank_id)
        ctc_of = {name: cfg.methods[name].ctc_model for name in todo if cfg.methods[name].ctc_model is not None}
        ctc_models = load_ctc_models(cfg, set(ctc_of.values()), tokenizer, args.model_dir, device)
        searches = {}
        for name in todo:
            scfg = cfg.methods[name]
            if scfg.method != "label_sync" and blank_id is None:
                raise ValueError(f"methods.{name}: method {scfg.method!r} is a CTC search, but this "
                                 f"{type(model).__name__} has no CTC head (train one: a speech LLM with "
                                 "model.aux_ctc_weight > 0, an AED with model.ctc_weight > 0)")
            blank = tokenizer.blank_id if name in ctc_of else blank_id  # the CTC AM's blank: the same labels
            searches[name] = build_search(scfg, blank_id=blank if blank is not None else -1,
                                          detokenize=lambda ids: one_line(tokenizer.decode(ids)),
                                          log_prior=log_prior, scorers=scorers,
                                          vocab_size=tokenizer.vocab_size, am_tokenizer=tokenizer,
                                          model_scorers=model_scorers, eos_id=eos_id)
        utts = job_slice(read_datadir(args.data), args.num_jobs, args.job)
    except (ConfigError, ValueError, OSError, RuntimeError) as e:
        log.error("%s", e)
        return 1

    results: dict[str, list[list[NBestEntry]]] = {name: [] for name in searches}
    search_seconds = dict.fromkeys(searches, 0.0)
    costed = {name: [*model_scorers, *cfg.methods[name].fusion.weights] if cfg.methods[name].method == "label_sync"
              else list(cfg.methods[name].fusion.weights) for name in searches}  # the LLMs each method calls
    all_scorers = {**scorers, **model_scorers}
    lm_costs = {name: {lm: dict.fromkeys(("calls", "tokens", "utterance_calls"), 0) for lm in costed[name]}
                for name in searches}  # LMCallStats summed over batches
    encoder_seconds = 0.0
    ctc_seconds = dict.fromkeys(ctc_models, 0.0)  # the separate CTC AMs' encoder passes
    audio_seconds = 0.0  # from the samples read, not utt2dur: RTFx stays right if utt2dur is wrong
    try:  # bad audio (unreadable, longer than a speech LLM has positions for) is named
        for batch in inference_batches(utts, cfg.batch_seconds):
            batch = batch.to(device)
            audio_seconds += float(batch.audio_lens.sum()) / SAMPLE_RATE
            start = time.perf_counter()
            with torch.inference_mode():
                enc = encoder_output(model, batch.audio, batch.audio_lens, batch.ids)
            encoder_seconds += time.perf_counter() - start
            ctc_enc = {}
            for ctc_name, ctc_model in ctc_models.items():
                start = time.perf_counter()
                with torch.inference_mode():
                    ctc_enc[ctc_name] = encoder_output(ctc_model, batch.audio, batch.audio_lens, batch.ids)
                ctc_seconds[ctc_name] += time.perf_counter() - start
            for name, search in searches.items():
                start = time.perf_counter()
                for lm in costed[name]:
                    all_scorers[lm].stats.reset()
                if isinstance(search, (LabelSyncSearch, CTCDraftSearch)):
                    joint = ctc_enc.get(ctc_of.get(name, ""))  # the CTC AM's log-probs replace the own head's
                    search_enc = enc if joint is None else dataclasses.replace(
                        enc, ctc_log_probs=joint.ctc_log_probs, ctc_lens=joint.lens)
                    results[name].extend(search(search_enc, utt_ids=batch.ids))
                else:
                    ctc_lens = enc.ctc_lens if enc.ctc_lens is not None else enc.lens
                    results[name].extend(search(enc.ctc_log_probs, ctc_lens, utt_ids=batch.ids))
                search_seconds[name] += time.perf_counter() - start
                for lm in costed[name]:
                    for key, value in dataclasses.asdict(all_scorers[lm].stats).items():
                        lm_costs[name][lm][key] += value
    except (ValueError, OSError) as e:
        log.error("%s: %s", args.data, e)
        return 1

    for name in todo:
        out_dir = out_dirs[name]
        nbest = sorted(results[name], key=lambda entries: entries[0].utt_id)
        prefix = out_dir / "parts" / part
        joint_seconds = ctc_seconds[ctc_of[name]] if name in ctc_of else 0.0
        atomic_write_text(f"{prefix}.hyp.txt", "".join(f"{e[0].utt_id} {e[0].text}\n" for e in nbest))
        write_nbest_jsonl(f"{prefix}.nbest.jsonl", [entry for entries in nbest for entry in entries])
        info = {
            "command": command,
            "method": name,
            "search": dataclasses.asdict(cfg.methods[name]),
            "checkpoint": args.checkpoint,
            "num_params": sum(p.numel() for p in model.parameters()),
            "num_utts": len(utts),
            "audio_seconds": audio_seconds,
            "encoder_seconds": encoder_seconds,
            "search_seconds": search_seconds[name],
            "ctc_model_seconds": joint_seconds,
            "decode_seconds": encoder_seconds + search_seconds[name] + joint_seconds,
            "lm_costs": lm_costs[name],  # per fused LM: forward calls, tokens fed, utterance-calls
            **({"ctc_drafts": dataclasses.asdict(searches[name].stats)}
               if isinstance(searches[name], CTCDraftSearch) else {}),  # utterances, drafted, accepted
        }
        write_record(f"{prefix}.info.json", inputs[name], **info)  # written last: the part's record
        log.info(
            "%s %s: %d utts, %.1f s audio, RTFx %.0f",
            set_name,
            name,
            len(utts),
            audio_seconds,
            audio_seconds / max(info["decode_seconds"], 1e-9),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
