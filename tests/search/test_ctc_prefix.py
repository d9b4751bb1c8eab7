"""The CTC prefix scorer against independent references: brute-force sums over every alignment of a
tiny input, torch's CTC loss, per-utterance runs of a batch, and the joint label-synchronous search
(speech LLM + CTC) against exhaustive enumeration of the combined objective."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from asrllm.search import SearchConfig, build_search
from asrllm.search.ctc_prefix import CTCPrefixScorer
from asrllm.search.label_sync import LabelSyncSearch
from asrllm.search.model_scorers import SpeechLLMScorer, encoder_output
from asrllm.testing.search import assert_batched_equals_single
from asrllm.search.scorer import EncoderOutput
from asrllm.testing.dummies import dummy_batch
from tests.search.test_label_sync import char_dir, make_model  # noqa: F401 (char_dir is a fixture)

V, BLANK, EOS = 3, 3, 2  # labels 0, 1 and EOS 2 (an LLM-like vocabulary); CTC column 3 is blank


def random_log_probs(b, t, seed, columns=V + 1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, t, columns, generator=g, dtype=torch.float64) * 2).log_softmax(-1)


def collapse(path):
    out, prev = [], None
    for s in path:
        if s != prev and s != BLANK:
            out.append(s)
        prev = s
    return out


def brute_force(log_probs):
    """{labels: p(labels)} over every alignment of a (T, V') input (T small)."""
    probs = {}
    for path in itertools.product(range(log_probs.shape[1]), repeat=log_probs.shape[0]):
        p = math.exp(sum(float(log_probs[t, s]) for t, s in enumerate(path)))
        key = tuple(collapse(path))
        probs[key] = probs.get(key, 0.0) + p
    return probs


def psi(probs, prefix):
    return sum(p for labels, p in probs.items() if labels[: len(prefix)] == tuple(prefix))


def log(p):
    return math.log(p) if p > 0 else -math.inf


def walk(scorer, state, prefix):
    """The state after feeding `prefix` label by label (candidates: every label), as a search does."""
    for i, label in enumerate(prefix):
        tokens = torch.tensor([prefix[:i] + [0] * (len(prefix) - i)])
        _, state = scorer.score_partial(tokens, torch.tensor([i]), torch.arange(V)[None], state)
        state = scorer.select_state(state, torch.tensor([0]), torch.tensor([label]))
    return state


def test_prefix_scores_equal_brute_force_sums_over_alignments():
    log_probs = random_log_probs(1, 5, seed=0)
    probs = brute_force(log_probs[0])
    assert sum(probs.values()) == pytest.approx(1.0)
    scorer = CTCPrefixScorer(V, BLANK, EOS)
    enc = EncoderOutput(lens=torch.tensor([5]), ctc_log_probs=log_probs)
    for prefix in ([], [0], [1], [0, 0], [0, 1, 0], [1, 1, 1]):
        state = walk(scorer, scorer.init_state(1, 1, enc), prefix)
        tokens = torch.tensor([prefix + [0]])
        logp, _ = scorer.score_partial(tokens, torch.tensor([len(prefix)]), torch.arange(V)[None], state)
        base = psi(probs, prefix)
        assert math.exp(float(state.log_psi[0])) == pytest.approx(base, rel=1e-9)
        for c in (0, 1):  # ψ(g·c) / ψ(g); [1, 1, 1, 1] does not fit into 5 frames
            assert float(logp[0, c]) == pytest.approx(log(psi(probs, prefix + [c]) / base), abs=1e-9)
        assert float(logp[0, EOS]) == pytest.approx(log(probs.get(tuple(prefix), 0.0) / base), abs=1e-9)


def test_a_whole_hypothesis_collects_the_ctc_loss_batched_and_per_utterance():
    lens = torch.tensor([30, 17, 9])
    log_probs = random_log_probs(3, 30, seed=1)
    targets = [[0, 1, 1, 0, 1], [1, 0, 0], [0, 1]]
    scorer = CTCPrefixScorer(V, BLANK, EOS)

    def total(rows):
        enc = EncoderOutput(lens=lens[rows], ctc_log_probs=log_probs[rows])
        n = len(rows)
        state, out = scorer.init_state(n, 1, enc), torch.zeros(n, dtype=torch.float64)
        width = max(len(targets[r]) for r in rows)
        tokens = torch.tensor([targets[r] + [0] * (width - len(targets[r])) for r in rows])
        for i in range(width + 1):
            here = torch.tensor([min(i, len(targets[r])) for r in rows])
            nxt = torch.tensor([targets[r][i] if i < len(targets[r]) else EOS for r in rows])
            cand = torch.stack([nxt, (nxt + 1) % V], dim=1)  # the true next label and a distractor
            logp, state = scorer.score_partial(tokens, here, cand, state)
            ends = torch.tensor([i == len(targets[r]) for r in rows])
            out += torch.where(torch.tensor([i <= len(targets[r]) for r in rows]), logp[:, 0], 0.0)
            state = scorer.select_state(state, torch.arange(n), torch.where(ends, -1, nxt))
        return out

    ref = torch.stack([-F.ctc_loss(log_probs[b, : lens[b], None].double(), torch.tensor([targets[b]]), lens[b : b + 1],
                                   torch.tensor([len(targets[b])]), blank=BLANK, reduction="sum") for b in range(3)])
    batched = total([0, 1, 2])
    assert batched.tolist() == pytest.approx(ref.tolist(), abs=1e-8)
    for b in range(3):
        assert float(total([b])[0]) == pytest.approx(float(batched[b]), abs=1e-10)


def test_final_score_and_repeats_need_a_blank():
    log_probs = random_log_probs(1, 2, seed=2)
    scorer = CTCPrefixScorer(V, BLANK, EOS)
    state = walk(scorer, scorer.init_state(1, 1, EncoderOutput(lens=torch.tensor([2]), ctc_log_probs=log_probs)), [0])
    logp, _ = scorer.score_partial(torch.tensor([[0]]), torch.tensor([1]), torch.tensor([[0, EOS]]), state)
    # "0 0" in 2 frames is impossible (the repeat needs a blank between), EOS = p(0) / ψ(0)
    assert float(logp[0, 0]) == -math.inf
    eos = scorer.final_score(torch.tensor([[0]]), torch.tensor([1]), state)
    assert float(eos[0]) == pytest.approx(float(logp[0, 1]))


def test_blank_inside_the_label_space_scores_minus_inf():
    scorer = CTCPrefixScorer(4, blank_id=3, eos_id=2)  # an AM tokenizer: blank is one of the labels
    enc = EncoderOutput(lens=torch.tensor([5]), ctc_log_probs=random_log_probs(1, 5, seed=3))
    logp, _ = scorer.score_partial(torch.zeros(1, 1, dtype=torch.long), torch.tensor([0]), torch.arange(4)[None],
                                   scorer.init_state(1, 1, enc))
    assert float(logp[0, 3]) == -math.inf and bool(torch.isfinite(logp[0, :3]).all())


def test_needs_ctc_log_probs():
    with pytest.raises(ValueError, match="aux CTC head"):
        CTCPrefixScorer(V, BLANK, EOS).init_state(1, 1, EncoderOutput(lens=torch.tensor([3])))


def joint_setup(char_dir):  # noqa: F811 (the fixture's value)
    model = make_model(char_dir)
    batch = dummy_batch(2, max_samples=3200, seed=1)
    enc = encoder_output(model, batch.audio, batch.audio_lens)
    frames = 12
    ctc = random_log_probs(2, frames, seed=4, columns=model.llm.vocab_size)  # blank 0 of the char tokenizer
    enc = dataclasses.replace(enc, ctc_log_probs=ctc, ctc_lens=torch.tensor([frames, 8]))
    scorers = {"speech_llm": SpeechLLMScorer(model), "ctc": CTCPrefixScorer(model.llm.vocab_size, 0, model.eos_id)}
    return model, batch, enc, scorers


@pytest.mark.parametrize("ctc_weight,free_eos", [(0.3, False), (0.7, False), (0.3, True)])
def test_joint_search_at_a_wide_beam_equals_exhaustive_search_of_the_combined_objective(char_dir, ctc_weight,  # noqa: F811
                                                                                        free_eos):
    model, batch, enc, scorers = joint_setup(char_dir)
    weights = {"speech_llm": 1 - ctc_weight, "ctc": ctc_weight}
    max_len, V6 = 3, model.llm.vocab_size
    search = LabelSyncSearch(scorers, weights, eos_id=model.eos_id, beam=V6 ** max_len, nbest=3,
                             max_length=max_len, max_length_ratio=None, free_eos=free_eos)
    labels = [v for v in range(V6) if v not in (model.eos_id, 0)]  # blank (0) scores -inf under CTC
    seqs = [list(s) for n in range(max_len + 1) for s in itertools.product(labels, repeat=n)]
    tokens = torch.tensor([s + [1] * (max_len - len(s)) for s in seqs])
    lengths = torch.tensor([len(s) for s in seqs])
    for b, entries in enumerate(search(enc, batch.ids)):
        with torch.no_grad():
            state = model.context(enc.states[b : b + 1].expand(len(seqs), -1, -1), enc.lens[b : b + 1].expand(len(seqs)))
            llm = model.transcript_log_probs(state, tokens, lengths).double().sum(1)
        T = int(enc.ctc_lens[b])
        ctc = torch.tensor([-F.ctc_loss(enc.ctc_log_probs[b, :T, None].double(), torch.tensor([s or [1]])[:, : len(s)],
                                        torch.tensor([T]), torch.tensor([len(s)]), blank=0, reduction="sum").item()
                            for s in seqs], dtype=torch.float64)
        combined = (1 - ctc_weight) * llm + ctc_weight * ctc
        order = torch.argsort(-combined)[:3]
        assert [e.tokens for e in entries] == [seqs[i] for i in order]
        assert [e.score for e in entries] == pytest.approx(combined[order].tolist(), abs=1e-4)
        assert [e.scores["ctc"] for e in entries] == pytest.approx(ctc[order].tolist(), abs=1e-6)


def test_pre_beam_of_the_whole_vocabulary_equals_unpruned_scoring_and_batched_equals_single(char_dir):  # noqa: F811
    model, batch, enc, scorers = joint_setup(char_dir)
    weights = {"speech_llm": 0.7, "ctc": 0.3}

    def search(pre_beam, pre_beam_eos=False):
        return LabelSyncSearch(scorers, weights, eos_id=model.eos_id, beam=3, nbest=2, max_length=6,
                               max_length_ratio=None, pre_beam=pre_beam, pre_beam_eos=pre_beam_eos)

    def nbest(run):
        return [[(x.tokens, x.score) for x in e] for e in run(enc, batch.ids)]

    full = nbest(search(None))
    assert nbest(search(model.llm.vocab_size)) == full
    assert nbest(search(model.llm.vocab_size - 1, pre_beam_eos=True)) == full  # V - 1 labels + EOS = every label
    assert_batched_equals_single(search(None), enc, batch.ids, lambda b: enc.rows([b]), tol=1e-5)


def test_ctc_weight_in_the_search_config_builds_the_joint_search(char_dir):  # noqa: F811
    model, batch, enc, scorers = joint_setup(char_dir)
    cfg = SearchConfig(method="label_sync", beam=3, nbest=2, max_length=6, max_length_ratio=None, pre_beam=4,
                       ctc_weight=0.3)
    built = build_search(cfg, blank_id=0, model_scorers={"speech_llm": scorers["speech_llm"]}, eos_id=model.eos_id)
    by_hand = LabelSyncSearch(scorers, {"speech_llm": 0.7, "ctc": 0.3}, eos_id=model.eos_id, beam=3, nbest=2,
                              max_length=6, max_length_ratio=None, pre_beam=4)
    assert [[(x.tokens, x.score) for x in e] for e in built(enc, batch.ids)] == \
        [[(x.tokens, x.score) for x in e] for e in by_hand(enc, batch.ids)]
    with pytest.raises(ValueError, match="no CTC head"):
        build_search(cfg, blank_id=-1, model_scorers={"speech_llm": scorers["speech_llm"]}, eos_id=model.eos_id)
    with pytest.raises(ValueError, match="ctc_weight"):
        SearchConfig(method="ctc_time_sync", ctc_weight=0.3)
    with pytest.raises(ValueError, match="ctc_weight"):
        SearchConfig(method="label_sync", ctc_weight=1.0)
    windowed = build_search(dataclasses.replace(cfg, ctc_window=5), blank_id=0,
                            model_scorers={"speech_llm": scorers["speech_llm"]}, eos_id=model.eos_id)
    assert windowed.scorers["ctc"].window == 5
    for bad in ({"ctc_window": 5}, {"ctc_window": -1, "ctc_weight": 0.3}):
        with pytest.raises(ValueError, match="ctc_window"):
            SearchConfig(method="label_sync", **bad)


def windowed_brute_force(log_probs, window):
    """ψ and p_CTC of the windowed model by enumeration of a (T, V') input: label i > 0 of an
    alignment must start within `window` frames of the peak of the prefix before it, the frame
    argmax_t r^n_t (itself summed over constrained partial alignments; first maximum on ties)."""
    T, cols = log_probs.shape
    peaks = {}

    def starts(path):  # (label, first frame) of each label of the alignment
        out, prev = [], None
        for t, s in enumerate(path):
            if s != prev and s != BLANK:
                out.append((s, t))
            prev = s
        return out

    def ok(spans, upto):
        return all(abs(spans[i][1] - peak(tuple(lab for lab, _ in spans[:i]))) <= window for i in range(1, upto))

    def peak(g):
        if g not in peaks:
            r_n = [sum(math.exp(sum(float(log_probs[u, s]) for u, s in enumerate(path)))
                       for path in itertools.product(range(cols), repeat=t + 1)
                       if path[-1] == g[-1] and [lab for lab, _ in starts(path)] == list(g) and ok(starts(path), len(g)))
                   for t in range(T)]
            peaks[g] = max(range(T), key=lambda t: (r_n[t], -t))
        return peaks[g]

    def psi_w(g):
        return sum(math.exp(sum(float(log_probs[t, s]) for t, s in enumerate(path)))
                   for path in itertools.product(range(cols), repeat=T)
                   if tuple(lab for lab, _ in starts(path))[: len(g)] == tuple(g) and ok(starts(path), len(g)))

    def p_w(g):
        return sum(math.exp(sum(float(log_probs[t, s]) for t, s in enumerate(path)))
                   for path in itertools.product(range(cols), repeat=T)
                   if [lab for lab, _ in starts(path)] == list(g) and ok(starts(path), len(g)))

    return psi_w, p_w


def test_windowed_prefix_scores_equal_brute_force_of_the_windowed_model():
    log_probs = random_log_probs(1, 6, seed=4)
    psi_w, p_w = windowed_brute_force(log_probs[0], window=1)
    scorer = CTCPrefixScorer(V, BLANK, EOS, window=1)
    enc = EncoderOutput(lens=torch.tensor([6]), ctc_log_probs=log_probs)
    for prefix in ([], [0], [1, 0], [0, 1], [1, 0, 1]):
        state = walk(scorer, scorer.init_state(1, 1, enc), prefix)
        logp, _ = scorer.score_partial(torch.tensor([prefix + [0]]), torch.tensor([len(prefix)]),
                                       torch.arange(V)[None], state)
        base = psi_w(prefix)
        assert math.exp(float(state.log_psi[0])) == pytest.approx(base, rel=1e-9)
        for c in (0, 1):
            assert float(logp[0, c]) == pytest.approx(log(psi_w(prefix + [c]) / base), abs=1e-9)
        assert float(logp[0, EOS]) == pytest.approx(log(p_w(prefix) / base), abs=1e-9)
    assert psi_w([1, 0]) < psi(brute_force(log_probs[0]), [1, 0])  # the window does constrain


def test_a_window_covering_the_input_changes_nothing_and_batched_equals_single():
    lens = torch.tensor([12, 7])
    enc = EncoderOutput(lens=lens, ctc_log_probs=random_log_probs(2, 12, seed=5))
    prefix = [0, 1, 0]
    for window, same in ((12, True), (2, False)):
        plain, windowed = CTCPrefixScorer(V, BLANK, EOS), CTCPrefixScorer(V, BLANK, EOS, window=window)
        a = walk_batch(plain, plain.init_state(2, 1, enc), prefix)
        b = walk_batch(windowed, windowed.init_state(2, 1, enc), prefix)
        assert torch.equal(a.log_psi, b.log_psi) == same
        for row in range(2):  # batched = per utterance, windowed too
            one = EncoderOutput(lens=lens[row : row + 1], ctc_log_probs=enc.ctc_log_probs[row : row + 1])
            single = walk_batch(windowed, windowed.init_state(1, 1, one), prefix)
            assert float(single.log_psi[0]) == pytest.approx(float(b.log_psi[row]), abs=1e-10)


def walk_batch(scorer, state, prefix):
    n = state.utt.shape[0]
    for i, label in enumerate(prefix):
        tokens = torch.tensor([prefix[:i] + [0] * (len(prefix) - i)] * n)
        _, state = scorer.score_partial(tokens, torch.full((n,), i), torch.arange(V).expand(n, -1), state)
        state = scorer.select_state(state, torch.arange(n), torch.full((n,), label))
    return state


def test_the_peak_lies_inside_the_utterance_not_in_its_padding():
    # utterance 1 (4 of 10 frames): label 0 peaks at its last frame; in the padding (log-probs 0)
    # r^n only grows, so a peak taken over all frames would put the window beyond the audio
    log_probs = random_log_probs(2, 10, seed=6)
    log_probs[1, :4] = torch.tensor([[-3.0, -3.0, -5.0, -0.1]] * 3 + [[-0.1, -3.0, -5.0, -3.0]]).log_softmax(-1)
    enc = EncoderOutput(lens=torch.tensor([10, 4]), ctc_log_probs=log_probs)
    scorer = CTCPrefixScorer(V, BLANK, EOS, window=2)
    batched = walk_batch(scorer, scorer.init_state(2, 1, enc), [0, 1])
    single = walk_batch(scorer, scorer.init_state(1, 1, EncoderOutput(lens=torch.tensor([4]), ctc_log_probs=log_probs[1:, :4])),
                        [0, 1])
    assert math.isfinite(float(single.log_psi[0]))
    assert float(batched.log_psi[1]) == pytest.approx(float(single.log_psi[0]), abs=1e-10)


def test_pre_beam_eos_adds_eos_to_the_best_other_labels(char_dir):  # noqa: F811
    model, batch, enc, scorers = joint_setup(char_dir)
    weights = {"speech_llm": 0.7, "ctc": 0.3}
    search = LabelSyncSearch(scorers, weights, eos_id=model.eos_id, beam=2, max_length=6, max_length_ratio=None,
                             pre_beam=2, pre_beam_eos=True)
    states = {n: s.init_state(2, 2, enc) for n, s in scorers.items()}
    tokens, lengths = torch.zeros(4, 1, dtype=torch.long), torch.zeros(4, dtype=torch.long)
    cand, _, _ = search._score(tokens, lengths, states, search.weights)
    logp, _ = scorers["speech_llm"].score(tokens, lengths, scorers["speech_llm"].init_state(2, 2, enc))
    logp[:, model.eos_id] = -math.inf
    best_other = logp.topk(2, dim=1).indices  # by the full scorer alone (the only full one)
    assert cand.shape == (4, 3) and bool((cand[:, 2] == model.eos_id).all())
    assert torch.equal(cand[:, :2], best_other)
    with pytest.raises(ValueError, match="pre_beam_eos"):
        SearchConfig(method="label_sync", ctc_weight=0.3, pre_beam_eos=True)


def test_free_eos_with_the_pre_beam_of_every_label_equals_unpruned_free_eos(char_dir):  # noqa: F811
    model, batch, enc, scorers = joint_setup(char_dir)
    weights = {"speech_llm": 0.7, "ctc": 0.3}

    def run(**kw):
        return [[(x.tokens, x.score) for x in e] for e in LabelSyncSearch(
            scorers, weights, eos_id=model.eos_id, beam=2, nbest=2, max_length=6, max_length_ratio=None, free_eos=True,
            **kw)(enc, batch.ids)]

    assert run(pre_beam=model.llm.vocab_size - 1, pre_beam_eos=True) == run()
    with pytest.raises(ValueError, match="pre_beam_eos"):
        run(pre_beam=2)
    with pytest.raises(ValueError, match="pre_beam_eos"):
        SearchConfig(method="label_sync", ctc_weight=0.3, pre_beam=8, free_eos=True)
    with pytest.raises(ValueError, match="ctc_draft and free_eos"):
        SearchConfig(method="label_sync", ctc_weight=0.3, ctc_draft=0.9, free_eos=True)
    SearchConfig(method="label_sync", ctc_weight=0.3, pre_beam=8, pre_beam_eos=True, free_eos=True)


def test_pre_beam_threshold_keeps_the_pre_beam_labels_within_it_and_zero_keeps_only_the_best(char_dir):  # noqa: F811
    model, batch, enc, scorers = joint_setup(char_dir)
    weights = {"speech_llm": 0.7, "ctc": 0.3}

    def search(**kw):
        return LabelSyncSearch(scorers, weights, eos_id=model.eos_id, beam=2, nbest=2, max_length=6, max_length_ratio=None,
                               **kw)

    def run(**kw):
        return [[(x.tokens, round(x.score, 9)) for x in e] for e in search(**kw)(enc, batch.ids)]

    assert run(pre_beam=4, pre_beam_threshold=0.0) == run(pre_beam=1)  # no ties in these scores
    assert run(pre_beam=4, pre_beam_eos=True, pre_beam_threshold=0.0) == run(pre_beam=1, pre_beam_eos=True)
    assert run(pre_beam=4, pre_beam_threshold=1e9) == run(pre_beam=4)
    # one step by hand: the candidates with a finite score are the pre-beam's labels within T of the best
    s = search(pre_beam=4, pre_beam_threshold=0.2)
    states = {n: sc.init_state(2, 2, enc) for n, sc in scorers.items()}
    tokens, lengths = torch.tensor([[4], [5], [3], [4]]), torch.ones(4, dtype=torch.long)
    cand, cand_scores, _ = s._score(tokens, lengths, states, s.weights)
    logp, _ = scorers["speech_llm"].score(tokens, lengths, scorers["speech_llm"].init_state(2, 2, enc))
    widths = []
    for n in range(4):
        top = sorted(range(logp.shape[1]), key=lambda v: -float(logp[n, v]))[:4]
        want = {v for v in top if float(logp[n, v]) >= float(logp[n, top[0]]) - 0.2 / 0.7}  # T on 0.7·log p
        got = {int(c) for c, x in zip(cand[n], cand_scores[0][n]) if x > -math.inf}
        assert got == want
        widths.append(len(want))
    assert cand.shape[1] == max(widths) < 4  # the block narrowed to the widest row
    with pytest.raises(ValueError, match="pre_beam_threshold"):
        search(pre_beam_threshold=1.0)
    with pytest.raises(ValueError, match="pre_beam_threshold"):
        SearchConfig(method="label_sync", ctc_weight=0.3, pre_beam_threshold=1.0)
    with pytest.raises(ValueError, match="pre_beam_threshold"):
        SearchConfig(method="label_sync", pre_beam=8, pre_beam_threshold=1.0)
