"""Combine Kaldi-style data dirs into one (Kaldi's utils/combine_data.sh), e.g. the training set plus
noise-only utterances for `data.nonspeech`:

    python -m asrllm.bin.combine_data --out-dir data/train_noisy data/train data/noise_train [--force]

Every input is read and checked (`read_datadir`); an utterance id in two inputs is an error naming
both. `utt2category` is kept when every input has one. `<out-dir>/inputs.json` records the inputs'
manifests (asrllm.provenance): the same inputs again are skipped, others are an error unless --force.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from asrllm.data.datadir import (
    DataError,
    read_categories,
    read_datadir,
    write_categories,
    write_datadir,
)
from asrllm.provenance import RECORD_FILE, datadir_digest, decide, write_record

log = logging.getLogger("asrllm.bin.combine_data")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", required=True, type=Path, help="data dir to write")
    parser.add_argument("inputs", nargs="+", type=Path, help="data dirs to combine, in this order")
    parser.add_argument("--force", action="store_true", help="redo an output made from other inputs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    record = args.out_dir / RECORD_FILE
    try:
        if args.out_dir.resolve() in {d.resolve() for d in args.inputs}:
            raise DataError(f"--out-dir {args.out_dir} is one of the inputs")
        inputs = {f"input{i}": datadir_digest(d) for i, d in enumerate(args.inputs)}
        if not decide(record, inputs, args.force, f"combined data dir {args.out_dir}"):
            log.info("%s: made already from the same inputs; skipping", args.out_dir)
            return 0
        record.unlink(missing_ok=True)
        utts, source, categories = [], {}, {}
        for d in args.inputs:
            part = read_datadir(d)
            for u in part:
                if u.id in source:
                    raise DataError(f"utterance {u.id!r} is in both {source[u.id]} and {d}")
                source[u.id] = d
            found = read_categories(d, [u.id for u in part])
            categories = None if found is None or categories is None else {**categories, **found}
            utts += part
        write_datadir(args.out_dir, utts)
        if categories:
            write_categories(args.out_dir, categories)
        write_record(record, inputs)
    except (DataError, ValueError, OSError, RuntimeError) as e:  # RuntimeError: StaleOutputError
        log.error("%s", e)
        return 1
    log.info("%s: %d utterances from %s", args.out_dir, len(utts), ", ".join(str(d) for d in args.inputs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
