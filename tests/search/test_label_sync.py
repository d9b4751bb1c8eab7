"""The label-synchronous beam search with a speech LLM as its scorer, against independent references:
exhaustive enumeration of every label sequence (full forward passes), single-utterance runs, a search
without the early stop, per-hypothesis prefill, and HF `generate()` greedy."""

from __future__ import annotations

import itertools

import pytest
import torch

from asrllm.data.tokenizer import TokenizerConfig, train_tokenizer
from asrllm.models.conformer import ConformerConfig
from asrllm.models.llm import LLMConfig
from asrllm.models.speech_llm import PromptConfig, SpeechLLM, SpeechLLMConfig
from asrllm.search.label_sync import LabelSyncSearch
from asrllm.search.model_scorers import SpeechLLMScorer, encoder_output
from asrllm.testing.search import assert_batched_equals_single, encoded_alone
from asrllm.testing.dummies import dummy_batch


@pytest.fixture(scope="module")
def char_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    (d / "text").write_text("AB BA\n")
    train_tokenizer(TokenizerConfig(kind="char"), d / "text", d / "char")
    return d / "char"  # labels: <blank> <unk> <sos/eos> ▁ A B  (V = 6)


def make_model(char_dir, interface="prefix", prompt=PromptConfig("", ""), layers=2, seed=0) -> SpeechLLM:
    cfg = SpeechLLMConfig(
        llm=LLMConfig(arch=dict(model_type="llama", hidden_size=16, intermediate_size=32, num_hidden_layers=layers,
                                num_attention_heads=2, num_key_value_heads=1)),
        label_unit="am_tokenizer", am_tokenizer=str(char_dir), interface=interface, prompt=prompt,
        encoder=ConformerConfig(num_layers=1, d_model=16, num_heads=2, ff_dim=32),
    )
    torch.manual_seed(seed)
    model = SpeechLLM(cfg).eval()
    with torch.no_grad():  # a sharper output layer than at init: distinct, far from uniform scores
        model.llm.hf_model.get_output_embeddings().weight.mul_(8.0)
    return model


def search_for(model, beam, nbest=1, **kw) -> LabelSyncSearch:
    return LabelSyncSearch({"speech_llm": SpeechLLMScorer(model)}, {"speech_llm": 1.0}, eos_id=model.eos_id,
                           beam=beam, nbest=nbest, **kw)


def exhaustive(model, enc, b, max_len):
    """Every label sequence of up to max_len labels of utterance b, scored by one full forward pass each:
    [(total log p incl. EOS, labels)], best first."""
    V = model.llm.vocab_size
    seqs = [list(s) for n in range(max_len + 1) for s in itertools.product([v for v in range(V) if v != model.eos_id],
                                                                          repeat=n)]
    L = max(max_len, 1)
    tokens = torch.tensor([s + [0] * (L - len(s)) for s in seqs])
    lengths = torch.tensor([len(s) for s in seqs])
    speech = enc.states[b : b + 1].expand(len(seqs), -1, -1)
    with torch.no_grad():
        state = model.context(speech, enc.lens[b : b + 1].expand(len(seqs)))
        totals = model.transcript_log_probs(state, tokens, lengths).double().sum(1)
    return sorted(zip(totals.tolist(), seqs), key=lambda x: -x[0])


@pytest.mark.parametrize("interface,free_eos", [("prefix", False), ("merged_attention", False), ("prefix", True)])
def test_wide_beam_equals_exhaustive_search(char_dir, interface, free_eos):
    model = make_model(char_dir, interface, PromptConfig("A", "B"))
    batch = dummy_batch(2, max_samples=3200, seed=1)
    enc = encoder_output(model, batch.audio, batch.audio_lens)
    max_len = 3
    search = search_for(model, beam=5 ** max_len, nbest=4, max_length=max_len, max_length_ratio=None, free_eos=free_eos)
    for b, entries in enumerate(search(enc, batch.ids)):
        ref = exhaustive(model, enc, b, max_len)[:4]
        assert [e.tokens for e in entries] == [r[1] for r in ref]
        assert [e.score for e in entries] == pytest.approx([r[0] for r in ref], abs=1e-4)
        assert [e.scores["speech_llm"] for e in entries] == pytest.approx([r[0] for r in ref], abs=1e-4)


