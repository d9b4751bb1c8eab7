"""Merge the parts of a decode dir and score them (stage 5 of the recipes).

    python -m asrllm.bin.score --decode-dir exp/ctc/decode_test_beam8 --data data/test
    python -m asrllm.bin.score ... --normalizer open_asr_2026_08   # the leaderboard of August 2026

Reads `parts/J-of-NJ.{hyp.txt,nbest.jsonl,info.json}` written by `asrllm.bin.decode`, checks that
all NJ parts are there, writes the merged `hyp.txt` and `nbest.jsonl`, and scores with the Open
ASR leaderboard normaliser of the version `--normalizer` names (default open_asr_2026_03, the one the
paper compares with): `result.txt`, `per_utt.txt`, `metrics.json` with the normaliser's name under
"normalizer" (see asrllm.eval.report, asrllm.eval.normalizer).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path

from asrllm.data.datadir import read_datadir
from asrllm.eval.normalizer import DEFAULT_NORMALIZER, NORMALIZERS
from asrllm.eval.report import write_scoring
from asrllm.models.trained import model_record, read_train_log
from asrllm.provenance import StaleOutputError, datadir_digest, describe_difference
from asrllm.search import read_nbest_jsonl, write_nbest_jsonl

log = logging.getLogger("asrllm.score")
_PART = re.compile(r"^(\d+)-of-(\d+)\.info\.json$")


def merge_parts(decode_dir: Path) -> tuple[dict[str, str], list[dict], list]:
    """-> (hyps by utterance id, info dicts of the parts, N-best entries); every part must exist."""
    infos = {}
    for path in sorted((decode_dir / "parts").glob("*.info.json")):
        m = _PART.match(path.name)
        if m:
            infos[(int(m.group(1)), int(m.group(2)))] = path
    totals = {nj for _, nj in infos}
    if len(totals) != 1:
        raise ValueError(f"{decode_dir}/parts: expected the parts of one decoding run, found job counts {sorted(totals) or 'none'}")
    nj = totals.pop()
    missing = [j for j in range(nj) if (j, nj) not in infos]
    if missing:
        raise ValueError(f"{decode_dir}/parts: jobs {missing} of {nj} have not finished")
    hyps: dict[str, str] = {}
    nbest = []
    info_dicts = []
    for j in range(nj):
        prefix = decode_dir / "parts" / f"{j}-of-{nj}"
        info_dicts.append(json.loads(infos[(j, nj)].read_text(encoding="utf-8")))
        for line in Path(f"{prefix}.hyp.txt").read_text(encoding="utf-8").splitlines():
            utt_id, _, text = line.partition(" ")
            hyps[utt_id] = text
        nbest.extend(read_nbest_jsonl(f"{prefix}.nbest.jsonl"))
    return hyps, info_dicts, nbest


def check_current(decode_dir: Path, infos: list[dict], data: Path) -> None:
    """Refuse parts made from other inputs than each other, or than the model and data now hold:
    scoring them would pair today's training command and references with another model's output."""
    inputs = [info.get("inputs") for info in infos]
    if any(i is None for i in inputs):
        raise StaleOutputError(f"{decode_dir}/parts: a part has no record of its inputs (decoded by an older asrllm); "
                               "redo stage 4 with --force true")
    for j, other in enumerate(inputs[1:], start=1):
        if other != inputs[0]:
            raise StaleOutputError(f"{decode_dir}/parts: parts 0 and {j} were decoded from different inputs "
                                   f"(differs in: {describe_difference(inputs[0], other)}); redo stage 4 with --force true")
    now = {**model_record(decode_dir.parent, infos[0]["checkpoint"]), "data": datadir_digest(data)}
    recorded = {key: inputs[0].get(key) for key in now}
    if recorded != now:
        raise StaleOutputError(
            f"{decode_dir} was decoded from other inputs than {decode_dir.parent} and {data} hold now "
            f"(differs in: {describe_difference(recorded, now)}); redo stage 4 with --force true, or delete it"
        )


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
    except (ValueError, OSError, RuntimeError) as e:
        log.error("%s", e)
        return 1
    write_nbest_jsonl(args.decode_dir / "nbest.jsonl", sorted(nbest, key=lambda e: (e.utt_id, e.rank)))
    model_dir = args.decode_dir.parent
    train_cmd, _ = read_train_log(model_dir)
    metrics = write_scoring(
        args.decode_dir,
        refs,
        hyps,
        audio_seconds=sum(i["audio_seconds"] for i in infos),
        decode_seconds=sum(i["decode_seconds"] for i in infos),
        extra={
            "test_set": args.data.name,
            "model": model_dir.name,
            "method": infos[0]["method"],
            "checkpoint": infos[0]["checkpoint"],
            "num_params": infos[0]["num_params"],
            "search": infos[0]["search"],
            "num_jobs": len(infos),
            "command": infos[0]["command"],
            "train_command": train_cmd,
        },
        normalizer=args.normalizer,
    )
    log.info("%s: WER %.2f%% (%d utts, %s normaliser), RTFx %s", args.decode_dir, metrics["wer"], metrics["num_utts"],
             args.normalizer, metrics["rtfx"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
