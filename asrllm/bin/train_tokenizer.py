"""Stage: train an AM tokenizer (SentencePiece or characters) on transcripts.

    python -m asrllm.bin.train_tokenizer --config conf/tokenizer.yaml \\
        --data-dir data/train_960 --out-dir data/token/bpe5000 vocab_size=5000

Text comes from `--text-file` (one transcript per line) or from one or more `--data-dir`s: Kaldi
data dirs (their `text`, utterance ids stripped) or dirs with a plain `text` file such as data/lm
(`asrllm.data.text.read_texts`). Trailing `key=value` arguments override the config.
Writes `out-dir/tokenizer.yaml` (the resolved config) and the model files, then `out-dir/inputs.json`,
the stage record (asrllm.provenance: config without `num_threads` + digests of the training text):
a re-run with the same inputs is skipped, one with other inputs is an error unless `--force`.
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
from asrllm.provenance import RECORD_FILE, datadir_digest, decide, file_digest, flatten, write_record

logger = logging.getLogger("asrllm.bin.train_tokenizer")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML file for TokenizerConfig")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text-file", help="one transcript per line")
    source.add_argument("--data-dir", action="append", help="data dir, or dir with a plain `text` (repeatable)")
    parser.add_argument("--out-dir", required=True, help="e.g. data/token/bpe5000")
    parser.add_argument("--force", action="store_true", help="retrain if the dir was made from other inputs")
    parser.add_argument("overrides", nargs="*", help="config overrides, key=value")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(TokenizerConfig, args.config, parse_overrides(args.overrides))
        inputs = {k: v for k, v in flatten(cfg, "config").items() if k != "config.num_threads"}
        if args.text_file:
            inputs["text"] = file_digest(args.text_file)
        else:
            inputs.update({f"data.{i}": datadir_digest(d) for i, d in enumerate(args.data_dir)})
        record = Path(args.out_dir) / RECORD_FILE
        if not decide(record, inputs, args.force, f"tokenizer {args.out_dir}"):
            logger.info("%s: trained already from the same inputs; skipping", args.out_dir)
            return 0
        record.unlink(missing_ok=True)
        if args.text_file:
            train_tokenizer(cfg, args.text_file, args.out_dir)
        else:
            texts = [text for d in args.data_dir for _, text in read_texts(d)]
            Path(args.out_dir).mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=args.out_dir, suffix=".txt") as f:
                f.write("".join(f"{t}\n" for t in texts))
                f.flush()
                train_tokenizer(cfg, f.name, args.out_dir)
        write_record(record, inputs)
    except (ConfigError, DataError, OSError, RuntimeError) as e:
        logger.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
