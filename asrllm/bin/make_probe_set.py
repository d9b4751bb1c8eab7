"""Build mini_synth's hallucination probe set (asrllm.data.synth.probe) as a Kaldi data dir.

    python -m asrllm.bin.make_probe_set --corpus-config conf/corpus.yaml --test-data data/test \\
        --train-data data/train --out-dir data/probe [--config conf/probe.yaml] [--force]

Noise-only audio, test sentences cut mid-way, and several test sentences in one utterance longer
than the longest of --train-data, spoken by the corpus' test speakers (`--corpus-config`: its seed
and speech settings; `id_prefix` other than "probe" in --config, with only noise, makes noise-only
training data for `data.nonspeech`). Audio goes to `<out-dir>/audio/`, each utterance's kind to `utt2category`
(scoring reports every kind apart). `<out-dir>/inputs.json` records what the
set is made from (asrllm.provenance): a re-run with the same inputs is skipped, with others it is
an error unless --force.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from asrllm.config import ConfigError, load_config
from asrllm.data.datadir import DataError, read_datadir, write_categories, write_datadir
from asrllm.data.synth.corpus import SynthCorpusConfig
from asrllm.data.synth.probe import ProbeConfig, plan_probe_set, render_probe_set
from asrllm.data.synth.speech import design_speakers
from asrllm.provenance import RECORD_FILE, datadir_digest, decide, flatten, without_defaults, write_record

log = logging.getLogger("asrllm.bin.make_probe_set")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus-config", required=True, type=Path, help="the corpus YAML (SynthCorpusConfig)")
    parser.add_argument("--test-data", required=True, type=Path, help="data dir whose transcripts are spoken")
    parser.add_argument("--train-data", required=True, type=Path, help="training data dir (its longest utterance)")
    parser.add_argument("--out-dir", required=True, type=Path, help="data dir to write, e.g. data/probe")
    parser.add_argument("--config", type=Path, help="ProbeConfig YAML (default: its defaults)")
    parser.add_argument("--force", action="store_true", help="redo a probe set made from other inputs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    record = args.out_dir / RECORD_FILE
    try:
        corpus = load_config(SynthCorpusConfig, args.corpus_config, {})
        probe = load_config(ProbeConfig, args.config, {}) if args.config else ProbeConfig()
        recorded = without_defaults(flatten(probe, "probe"), {"probe.id_prefix": "probe"})  # added later
        inputs = {**recorded, **flatten(corpus.speech, "speech"), "seed": corpus.seed,
                  "test_data": datadir_digest(args.test_data), "train_data": datadir_digest(args.train_data)}
        if not decide(record, inputs, args.force, f"probe set {args.out_dir}"):
            log.info("%s: made already from the same inputs; skipping", args.out_dir)
            return 0
        record.unlink(missing_ok=True)
        texts = [u.text for u in read_datadir(args.test_data)]
        longest = max(u.duration for u in read_datadir(args.train_data))
        speakers = design_speakers(corpus.speech, corpus.seed)["test"]
        plans = plan_probe_set(probe, corpus.speech, speakers, texts, longest)
        utts = render_probe_set(plans, corpus.speech, args.out_dir / "audio")
        planned = {f"{p.utt_id}.flac" for p in plans}
        for stale in (args.out_dir / "audio").glob("*.flac"):  # of a probe set made from other inputs
            if stale.name not in planned:
                stale.unlink()
        write_datadir(args.out_dir, utts)
        write_categories(args.out_dir, {p.utt_id: p.kind for p in plans})  # scored per kind too
        write_record(record, inputs)
    except (ConfigError, DataError, ValueError, OSError, RuntimeError) as e:
        log.error("%s", e)
        return 1
    kinds = {k: sum(p.kind == k for p in plans) for k in ("noise", "trunc", "long")}
    long_s = [u.duration for u, p in zip(utts, plans) if p.kind == "long"]
    log.info("%s: %s utterances; long ones %.1f-%.1f s (longest training utterance %.1f s)", args.out_dir, kinds,
             min(long_s, default=0), max(long_s, default=0), longest)
    if long_s and min(long_s) <= longest:
        log.warning("some long probe utterances are not longer than the longest training utterance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
