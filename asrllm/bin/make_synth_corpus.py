"""Stage 0 of egs/mini_synth: build the synthetic LibriSpeech-layout corpus.

    python -m asrllm.bin.make_synth_corpus --out-dir corpus --config conf/corpus.yaml \
        [--num-train 4000] [--num-dev 300] [--num-test 300] [--seed 0] [--num-workers 2] \
        [--force] [speech.snr_db_min=10 ...]

Without --config the defaults of `SynthCorpusConfig` apply. Flags and `key.path=value` overrides
replace config values. Rerunning resumes an interrupted run (see asrllm/data/synth/corpus.py).
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from asrllm.config import apply_overrides, from_dict, load_config, parse_overrides
from asrllm.data.synth.corpus import SynthCorpusConfig, generate_corpus

_FLAGS = ("num_train", "num_dev", "num_test", "seed", "num_workers")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", required=True, help="corpus root; LibriSpeech/ and the LM text go here")
    p.add_argument("--config", help="YAML file for SynthCorpusConfig (default: its built-in defaults)")
    for name in _FLAGS:
        p.add_argument(f"--{name.replace('_', '-')}", type=int, help=f"overrides {name}")
    p.add_argument("--force", action="store_true", help="rebuild a corpus that was made with another config")
    p.add_argument("overrides", nargs="*", help="config overrides key.path=value")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace) -> SynthCorpusConfig:
    """Config file (or defaults) + key.path=value overrides + flags, in that order."""
    overrides = parse_overrides(args.overrides)
    overrides.update({name: getattr(args, name) for name in _FLAGS if getattr(args, name) is not None})
    if args.config:
        return load_config(SynthCorpusConfig, args.config, overrides)
    data: dict[str, Any] = {}
    apply_overrides(data, overrides, "make_synth_corpus")
    return from_dict(SynthCorpusConfig, data)


def main(argv: list[str] | None = None) -> None:
    """Entry point."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        generate_corpus(build_config(args), args.out_dir, force=args.force)
    except ValueError as e:  # ConfigError is a ValueError: a wrong option or value, named in `e`
        raise SystemExit(f"make_synth_corpus: {e}") from None


if __name__ == "__main__":
    main()
