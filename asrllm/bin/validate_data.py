"""Check data dirs before a run: decode every audio file once, compare utt2dur, check the text.

    python -m asrllm.bin.validate_data --data data/train [data/dev ...] [--num-workers 8] \\
        [--tokenizer data/token/char]

Each dir is read with `read_datadir(validate_audio=True)`: every missing, unreadable, truncated,
corrupt or non-16 kHz-mono file and every utt2dur entry that disagrees with the decoded audio is
reported, naming file, line and utterance. With `--tokenizer`, transcript characters outside its
vocabulary are an error too (training only warns about them unless `data.unknown_chars: error`).
Data preparation (`prepare_librispeech`) already decodes everything; this is for data dirs made or
edited by other means, or audio that may have changed since. Exit status 1 if any dir has problems.
"""

from __future__ import annotations

import argparse
import logging
import sys

from asrllm.config import ConfigError
from asrllm.data.checks import check_unknown_characters
from asrllm.data.datadir import DataError, read_datadir
from asrllm.data.tokenizer import load_tokenizer

logger = logging.getLogger("asrllm.bin.validate_data")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, nargs="+", help="Kaldi-style data dir(s)")
    parser.add_argument("--num-workers", type=int, default=None, help="audio decoding threads (default: one per CPU)")
    parser.add_argument("--tokenizer", help="AM tokenizer dir: characters outside its vocabulary are errors")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        tokenizer = load_tokenizer(args.tokenizer) if args.tokenizer else None
    except (ConfigError, OSError) as e:
        logger.error("%s", e)
        return 1
    failed = 0
    for data_dir in args.data:
        try:
            utts = read_datadir(data_dir, validate_audio=True, num_workers=args.num_workers)
            if tokenizer is not None:
                check_unknown_characters(tokenizer, [(u.id, u.text) for u in utts], "error", data_dir)
        except (DataError, ValueError) as e:
            logger.error("%s", e)
            failed += 1
            continue
        logger.info("%s: %d utterances, %.2f h: OK", data_dir, len(utts), sum(u.duration for u in utts) / 3600)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
