"""Merge the parts of a decode dir and score them (stage 5 of the recipes).

    python -m asrllm.bin.score --decode-dir exp/ctc/decode_test_beam8 --data data/test
    python -m asrllm.bin.score ... --normalizer open_asr_2026_08   # the leaderboard of August 2026

Reads `parts/J-of-NJ.{hyp.txt,nbest.jsonl,info.json}` written by `asrllm.bin.decode`, checks that
all NJ parts are there, writes the merged `hyp.txt` and `nbest.jsonl`, and scores with the Open
ASR leaderboard normaliser of the version `--normalizer` names (default open_asr_2026_03, the one the
paper compares with): `result.txt`, `per_utt.txt`, `metrics.json` with the normaliser's name under
"normalizer" (see asrllm.eval.report, asrllm.eval.normalizer); per category too when the data dir
has an `utt2category` file (a probe set's kinds).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from asrllm.data.datadir import read_categories, read_datadir
from asrllm.eval.decode_dir import check_current, merge_parts, sum_lm_costs
from asrllm.eval.normalizer import DEFAULT_NORMALIZER, NORMALIZERS
from asrllm.eval.report import write_scoring
from asrllm.models.trained import model_kind, read_train_log
from asrllm.search import write_nbest_jsonl

log = logging.getLogger("asrllm.score")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decode-dir", required=True, type=Path, help="exp/<model>/decode_<set>_<method>")
    parser.add_argument("--data", required=True, type=Path, help="the data dir that was decoded (references)")
    parser.add_argument("--normalizer", default=DEFAULT_NORMALIZER, choices=sorted(NORMALIZERS),
                        help=f"leaderboard text normaliser version (default: {DEFAULT_NORMALIZER})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        hyps, infos, nbest = merge_parts(args.decode_dir)
        check_current(args.decode_dir, infos, args.data)
        refs = {u.id: u.text for u in read_datadir(args.data)}
        categories = read_categories(args.data, refs)  # None without utt2category
    except (ValueError, OSError, RuntimeError) as e:
        log.error("%s", e)
        return 1
    write_nbest_jsonl(args.decode_dir / "nbest.jsonl", sorted(nbest, key=lambda e: (e.utt_id, e.rank)))
    model_dir = args.decode_dir.parent
    train_cmd, train_seconds = read_train_log(model_dir)
    metrics = write_scoring(
        args.decode_dir,
        refs,
        hyps,
        audio_seconds=sum(i["audio_seconds"] for i in infos),
        decode_seconds=sum(i["decode_seconds"] for i in infos),
        extra={
            "test_set": args.data.name,
            "model": model_dir.name,
            "model_kind": model_kind(model_dir),
            "method": infos[0]["method"],
            "checkpoint": infos[0]["checkpoint"],
            "num_params": infos[0]["num_params"],
            "search": infos[0]["search"],
            "num_jobs": len(infos),
            "command": infos[0]["command"],
            "train_command": train_cmd,
            "train_seconds": train_seconds,
            "lm_costs": sum_lm_costs(infos),
        },
        normalizer=args.normalizer,
        categories=categories,
    )
    log.info("%s: WER %.2f%% (%d utts, %s normaliser), RTFx %s", args.decode_dir, metrics["wer"], metrics["num_utts"],
             args.normalizer, metrics["rtfx"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
