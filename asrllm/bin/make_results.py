"""Build RESULTS.md from the metrics.json files of decode and perplexity directories.

    python -m asrllm.bin.make_results                       # scans exp/*/decode_*/metrics.json
    python -m asrllm.bin.make_results exp/ctc_small --out RESULTS.md --title "mini_synth"

The rows behind RESULTS.md go to `<out stem>.json` next to it; `--keep` that file on a later run keeps
the rows of experiments that are gone (a grid run over several sessions or machines).
RESULTS.md opens with the best system of each kind (asrllm.eval.comparison: CTC, CTC + LM, speech
LLM, speech LLM + CTC, AED, AED + CTC; chosen on --select-on) and links the WER-vs-RTFx plot
`<out stem>_wer_rtfx.png` written next to it. Every WER table names the normaliser its rows were scored with. A metrics.json that names none
(scored before scoring was versioned), or rows scored with different normalisers, stop it with an
error (exit status 1) that names the files; re-run scoring (stage 5) for them.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from asrllm.config import atomic_write_text
from asrllm.eval.comparison import plot_wer_rtfx
from asrllm.eval.results_table import (
    find_metrics,
    find_ppl_metrics,
    load_ppl_row,
    load_row,
    load_saved_rows,
    render_results,
    save_rows,
)

log = logging.getLogger("asrllm.make_results")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", default=["exp"], help="exp roots, model dirs or decode dirs (default: exp)")
    parser.add_argument("--out", default="RESULTS.md", help="output file (default: RESULTS.md)")
    parser.add_argument("--title", default="RESULTS", help="top-level heading")
    parser.add_argument("--select-on", default="dev", help="set on which the best system of each kind is chosen")
    parser.add_argument("--probe", default="probe", help="set whose hallucination metrics the comparison shows")
    parser.add_argument("--plot-set", default="test", help="set of the WER-vs-RTFx plot, written next to --out")
    parser.add_argument("--keep", type=Path, help="the rows JSON of an earlier run (<out stem>.json): its rows whose "
                        "directories are not found now are kept (experiments of another session or machine)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    files = find_metrics(args.paths)
    try:
        rows = [load_row(Path(os.path.relpath(f))) for f in files]  # relative paths: stable across machines
        ppl_rows = [load_ppl_row(Path(os.path.relpath(f))) for f in find_ppl_metrics(args.paths)]
        if args.keep:
            old_rows, old_ppl = load_saved_rows(args.keep)
            found = {r.decode_dir for r in rows} | {r.ppl_dir for r in ppl_rows}
            kept = [r for r in old_rows if r.decode_dir not in found]
            kept_ppl = [r for r in old_ppl if r.ppl_dir not in found]
            log.info("kept %d results and %d perplexities of %s", len(kept), len(kept_ppl), args.keep)
            rows, ppl_rows = rows + kept, ppl_rows + kept_ppl
        plot = Path(args.out).with_name(f"{Path(args.out).stem}_wer_rtfx.png")
        plotted = plot_wer_rtfx(rows, args.plot_set, plot)
        text = render_results(rows, title=args.title, ppl_rows=ppl_rows, select_on=args.select_on, probe=args.probe,
                              plot_file=plot.name if plotted else None)
    except ValueError as e:
        log.error("%s (%s not written)", e, args.out)
        return 1
    atomic_write_text(args.out, text)
    save_rows(Path(args.out).with_suffix(".json"), rows, ppl_rows)
    log.info("wrote %s: %d results, %d perplexities from %s", args.out, len(rows), len(ppl_rows), " ".join(args.paths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
