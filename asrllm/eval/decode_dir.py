"""A decode dir's parts (asrllm.bin.decode, asrllm.bin.rescore): merging them, and checking that they
are current (made from the inputs the model dir and data dir hold now).

    exp/<model>/decode_<set>_<method>/parts/J-of-NJ.{hyp.txt,nbest.jsonl,info.json}
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from asrllm.models.trained import model_record
from asrllm.provenance import StaleOutputError, datadir_digest, describe_difference, file_digest
from asrllm.search import NBestEntry, read_nbest_jsonl

_PART = re.compile(r"^(\d+)-of-(\d+)\.info\.json$")
MERGED_OUTPUTS = ("hyp.txt", "nbest.jsonl", "ref.txt", "per_utt.txt", "result.txt", "metrics.json")  # score.py writes these


def one_line(text: str) -> str:
    """A hypothesis as one line of a Kaldi `id text` file: whitespace runs (an LLM's newline or tab
    tokens among them) become one space."""
    return " ".join(text.split())


def nbest_digests(decode_dir: Path) -> dict[str, str]:
    """The content digests of a decode dir's N-best parts, as stage inputs (`nbest.<part file>`)."""
    return {f"nbest.{p.name}": file_digest(p) for p in sorted((decode_dir / "parts").glob("*.nbest.jsonl"))}


def merge_parts(decode_dir: Path) -> tuple[dict[str, str], list[dict], list[NBestEntry]]:
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


def sum_lm_costs(infos: list[dict]) -> dict[str, dict[str, int]]:
    """Per fused LM, its forward calls, tokens fed and utterance-calls summed over the parts."""
    total: dict[str, dict[str, int]] = {}
    for info in infos:
        for lm, costs in info.get("lm_costs", {}).items():
            for key, value in costs.items():
                total.setdefault(lm, {}).setdefault(key, 0)
                total[lm][key] += value
    return total