@pytest.mark.parametrize("free_eos", [False, True])
def test_batched_equals_single_and_early_stop_is_exact(char_dir, free_eos):
    model = make_model(char_dir, prompt=PromptConfig("AB ", " BA"))
    batch = dummy_batch(3, max_samples=4000, seed=2)
    enc = encoder_output(model, batch.audio, batch.audio_lens)
    search = search_for(model, beam=4, nbest=3, max_length=6, max_length_ratio=None, free_eos=free_eos)
    together = assert_batched_equals_single(search, enc, batch.ids, encoded_alone(model, batch.audio, batch.audio_lens))
    full_length = search_for(model, beam=4, nbest=3, max_length=6, max_length_ratio=None, free_eos=free_eos)
    full_length.exact_stop = False  # only "nothing runs any more" ends an utterance: every step to the maximum
    assert search.exact_stop
    unstopped = full_length(enc, batch.ids)
    assert [[e.tokens for e in u] for u in unstopped] == [[e.tokens for e in t] for t in together]


def test_shared_prefill_equals_prefill_per_hypothesis(char_dir):
    model = make_model(char_dir, prompt=PromptConfig("A ", " B"))
    batch = dummy_batch(2, max_samples=4000, seed=3)
    enc = encoder_output(model, batch.audio, batch.audio_lens)
    K = 3
    scorer = SpeechLLMScorer(model)
    shared = scorer.init_state(2, K, enc)
    rep = torch.arange(2).repeat_interleave(K)
    own = model.context(enc.states[rep], enc.lens[rep])  # prefilled K times, as generate() does
    tokens = torch.randint(3, 6, (2 * K, 4), generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([1, 2, 4, 3, 0, 2])
    logp_shared, _ = scorer.score(tokens, lengths, shared)
    ref = model.transcript_log_probs(own, tokens, lengths)  # full forward from the per-hypothesis context
    with torch.no_grad():
        hidden, _ = model.llm.append(model.llm.embed(tokens), lengths, own)
    last = torch.where(lengths[:, None] > 0, hidden[torch.arange(2 * K), (lengths - 1).clamp(min=0)], own.last_hidden)
    assert torch.allclose(logp_shared, model.llm.head(last), atol=1e-5)
    assert ref.shape == (2 * K, 5)


def test_beam_one_equals_hf_generate_greedy(char_dir):
    model = make_model(char_dir, prompt=PromptConfig("AB ", " A"))
    batch = dummy_batch(3, max_samples=4000, seed=4)
    search = search_for(model, beam=1, max_length=8, max_length_ratio=None)
    for b in range(3):
        audio, lens = batch.audio[b : b + 1, : batch.audio_lens[b]], batch.audio_lens[b : b + 1]
        enc = encoder_output(model, audio, lens)
        ours = search(enc)[0][0].tokens
        llm = model.llm
        embeds = torch.cat([llm.embed(model.prompt_before), enc.states[0], llm.embed(model.prompt_after),
                            llm.embed(torch.tensor([model.bos_id]))])[None]
        with torch.no_grad():
            out = llm.hf_model.generate(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
                                        max_new_tokens=9, do_sample=False, num_beams=1, eos_token_id=model.eos_id,
                                        pad_token_id=model.eos_id)
        theirs = out[0].tolist()
        theirs = theirs[: theirs.index(model.eos_id)] if model.eos_id in theirs else theirs
        assert ours == theirs[:8]


def test_scorers_must_share_the_label_space(char_dir):
    model = make_model(char_dir)
    other = SpeechLLMScorer(model)
    other.vocab_size = lambda: 99
    with pytest.raises(ValueError, match="one label space"):
        LabelSyncSearch({"a": SpeechLLMScorer(model), "b": other}, {"a": 1.0, "b": 0.5}, eos_id=2, beam=2)


def test_lm_fusion_on_a_speech_llm_equals_exhaustive_search_of_the_sum(char_dir):
    """An LM in the model's labels joins through the config (fusion.weights): the search maximises
    log p_SLLM + λ·log p_LM (EOS of both included), and reports each score unweighted; λ = 0 changes nothing."""
    from asrllm.data.tokenizer import load_tokenizer
    from asrllm.models.llm import build_llm
    from asrllm.search import FusionConfig, SearchConfig, build_search
    from asrllm.search.lm_scorer import LMScorer

    model = make_model(char_dir)
    torch.manual_seed(5)
    lm = build_llm(LLMConfig(arch=dict(model_type="llama", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                       num_attention_heads=2)), label_tokenizer=load_tokenizer(char_dir)).eval()
    with torch.no_grad():
        lm.hf_model.get_output_embeddings().weight.mul_(8.0)
    batch = dummy_batch(2, max_samples=3200, seed=6)
    enc = encoder_output(model, batch.audio, batch.audio_lens)
    max_len, lam = 3, 0.7

    def search(weight):
        cfg = SearchConfig(method="label_sync", beam=5 ** max_len, nbest=3, max_length=max_len, max_length_ratio=None,
                           fusion=FusionConfig(schedule="label_wise", weights={"lm": weight}))
        return build_search(cfg, blank_id=0, scorers={"lm": LMScorer(lm)}, model_scorers={"speech_llm": SpeechLLMScorer(model)},
                            eos_id=model.eos_id)(enc, batch.ids)

    fused, plain = search(lam), search(0.0)
    alone = search_for(model, beam=5 ** max_len, nbest=3, max_length=max_len, max_length_ratio=None)(enc, batch.ids)
    for b in range(2):
        ref = exhaustive(model, enc, b, max_len)  # [(log p_SLLM, labels)]
        seqs = [r[1] for r in ref]
        L = max(max_len, 1)
        tokens = torch.tensor([s + [0] * (L - len(s)) for s in seqs])
        with torch.no_grad():
            lm_logp = lm.token_log_probs(tokens, torch.tensor([len(s) for s in seqs])).double().sum(1).tolist()
        total = sorted(((sl + lam * lp, sl, lp, s) for (sl, s), lp in zip(ref, lm_logp)), key=lambda x: -x[0])[:3]
        assert [e.tokens for e in fused[b]] == [t[3] for t in total]
        assert [e.score for e in fused[b]] == pytest.approx([t[0] for t in total], abs=1e-4)
        assert [e.scores["lm"] for e in fused[b]] == pytest.approx([t[2] for t in total], abs=1e-4)
        assert [e.tokens for e in plain[b]] == [e.tokens for e in alone[b]]


def greedy_continuation_with_every_end(model, enc, b, max_len):
    """free_eos at beam 1, by full forward passes: follow the best non-EOS label from the empty prefix and
    end it after each of its prefixes; -> (best total log p incl. EOS, its labels)."""
    V = model.llm.vocab_size
    state = model.context(enc.states[b : b + 1], enc.lens[b : b + 1])

    def logp(seq):  # (log p of the labels, log p of the labels + EOS)
        cols = model.transcript_log_probs(state, torch.tensor([seq or [0]]), torch.tensor([len(seq)]))[0].double()
        return cols[: len(seq)].sum().item(), cols.sum().item()

    prefix, best = [], (-float("inf"), [])
    with torch.no_grad():
        for t in range(max_len + 1):
            best = max(best, (logp(prefix)[1], list(prefix)), key=lambda x: x[0])
            if t == max_len:
                break
            prefix.append(max((v for v in range(V) if v != model.eos_id), key=lambda v: logp(prefix + [v])[0]))
    return best


def test_free_eos_at_beam_one_ends_the_greedy_path_where_it_scores_best(char_dir):
    model = make_model(char_dir, prompt=PromptConfig("AB ", " BA"), seed=3)
    batch = dummy_batch(4, max_samples=4000, seed=5)
    enc = encoder_output(model, batch.audio, batch.audio_lens)
    max_len = 6
    free = search_for(model, beam=1, max_length=max_len, max_length_ratio=None, free_eos=True)(enc, batch.ids)
    plain = search_for(model, beam=1, max_length=max_len, max_length_ratio=None)(enc, batch.ids)
    for b in range(4):
        score, labels = greedy_continuation_with_every_end(model, enc, b, max_len)
        assert free[b][0].tokens == labels
        assert free[b][0].score == pytest.approx(score, abs=1e-4)
        assert free[b][0].score >= plain[b][0].score - 1e-6  # plain greedy ends on one of these prefixes too
    assert any(f[0].tokens != p[0].tokens for f, p in zip(free, plain))  # the rule matters on this model

