"""Stage: LibriSpeech subset -> Kaldi-style data dir.

    python -m asrllm.bin.prepare_librispeech --root corpus --subset dev-clean --out-dir data/dev_clean

`--root` is the directory that contains `LibriSpeech/`. Every flac is decoded once (by
`--num-workers` threads), so truncated or corrupt files are found here rather than in training.
Nothing is written when the tree has problems; the error lists them. `out-dir/inputs.json` is the
stage record (asrllm.provenance: the subset tree's listing and transcripts): a re-run on the same
tree is skipped, on another tree it is an error unless `--force`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from asrllm.data.datadir import DataError
from asrllm.data.librispeech import prepare_librispeech
from asrllm.provenance import RECORD_FILE, corpus_digest, decide, write_record

logger = logging.getLogger("asrllm.bin.prepare_librispeech")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="directory containing LibriSpeech/")
    parser.add_argument("--subset", required=True, help="e.g. train-clean-100, dev-clean, test-other")
    parser.add_argument("--out-dir", required=True, help="data dir to write, e.g. data/dev_clean")
    parser.add_argument("--num-workers", type=int, default=None, help="audio decoding threads (default: one per CPU)")
    parser.add_argument("--force", action="store_true", help="redo a data dir made from another tree")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    record = Path(args.out_dir) / RECORD_FILE
    try:
        inputs = {"corpus": corpus_digest(Path(args.root) / "LibriSpeech" / args.subset), "subset": args.subset}
        if not decide(record, inputs, args.force, f"data dir {args.out_dir}"):
            logger.info("%s: prepared already from the same tree; skipping", args.out_dir)
            return 0
        record.unlink(missing_ok=True)
        prepare_librispeech(args.root, args.subset, args.out_dir, args.num_workers)
        write_record(record, inputs)
    except (DataError, ValueError, OSError, RuntimeError) as e:
        logger.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
