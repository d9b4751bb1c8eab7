"""Stage: train an AM tokenizer (SentencePiece or characters) on transcripts.

    python -m asrllm.bin.train_tokenizer --config conf/tokenizer.yaml \\
        --data-dir data/train_960 --out-dir data/token/bpe5000 vocab_size=5000

Text comes from `--text-file` (one transcript per line) or from one or more `--data-dir`s: Kaldi
data dirs (their `text`, utterance ids stripped) or dirs with a plain `text` file such as data/lm
(`asrllm.data.text.read_texts`). Trailing `key=value` arguments override the config.
Writes `out-dir/tokenizer.yaml` (the resolved config) and the model files.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from asrllm.config import ConfigError, load_config, parse_overrides
from asrllm.data.datadir import DataError
from asrllm.data.text import read_texts
from asrllm.data.tokenizer import TokenizerConfig, train_tokenizer

logger = logging.getLogger("asrllm.bin.train_tokenizer")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML file for TokenizerConfig")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text-file", help="one transcript per line")
    source.add_argument("--data-dir", action="append", help="data dir, or dir with a plain `text` (repeatable)")
    parser.add_argument("--out-dir", required=True, help="e.g. data/token/bpe5000")
    parser.add_argument("overrides", nargs="*", help="config overrides, key=value")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(TokenizerConfig, args.config, parse_overrides(args.overrides))
        if args.text_file:
            train_tokenizer(cfg, args.text_file, args.out_dir)
            return 0
        texts = [text for d in args.data_dir for _, text in read_texts(d)]
        Path(args.out_dir).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=args.out_dir, suffix=".txt") as f:
            f.write("".join(f"{t}\n" for t in texts))
            f.flush()
            train_tokenizer(cfg, f.name, args.out_dir)
    except (ConfigError, DataError) as e:
        logger.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
