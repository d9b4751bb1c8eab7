"""Benchmark: CTC + LM decoders that users pick today against asrllm's LLM fusion, on the SAME log-probs.

    python benchmarks/bench_fusion_peers.py --recipe /path/to/egs/mini_synth/asr1 \\
        [--venv /tmp/peers/venv] [--work-dir /tmp/peers/work] [--beam 8] [--llm-utts 0] \\
        [--skip-pyctcdecode] [--skip-flashlight-llm] [--force]

Run with the project's venv. The recipe dir must hold a finished mini_synth run (read only): the
AM exp/train_ctc_small (checkpoint "average", tokenizer, prior.safetensors), the LMs
exp/tiny_llm_ft_char (in the AM's characters) and exp/tiny_llm_ft_bpe2k (its own BPE), data/dev,
data/test, data/lm/text and data/train/text.

What it does, in order (everything it writes goes to --work-dir, default /tmp/peers/work):
  1. The PEER venv (--venv): created with `python -m venv` and benchmarks/peers/requirements.txt
     where missing (flashlight-text, kenlm from its sdist, pyctcdecode with numpy<2, and asrllm's
     pinned torch/transformers for the custom LLM LM; asrllm itself comes from this repository via
     PYTHONPATH). KenLM's lmplz/build_binary are built with cmake from the kenlm sdist under
     /tmp/peers/kenlm-build. Missing Debian build packages are installed with apt-get (root only).
     The peers never enter the project's venv or requirements.
  2. The AM's CTC log-probs of dev and test, computed ONCE (as asrllm.bin.decode computes them) and
     saved as one .npz per set (utterance id -> (T, V) float32); every decoder reads these.
  3. A word 4-gram KenLM (lmplz, modified Kneser-Ney) on data/lm/text + data/train/text (the text
     the tiny LLM was pre-trained and fine-tuned on); the lexicon is its vocabulary.
  4. Peers, in the peer venv (benchmarks/peers/peer_decoders.py, a subprocess):
     flashlight-text LexiconDecoder + KenLM (what torchaudio's ctc_decoder wraps) and pyctcdecode
     + KenLM, their LM weight and word score tuned on dev by a grid (same WER objective), then run
     on test; flashlight-text LexiconFreeDecoder with the fine-tuned character LLM behind
     flashlight's custom `LM` class (one hypothesis and one label per LLM call), at asrllm's beam,
     label pruning and LM weight (with prior 0, and with the prior subtracted from every frame's
     log-probs), on the whole test set or on its first --llm-utts utterances.
  5. asrllm's CTCTimeSyncSearch (plain beam; label-wise fusion with the character LLM; delayed
     fusion v2 every --delayed-every frames with the character LLM and with the bpe2k LLM), each
     with the tuned prior scale and with prior 0, on the whole test set (and, with --llm-utts, on
     the same subset as the flashlight LLM decoder).
Search seconds = wall clock of the search calls only (log-probs precomputed, threads = --threads);
LLM calls = LLM forward calls (asrllm: batched over hypotheses and utterances; flashlight: one
hypothesis, one label each), with the hypothesis-tokens fed in parentheses. Speed-up = search
seconds of flashlight+LLM at the same prior scale (prior 0 where it has no such row) / the row's.
Prints one markdown table (also written to <work dir>/table.md).

Machine: CPU only; ~13 minutes on a shared 2-core CPU once the peer venv exists (its first build:
~10-15 minutes more, mostly compiling kenlm twice). Needs ~3 GB of disk under /tmp/peers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from asrllm.data.datadir import read_datadir
from asrllm.data.loader import inference_batches
from asrllm.data.sampler import pack_batches
from asrllm.data.tokenizer import Tokenizer, load_tokenizer
from asrllm.eval.wer import score_corpus
from asrllm.models.ctc_prior import load_prior
from asrllm.models.trained import load_trained_model
from asrllm.search import FusionConfig, LabelPrior, SearchConfig, build_search
from asrllm.search.lm_scorer import LMScorer, LMSpec, load_lm_scorer

REPO = Path(__file__).resolve().parents[1]
PEER_REQUIREMENTS = REPO / "benchmarks/peers/requirements.txt"
PEER_SCRIPT = REPO / "benchmarks/peers/peer_decoders.py"
APT_PACKAGES = ["libboost-program-options-dev", "libboost-system-dev", "libboost-thread-dev", "libboost-test-dev",
                "zlib1g-dev", "libbz2-dev", "liblzma-dev", "libeigen3-dev"]
BATCH_SECONDS = 100.0  # padded audio seconds per search batch, as asrllm.bin.decode's default
SETS = ("dev", "test")


@dataclasses.dataclass
class Row:
    """One line of the table."""

    decoder: str
    lm: str
    scales: str
    utts: int
    wer: float
    seconds: float
    llm_calls: str = "–"
    speedup: str = "–"


# -- 1. the peer venv and KenLM's tools ---------------------------------------------------------

def run(argv: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    """Run argv (a list, never a shell string); a failure raises with its stderr tail and `what`."""
    proc = subprocess.run(argv, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).splitlines()[-20:])
        raise RuntimeError(f"{what} failed (exit {proc.returncode}): {' '.join(map(str, argv))}\n{tail}")
    return proc


def ensure_apt_packages() -> None:
    """Install the Debian packages kenlm's build needs, where missing (needs root and apt-get)."""
    missing = [p for p in APT_PACKAGES
               if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0]
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError(f"kenlm's build needs the Debian packages {missing}: install them as root "
                           "(apt-get install ...) and re-run")
    print(f"apt-get install {' '.join(missing)}", file=sys.stderr)
    run(["apt-get", "update", "-qq"], "apt-get update")
    run(["apt-get", "install", "-y", "-qq", *missing], "apt-get install",
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def ensure_peer_venv(venv: Path) -> Path:
    """-> the peer venv's python, creating the venv from benchmarks/peers/requirements.txt if needed."""
    python = venv / "bin/python"
    probe = ["-c", "import flashlight.lib.text.decoder, kenlm, pyctcdecode, torch, transformers, numpy; "
                   "assert int(numpy.__version__.split('.')[0]) < 2"]
    if python.exists() and subprocess.run([str(python), *probe], capture_output=True).returncode == 0:
        return python
    ensure_apt_packages()
    print(f"creating the peer venv {venv} (kenlm compiles: ~10 minutes)", file=sys.stderr)
    run([sys.executable, "-m", "venv", str(venv)], "python -m venv")
    run([str(python), "-m", "pip", "install", "-q", "-r", str(PEER_REQUIREMENTS)], f"pip install into {venv}")
    run([str(python), *probe], f"import check of the peer venv {venv}")
    return python


def ensure_kenlm_tools(peers_dir: Path, python: Path) -> tuple[Path, Path]:
    """-> (lmplz, build_binary), built with cmake from the kenlm sdist under peers_dir/kenlm-build."""
    build = peers_dir / "kenlm-build"
    lmplz, build_binary = build / "bin/lmplz", build / "bin/build_binary"
    if lmplz.exists() and build_binary.exists():
        return lmplz, build_binary
    ensure_apt_packages()
    src = peers_dir / "src"
    src.mkdir(parents=True, exist_ok=True)
    if not list(src.glob("kenlm-*.tar.gz")):
        run([str(python), "-m", "pip", "download", "-q", "--no-deps", "--no-binary", "kenlm", "-d", str(src),
             "kenlm==0.3.0"], "pip download of the kenlm sdist")
    tarball = sorted(src.glob("kenlm-*.tar.gz"))[-1]
    run(["tar", "xzf", str(tarball), "-C", str(src)], f"unpacking {tarball}")
    source = src / tarball.name.removesuffix(".tar.gz")
    build.mkdir(parents=True, exist_ok=True)
    print(f"building lmplz and build_binary in {build}", file=sys.stderr)
    run(["cmake", str(source), "-DCMAKE_BUILD_TYPE=Release"], "cmake of kenlm", cwd=build)
    run(["make", f"-j{os.cpu_count() or 1}", "lmplz", "build_binary"], "make of kenlm", cwd=build)
    return lmplz, build_binary


# -- 2. log-probs, once ------------------------------------------------------------------------

def dump_logprobs(recipe: Path, work: Path, force: bool) -> dict[str, Path]:
    """-> set name -> .npz of (T, V) float32 CTC log-probs per utterance of data/<set>."""
    paths = {s: work / f"logprobs_{s}.npz" for s in SETS}
    if not force and all(p.exists() for p in paths.values()):
        return paths
    model = load_trained_model(recipe / "exp/train_ctc_small", "average", torch.device("cpu"))
    for name, path in paths.items():
        arrays = {}
        for batch in inference_batches(read_datadir(recipe / "data" / name), BATCH_SECONDS):
            with torch.inference_mode():
                lp, lens = model.log_probs(batch.audio, batch.audio_lens, utt_ids=batch.ids)  # (B, T, V), (B,)
            for i, utt in enumerate(batch.ids):
                arrays[utt] = lp[i, : int(lens[i])].float().numpy()
        np.savez(path, **arrays)
        print(f"{path}: {len(arrays)} utterances", file=sys.stderr)
    return paths


def load_logprobs(path: Path) -> dict[str, torch.Tensor]:
    """utt id -> (T, V) float32 tensor."""
    with np.load(path) as npz:
        return {u: torch.from_numpy(npz[u]) for u in npz.files}


# -- 3. the word n-gram ------------------------------------------------------------------------

def build_ngram(recipe: Path, work: Path, lmplz: Path, build_binary: Path, order: int, labels: set[str],
                force: bool) -> tuple[Path, Path]:
    """-> (KenLM binary, lexicon word list) of an `order`-gram on the LM text + train transcripts;
    the lexicon holds the n-gram's words that the AM can spell (all characters in `labels`)."""
    binary, words_file = work / f"words_{order}gram.bin", work / "lexicon_words.txt"
    if not force and binary.exists() and words_file.exists():
        return binary, words_file
    lines = (recipe / "data/lm/text").read_text(encoding="utf-8").splitlines()
    for i, line in enumerate((recipe / "data/train/text").read_text(encoding="utf-8").splitlines()):
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise ValueError(f"{recipe / 'data/train/text'}:{i + 1}: expected '<utt id> <words>', got {line!r}")
        lines.append(parts[1])
    corpus = work / "ngram_corpus.txt"
    corpus.write_text("".join(f"{' '.join(line.split())}\n" for line in lines if line.strip()), encoding="utf-8")
    vocab = {w for line in lines for w in line.split()}
    spellable = sorted(w for w in vocab if set(w) <= labels)
    print(f"lexicon: {len(spellable)} of the n-gram's {len(vocab)} words (the rest has characters the AM lacks)",
          file=sys.stderr)
    words_file.write_text("".join(f"{w}\n" for w in spellable), encoding="utf-8")
    arpa = work / f"words_{order}gram.arpa"
    tmp = work / "lmplz_tmp"
    tmp.mkdir(exist_ok=True)
    with open(corpus, encoding="utf-8") as stdin, open(arpa, "w", encoding="utf-8") as stdout:
        proc = subprocess.run([str(lmplz), "-o", str(order), "-S", "20%", "-T", str(tmp), "--discount_fallback"],
                              stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"lmplz on {corpus} failed: {proc.stderr[-2000:]}")
    run([str(build_binary), str(arpa), str(binary)], f"build_binary of {arpa}")
    return binary, words_file


# -- 4. the peers (subprocess in the peer venv) --------------------------------------------------

def run_peers(python: Path, recipe: Path, work: Path, spec: dict, name: str) -> dict:
    """Write spec, run peer_decoders.py with the peer venv's python in the recipe dir, read its results."""
    spec_file, out_file = work / f"{name}.spec.json", work / f"{name}.out.json"
    spec_file.write_text(json.dumps(spec), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(spec["threads"])}
    proc = subprocess.run([str(python), str(PEER_SCRIPT), str(spec_file), str(out_file)], cwd=recipe, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{PEER_SCRIPT} {spec_file} failed (exit {proc.returncode}); its stderr is above")
    return json.loads(out_file.read_text(encoding="utf-8"))


def lexicon_grid(args: argparse.Namespace) -> list[dict]:
    return [dict(beam=args.beam, token_topk=args.token_topk, lm_weight=w, word_score=s, spelling=sp)
            for sp in ("ws_blank", "ws_sil") for w in (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0)
            for s in (-2.0, -1.0, 0.0, 1.0, 2.0, 3.0)]


def pyctc_grid(args: argparse.Namespace) -> list[dict]:
    return [dict(beam=args.beam, alpha=a, beta=b) for a in (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
            for b in (-1.0, 0.0, 1.0, 2.0, 3.0, 4.0)]


def best_on_dev(results: list[dict], refs: dict[str, str]) -> tuple[dict, float]:
    """-> (params, dev WER %) of the grid point with the lowest dev WER."""
    scored = [(score_corpus(refs, r["hyps"]).wer * 100, i) for i, r in enumerate(results)]
    wer, i = min(scored)
    return results[i]["params"], wer


# -- 5. asrllm ----------------------------------------------------------------------------------

@dataclasses.dataclass
class AsrllmDecoder:
    name: str
    lm: str  # "–" or the LM's exp dir name
    cfg: SearchConfig


def asrllm_decoders(args: argparse.Namespace) -> list[AsrllmDecoder]:
    """Plain beam; label-wise fusion (char LLM); delayed v2 with the char LLM (the LLM flashlight
    gets) and with the bpe2k LLM (its own BPE): each with the tuned prior and with prior 0."""
    def search(fusion: FusionConfig) -> SearchConfig:
        return SearchConfig(beam=args.beam, nbest=1, token_prune_topk=args.token_topk, fusion=fusion)

    out = [AsrllmDecoder("asrllm beam (no LM)", "–", search(FusionConfig()))]
    for prior in (0.0, args.char_prior):
        out.append(AsrllmDecoder("asrllm label-wise fusion", "char LLM",
                                 search(FusionConfig("label_wise", {"char": args.char_weight}, prior))))
    delayed = f"asrllm delayed v2 (every {args.delayed_every})"
    for name, label, weight, tuned_prior in (("char", "char LLM", args.char_weight, args.char_prior),
                                             ("bpe", "bpe2k LLM", args.bpe_weight, args.bpe_prior)):
        for prior in (0.0, tuned_prior):
            out.append(AsrllmDecoder(delayed, label, search(FusionConfig(
                "delayed", {name: weight}, prior, "every", args.delayed_every, retokenize=True))))
    return out


def scales(cfg: SearchConfig) -> str:
    f = cfg.fusion
    parts = [f"λ={w:g}" for w in f.weights.values()] + [f"prior={f.prior_scale:g}"]
    return ", ".join(parts)


def run_asrllm(dec: AsrllmDecoder, tok: Tokenizer, log_prior: torch.Tensor, scorers: dict[str, LMScorer],
               lps: dict[str, torch.Tensor], durations: dict[str, float]) -> tuple[dict[str, str], float, int, int]:
    """-> (hyps, search seconds, LLM forward calls, LLM tokens fed) of one asrllm search over `lps`,
    batched as asrllm.bin.decode batches (sorted by duration, BATCH_SECONDS of padded audio)."""
    search = build_search(dec.cfg, blank_id=tok.blank_id, detokenize=tok.decode, log_prior=log_prior,
                          scorers=scorers, vocab_size=tok.vocab_size, am_tokenizer=tok)
    ids = sorted(lps, key=lambda u: durations[u])
    hyps, seconds, calls, tokens = {}, 0.0, 0, 0
    for idx in pack_batches(range(len(ids)), [durations[u] for u in ids], BATCH_SECONDS):
        batch_ids = [ids[i] for i in idx]
        lens = torch.tensor([lps[u].shape[0] for u in batch_ids])  # (B,)
        padded = torch.zeros(len(batch_ids), int(lens.max()), tok.vocab_size)  # (B, T, V)
        for b, u in enumerate(batch_ids):
            padded[b, : lens[b]] = lps[u]
        for s in scorers.values():
            s.stats.reset()
        start = time.perf_counter()
        try:
            nbest = search(padded, lens, utt_ids=batch_ids)
        except Exception as e:
            raise RuntimeError(f"{dec.name} ({scales(dec.cfg)}) on utterances {batch_ids[0]!r}..: {e}") from e
        seconds += time.perf_counter() - start
        for name in dec.cfg.fusion.weights:
            calls += scorers[name].stats.calls
            tokens += scorers[name].stats.tokens
        hyps.update({entries[0].utt_id: entries[0].text for entries in nbest})
    return hyps, seconds, calls, tokens


# -- the table ----------------------------------------------------------------------------------

def wer_of(refs: dict[str, str], hyps: dict[str, str]) -> float:
    return score_corpus({u: refs[u] for u in hyps}, hyps).wer * 100


def table(rows: list[Row], beam: int) -> str:
    head = ("| decoder | LM | beam | scales | utts | test WER % | search s | LLM calls (tokens) | speed-up vs flashlight+LLM |\n"
            "|---|---|---:|---|---:|---:|---:|---:|---:|\n")
    return head + "".join(f"| {r.decoder} | {r.lm} | {beam} | {r.scales} | {r.utts} | {r.wer:.2f} | {r.seconds:.1f} | "
                          f"{r.llm_calls} | {r.speedup} |\n" for r in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, required=True, help="finished mini_synth recipe dir (read only)")
    parser.add_argument("--venv", type=Path, default=Path("/tmp/peers/venv"), help="the peer venv (made if missing)")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/peers/work"), help="log-probs, n-gram, results")
    parser.add_argument("--beam", type=int, default=8)
    parser.add_argument("--token-topk", type=int, default=16, help="labels tried per frame (flashlight beam_size_token)")
    parser.add_argument("--ngram-order", type=int, default=4)
    parser.add_argument("--char-weight", type=float, default=0.55, help="λ of the char LLM (label-wise, flashlight)")
    parser.add_argument("--char-prior", type=float, default=0.45)
    parser.add_argument("--bpe-weight", type=float, default=0.9, help="λ of the bpe2k LLM (delayed v2)")
    parser.add_argument("--bpe-prior", type=float, default=0.6)
    parser.add_argument("--delayed-every", type=int, default=5, help="delayed v2: frames between LLM calls")
    parser.add_argument("--llm-utts", type=int, default=0,
                        help="first N test utterances (by id) for flashlight+LLM and asrllm rows compared to it "
                             "(for a slow machine); 0 = the whole test set")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every decoder")
    parser.add_argument("--skip-pyctcdecode", action="store_true")
    parser.add_argument("--skip-flashlight-llm", action="store_true")
    parser.add_argument("--force", action="store_true", help="recompute log-probs and the n-gram")
    args = parser.parse_args(argv)
    recipe, work = args.recipe.resolve(), args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)

    python = ensure_peer_venv(args.venv.resolve())
    lmplz, build_binary = ensure_kenlm_tools(args.venv.resolve().parent, python)
    os.chdir(recipe)  # LM configs name their sources relative to the recipe dir
    npz = dump_logprobs(recipe, work, args.force)
    tok = load_tokenizer(recipe / "exp/train_ctc_small/tokenizer")
    kenlm_bin, words_file = build_ngram(recipe, work, lmplz, build_binary, args.ngram_order,
                                        {p for p in tok.pieces if len(p) == 1}, args.force)
    log_prior = LabelPrior.from_probs(load_prior(recipe / "exp/train_ctc_small/prior.safetensors").float(),
                                      blank_id=tok.blank_id).log_prior  # (V,)
    data = {s: read_datadir(recipe / "data" / s) for s in SETS}
    refs = {s: {u.id: u.text for u in utts} for s, utts in data.items()}
    test_ids = sorted(refs["test"])
    subset = test_ids if args.llm_utts <= 0 else test_ids[: args.llm_utts]
    spec = {"pieces": tok.pieces, "blank_id": tok.blank_id, "word_start_id": tok.pieces.index("\u2581"),
            "eos_id": tok.eos_id, "logprobs": {s: str(p) for s, p in npz.items()}, "kenlm_bin": str(kenlm_bin),
            "lexicon_words": str(words_file), "log_prior": log_prior.tolist(), "threads": args.threads}
    rows: list[Row] = []
    ngram = f"word {args.ngram_order}-gram"

    # peers with the n-gram: tune on dev, then test
    word_lm = [("flashlight_lexicon", "flashlight-text LexiconDecoder", lexicon_grid(args))]
    if not args.skip_pyctcdecode:
        word_lm.append(("pyctcdecode", "pyctcdecode", pyctc_grid(args)))
    tuned = run_peers(python, recipe, work, {**spec, "tasks": [
        {"name": d, "decoder": d, "set": "dev", "grid": grid} for d, _, grid in word_lm]}, "tune")
    chosen = {d: best_on_dev(tuned[d], refs["dev"]) for d, _, _ in word_lm}
    for d, (params, dev_wer) in chosen.items():
        print(f"{d}: best on dev {params} (dev WER {dev_wer:.2f} %)", file=sys.stderr)
    tasks = [{"name": d, "decoder": d, "set": "test", "grid": [chosen[d][0]]} for d, _, _ in word_lm]
    if not args.skip_flashlight_llm:
        llm_params = dict(beam=args.beam, token_topk=args.token_topk, lm_weight=args.char_weight)
        tasks.append({"name": "flashlight_llm", "decoder": "flashlight_llm", "set": "test", "utts": subset,
                      "lm_dir": "exp/tiny_llm_ft_char", "lm_checkpoint": "latest",
                      "grid": [{**llm_params, "prior_scale": 0.0}, {**llm_params, "prior_scale": args.char_prior}]})
    peers = run_peers(python, recipe, work, {**spec, "tasks": tasks}, "test")
    for d, label, _ in word_lm:
        r, p = peers[d][0], chosen[d][0]
        knobs = (f"λ={p['lm_weight']:g}, word={p['word_score']:g}, {p['spelling']}" if d == "flashlight_lexicon"
                 else f"α={p['alpha']:g}, β={p['beta']:g}")
        rows.append(Row(label, ngram, knobs + f" (dev {chosen[d][1]:.2f})", r["utts"], wer_of(refs["test"], r["hyps"]),
                        r["search_seconds"]))
    fl_seconds = {}
    for r in peers.get("flashlight_llm", []):
        p = r["params"]
        fl_seconds[p["prior_scale"]] = r["search_seconds"]
        rows.append(Row("flashlight-text LexiconFreeDecoder + custom LM", "char LLM",
                        f"λ={p['lm_weight']:g}, prior={p['prior_scale']:g} (per frame)", r["utts"],
                        wer_of(refs["test"], r["hyps"]), r["search_seconds"], f"{r['llm_calls']:,} ({r['llm_calls']:,})"))

    # asrllm on the same log-probs: whole test set, and the flashlight+LLM subset
    scorers = {"char": load_lm_scorer(LMSpec(str(recipe / "exp/tiny_llm_ft_char"), "latest"), torch.device("cpu")),
               "bpe": load_lm_scorer(LMSpec(str(recipe / "exp/tiny_llm_ft_bpe2k"), "latest"), torch.device("cpu"))}
    lps = load_logprobs(npz["test"])
    durations = {u.id: u.duration for u in data["test"]}
    sets = [("all", test_ids)] + ([("subset", subset)] if fl_seconds and len(subset) < len(test_ids) else [])
    for which, ids in sets:
        for dec in asrllm_decoders(args):
            hyps, seconds, calls, tokens = run_asrllm(dec, tok, log_prior, scorers, {u: lps[u] for u in ids}, durations)
            speedup = "–"
            if fl_seconds and (which == "subset" or len(subset) == len(test_ids)):
                ref_s = fl_seconds.get(dec.cfg.fusion.prior_scale, fl_seconds[0.0])
                speedup = f"{ref_s / seconds:.0f}×" if dec.cfg.fusion.weights else "–"
            rows.append(Row(dec.name, dec.lm, scales(dec.cfg), len(ids), wer_of(refs["test"], hyps), seconds,
                            f"{calls:,} ({tokens:,})" if dec.cfg.fusion.weights else "–", speedup))
            print(f"{dec.name} {scales(dec.cfg)} on {len(ids)}: {rows[-1].wer:.2f} % {seconds:.1f} s", file=sys.stderr)

    rows.sort(key=lambda r: r.utts != len(test_ids))  # stable: whole test set first, then the subset
    print(table(rows, args.beam))
    (work / "table.md").write_text(table(rows, args.beam), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
