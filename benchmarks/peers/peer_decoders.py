"""The PEER decoders of benchmarks/bench_fusion_peers.py, run with the peer venv's python.

    <peer venv>/bin/python benchmarks/peers/peer_decoders.py SPEC.json OUT.json

Never run with the project's venv: it imports flashlight-text, kenlm and pyctcdecode
(benchmarks/peers/requirements.txt). The main script writes SPEC.json; this script decodes the
CTC log-probs it names and writes, per task and grid point, the hypotheses (utterance id -> text),
the search seconds (wall clock of the decoder calls only) and, for the LLM decoder, its LLM
forward calls. Scoring (WER) is the main script's job.

SPEC.json:
    {"pieces": [...AM labels...], "blank_id": 0, "word_start_id": 3, "eos_id": 2,
     "logprobs": {"dev": "<npz: utt id -> (T, V) float32 log-probs>", "test": ...},
     "kenlm_bin": "<word n-gram, KenLM binary>", "lexicon_words": "<one word a line>",
     "log_prior": [...(V,) label log-prior, blank 0...],
     "threads": 1,
     "tasks": [{"name": str, "decoder": "flashlight_lexicon" | "pyctcdecode" | "flashlight_llm",
                "set": "dev" | "test", "utts": [ids] | null (= all), "grid": [{...params...}, ...],
                "lm_dir": "<asrllm LM exp dir>" (flashlight_llm only), "lm_checkpoint": "latest"}]}

Shapes: T frames, V AM labels (the CTC output layer), V_lm = V for the character LLM.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flashlight.lib.text.decoder import (CriterionType, KenLM, LexiconDecoder, LexiconDecoderOptions,
                                         LexiconFreeDecoder, LexiconFreeDecoderOptions, LM, LMState,
                                         SmearingMode, Trie)
from flashlight.lib.text.dictionary import create_word_dict

NEG_INF = float("-inf")
NO_THRESHOLD = 1.0e9  # flashlight beam_threshold that never prunes (asrllm: beam_threshold null)


# -- shared -------------------------------------------------------------------------------------

def load_logprobs(path: str, utts: list[str] | None) -> dict[str, np.ndarray]:
    """utt id -> (T, V) float32 C-contiguous log-probs, in the order of `utts` (None: file order)."""
    with np.load(path) as npz:
        ids = list(npz.files) if utts is None else utts
        missing = [u for u in ids if u not in npz.files]
        if missing:
            raise KeyError(f"{path}: no log-probs for utterance {missing[0]!r} ({len(missing)} missing)")
        return {u: np.ascontiguousarray(npz[u], dtype=np.float32) for u in ids}


def ctc_collapse(path: list[int], blank_id: int) -> list[int]:
    """Frame labels (T,) -> emitted labels: repeats merged, blanks removed."""
    out, prev = [], None
    for t in path:
        if t != prev and t != blank_id:
            out.append(t)
        prev = t
    return out


def labels_to_text(labels: list[int], pieces: list[str], skip: set[int]) -> str:
    """AM labels -> words ("▁" starts a word; ids in `skip` are dropped)."""
    text = "".join(pieces[i] for i in labels if i not in skip)
    return " ".join(text.replace("\u2581", " ").split())


def with_prior(lp: np.ndarray, log_prior: np.ndarray, scale: float, blank_id: int) -> np.ndarray:
    """(T, V) log-probs minus scale * log prior of every non-blank label (the prior per frame)."""
    if scale == 0:
        return lp
    shift = (scale * log_prior).astype(np.float32)
    shift[blank_id] = 0.0
    return np.ascontiguousarray(lp - shift[None, :])


# -- flashlight LexiconDecoder + KenLM ---------------------------------------------------------

def lexicon_decoder_factory(spec: dict[str, Any]):
    """-> make(params) -> decode(lp (T, V)) -> text: flashlight's LexiconDecoder with the word KenLM.

    Two spellings of the AM's "▁ word-start" labels are offered (params["spelling"]):
    "ws_blank": words spelled "▁ C H A R S", silence = blank;
    "ws_sil":   words spelled "C H A R S", silence = "▁" (torchaudio's "|" convention, moved in front).
    """
    pieces, blank, ws = spec["pieces"], spec["blank_id"], spec["word_start_id"]
    words = Path(spec["lexicon_words"]).read_text(encoding="utf-8").split()
    index = {p: i for i, p in enumerate(pieces)}
    bad = sorted({c for w in words for c in w if c not in index})
    if bad:
        raise ValueError(f"{spec['lexicon_words']}: characters {bad} are not AM labels")
    word_dict = create_word_dict({"<unk>": [["<unk>"]], **{w: [list(w)] for w in words}})  # needs "<unk>"
    unk_word = word_dict.get_index("<unk>")
    lm = KenLM(spec["kenlm_bin"], word_dict)
    built: dict[str, Any] = {}

    def trie_for(spelling: str) -> tuple[Any, int]:
        if spelling not in built:
            sil = blank if spelling == "ws_blank" else ws
            trie = Trie(len(pieces), sil)
            start = lm.start(False)
            for w in words:
                ids = [index[c] for c in w]
                spelled = [ws, *ids] if spelling == "ws_blank" else ids
                trie.insert(spelled, word_dict.get_index(w), lm.score(start, word_dict.get_index(w))[1])
            trie.smear(SmearingMode.MAX)
            built[spelling] = (trie, sil)
        return built[spelling]

    def make(params: dict[str, Any]):
        trie, sil = trie_for(params["spelling"])
        opts = LexiconDecoderOptions(
            beam_size=params["beam"], beam_size_token=params["token_topk"], beam_threshold=NO_THRESHOLD,
            lm_weight=params["lm_weight"], word_score=params["word_score"], unk_score=NEG_INF,
            sil_score=0.0, log_add=False, criterion_type=CriterionType.CTC,
        )
        decoder = LexiconDecoder(opts, trie, lm, sil, blank, unk_word, [], False)

        def decode(lp: np.ndarray) -> str:
            T, V = lp.shape
            best = decoder.decode(lp.ctypes.data, T, V)[0]
            return " ".join(word_dict.get_entry(i) for i in best.words if i >= 0)

        return decode

    return make


# -- pyctcdecode + KenLM -----------------------------------------------------------------------

def pyctcdecode_factory(spec: dict[str, Any]):
    """-> make(params) -> decode(lp (T, V)) -> text: pyctcdecode with the same KenLM (char mode:
    "▁" becomes pyctcdecode's word delimiter " ", blank "")."""
    import kenlm
    from pyctcdecode import Alphabet, BeamSearchDecoderCTC, LanguageModel

    labels = []
    for i, p in enumerate(spec["pieces"]):
        if i == spec["blank_id"]:
            labels.append("")
        elif i == spec["word_start_id"]:
            labels.append(" ")
        elif len(p) == 1:
            labels.append(p)
        else:  # <unk>, <sos/eos>: a private-use character each (in no word of the lexicon)
            labels.append(chr(0xE000 + i))
    alphabet = Alphabet.build_alphabet(labels)
    model = kenlm.Model(spec["kenlm_bin"])
    unigrams = Path(spec["lexicon_words"]).read_text(encoding="utf-8").split()

    def make(params: dict[str, Any]):
        lm = LanguageModel(model, unigrams, alpha=params["alpha"], beta=params["beta"])
        decoder = BeamSearchDecoderCTC(alphabet, lm)

        def decode(lp: np.ndarray) -> str:
            return " ".join(decoder.decode(lp, beam_width=params["beam"]).split())

        return decode

    return make


# -- flashlight LexiconFreeDecoder + asrllm's CausalLM as a custom LM ---------------------------

def llm_decoder_factory(spec: dict[str, Any], task: dict[str, Any]):
    """-> make(params) -> decode(lp (T, V)) -> text, and the LM (for its call counter):
    flashlight's LexiconFreeDecoder with asrllm's fine-tuned LLM behind flashlight's `LM` class."""
    from asrllm.search.lm_scorer import LMSpec, load_lm_scorer  # from the repository (PYTHONPATH)

    scorer = load_lm_scorer(LMSpec(task["lm_dir"], task.get("lm_checkpoint", "latest")), torch.device("cpu"))
    if scorer.vocab_size() != len(spec["pieces"]):
        raise ValueError(f"{task['lm_dir']}: LM has {scorer.vocab_size()} labels, the AM {len(spec['pieces'])}: "
                         "the LexiconFreeDecoder needs an LM in the AM's labels")
    lm = FlashlightLLM(scorer.lm)
    # sil = <sos/eos>: a label the AM never emits, so that "▁" is an ordinary (LM-scored) label, the
    # first frame is no "repeat" of the start token, and finish() = log p(EOS | prefix), as in asrllm.
    sil, blank = spec["eos_id"], spec["blank_id"]
    skip = {blank, spec["eos_id"]}
    log_prior = np.asarray(spec["log_prior"], dtype=np.float32)

    def make(params: dict[str, Any]):
        opts = LexiconFreeDecoderOptions(
            beam_size=params["beam"], beam_size_token=params["token_topk"], beam_threshold=NO_THRESHOLD,
            lm_weight=params["lm_weight"], sil_score=0.0, log_add=False, criterion_type=CriterionType.CTC,
        )
        decoder = LexiconFreeDecoder(opts, lm, sil, blank, [])
        prior_scale = params.get("prior_scale", 0.0)

        def decode(lp: np.ndarray) -> str:
            lp = with_prior(lp, log_prior, prior_scale, blank)
            T, V = lp.shape
            lm.reset()
            best = decoder.decode(lp.ctypes.data, T, V)[0]
            return labels_to_text(ctc_collapse(list(best.tokens), blank), spec["pieces"], skip)

        return decode

    return make, lm


class FlashlightLLM(LM):
    """asrllm's `CausalLM` as a flashlight `LM`: one hypothesis and one label per LLM call.

    flashlight asks score(state, label) for every candidate label of every hypothesis; the answer,
    log p(label | prefix), needs only the PARENT's next-label distribution. The child's own KV
    cache is computed lazily, when the child is itself extended or finished, so that the LLM runs
    once per prefix that survives pruning and grows, not once per candidate (the favourable way to
    write a custom LM; the torchaudio tutorial's LM runs per candidate). States are cached per
    flashlight `LMState` object (`child(label)` returns the same object for the same parent and
    label, and flashlight merges hypotheses by that identity).
    """

    def __init__(self, causal_lm) -> None:
        LM.__init__(self)
        self.lm = causal_lm
        self.calls = 0  # LLM forward calls (one hypothesis, one label each)
        self.reset()

    def reset(self) -> None:
        """Forget the previous utterance's states (call before each decode)."""
        self.cache: dict[Any, tuple[Any, np.ndarray]] = {}  # LMState -> (asrllm LMState (n=1), logp (V,))
        self.pending: dict[Any, tuple[Any, int]] = {}  # LMState -> (parent LMState, label) not fed yet

    def _materialise(self, state) -> tuple[Any, np.ndarray]:
        if state not in self.cache:
            parent, label = self.pending.pop(state)
            lm_state, _ = self._materialise(parent)
            logp, new_state = self.lm.score(torch.tensor([[label]]), torch.tensor([1]), lm_state)  # (1, 1, V)
            self.calls += 1
            self.cache[state] = (new_state, logp[0, 0].numpy())
        return self.cache[state]

    def start(self, start_with_nothing: bool):
        state = LMState()
        lm_state = self.lm.init_state(1)  # BOS fed (not counted: once per utterance, as in asrllm)
        self.cache[state] = (lm_state, self.lm.next_log_probs(lm_state)[0].numpy())
        return state

    def score(self, state, token_index: int):
        _, logp = self._materialise(state)
        child = state.child(token_index)
        if child not in self.cache and child not in self.pending:
            self.pending[child] = (state, token_index)
        return child, float(logp[token_index])

    def finish(self, state):
        _, logp = self._materialise(state)
        return state, float(logp[self.lm.eos_id])


# -- driver -------------------------------------------------------------------------------------

def run_grid(make, grid: list[dict[str, Any]], lps: dict[str, np.ndarray], lm=None) -> list[dict[str, Any]]:
    """Decode every utterance once per grid point; time only the decoder calls."""
    results = []
    for params in grid:
        decode = make(params)
        hyps, seconds = {}, 0.0
        calls0 = lm.calls if lm is not None else 0
        for utt, lp in lps.items():
            start = time.perf_counter()
            try:
                hyps[utt] = decode(lp)
            except Exception as e:
                raise RuntimeError(f"utterance {utt!r} (log-probs {lp.shape}): {type(e).__name__}: {e}") from e
            seconds += time.perf_counter() - start
        results.append({"params": params, "hyps": hyps, "search_seconds": seconds,
                        "llm_calls": (lm.calls - calls0) if lm is not None else None, "utts": len(lps)})
        print(f"  {params}: {seconds:.1f} s", file=sys.stderr, flush=True)
    return results


WORD_LM_DECODERS = {"flashlight_lexicon": lexicon_decoder_factory, "pyctcdecode": pyctcdecode_factory}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    spec_file, out_file = argv
    spec = json.loads(Path(spec_file).read_text(encoding="utf-8"))
    torch.set_num_threads(spec.get("threads", 1))
    out: dict[str, Any] = {}
    factories: dict[str, Any] = {}
    for task in spec["tasks"]:
        print(f"{task['name']} on {task['set']}", file=sys.stderr, flush=True)
        lps = load_logprobs(spec["logprobs"][task["set"]], task.get("utts"))
        lm = None
        if task["decoder"] in WORD_LM_DECODERS:
            if task["decoder"] not in factories:  # the KenLM and the lexicon trie are built once
                factories[task["decoder"]] = WORD_LM_DECODERS[task["decoder"]](spec)
            make = factories[task["decoder"]]
        elif task["decoder"] == "flashlight_llm":
            make, lm = llm_decoder_factory(spec, task)
        else:
            raise ValueError(f"{spec_file}: task {task['name']!r} has unknown decoder {task['decoder']!r}")
        out[task["name"]] = run_grid(make, task["grid"], lps, lm)
    tmp = Path(out_file).with_suffix(".tmp")
    tmp.write_text(json.dumps(out), encoding="utf-8")
    tmp.replace(out_file)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
