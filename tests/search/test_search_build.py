"""Config validation, registries and wiring of asrllm.search (STYLE.md R2, R14)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from asrllm.config import ConfigError, from_dict
from asrllm.search import (
    CTCGreedySearch,
    CTCTimeSyncSearch,
    FusionConfig,
    LabelPrior,
    LabelWiseFusion,
    NoFusion,
    SearchConfig,
    build_search,
)
from asrllm.search.scorer import Scorer


def test_yaml_dict_to_config_and_unknown_keys() -> None:
    cfg = from_dict(SearchConfig, {"beam": 16, "token_prune_topk": None, "fusion": {"prior_scale": 0.3}})
    assert cfg.beam == 16 and cfg.token_prune_topk is None and cfg.fusion.prior_scale == 0.3
    with pytest.raises(ConfigError, match="'bema'"):
        from_dict(SearchConfig, {"bema": 4})
    with pytest.raises(ConfigError, match="prior_scal"):
        from_dict(SearchConfig, {"fusion": {"prior_scal": 0.3}})


def test_misspelt_names_are_rejected_at_load_with_key_path_value_and_known_names() -> None:
    with pytest.raises(ConfigError) as e:
        from_dict(SearchConfig, {"method": "ctc_greedyy"}, "methods.greedy")
    assert str(e.value) == "methods.greedy.method: 'ctc_greedyy' is not one of ['ctc_greedy', 'ctc_time_sync', 'label_sync']"
    with pytest.raises(ConfigError) as e:
        from_dict(SearchConfig, {"fusion": {"schedule": "labelwise"}}, "methods.lm")
    assert str(e.value) == "methods.lm.fusion.schedule: 'labelwise' is not one of ['none', 'label_wise', 'delayed']"


def test_validation_errors_at_load_name_the_method_entry() -> None:
    with pytest.raises(ConfigError) as e:
        from_dict(SearchConfig, {"method": "ctc_greedy", "beam": 4}, "methods.greedy")
    assert str(e.value) == (
        "methods.greedy: method='ctc_greedy' keeps one path; beam=4 and nbest=1 must both be 1"
    )
    with pytest.raises(ConfigError) as e:
        from_dict(SearchConfig, {"fusion": {"prior_scale": -1}}, "methods.b")
    assert str(e.value) == "methods.b.fusion: prior_scale=-1.0 must be finite and >= 0"


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"beam": 0}, "beam=0"),
        ({"beam": 2, "nbest": 3}, "nbest=3"),
        ({"token_prune_topk": 0}, "token_prune_topk=0"),
        ({"token_min_logp": 1.0}, "token_min_logp=1.0"),
        ({"beam_threshold": 0.0}, "beam_threshold=0.0"),
        ({"method": "ctc_greedy"}, "method='ctc_greedy'"),
    ],
)
def test_option_errors_name_the_option(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SearchConfig(**kwargs)


def test_fusion_config_errors() -> None:
    with pytest.raises(ValueError, match="prior_scale=-1"):
        FusionConfig(prior_scale=-1.0)
    with pytest.raises(ValueError, match="'ctc'"):
        FusionConfig(weights={"ctc": 0.5})


def test_build_wires_and_rejects_unknown_names() -> None:
    search = build_search(SearchConfig(beam=4, nbest=2, token_prune_topk=None), blank_id=3)
    assert isinstance(search, CTCTimeSyncSearch)
    assert (search.beam, search.nbest, search.blank_id, search.token_prune_topk) == (4, 2, 3, None)
    assert isinstance(search.fusion, NoFusion) and search.fusion.prior is None
    greedy = build_search(SearchConfig(method="ctc_greedy", beam=1), blank_id=0, detokenize=str)
    assert isinstance(greedy, CTCGreedySearch)
    with pytest.raises(ValueError, match="search.method='beam' is unknown .*ctc_greedy, ctc_time_sync"):
        build_search(SearchConfig(method="beam"), blank_id=0)
    with pytest.raises(ValueError, match="fusion.schedule='labelwise' is unknown"):
        build_search(SearchConfig(fusion=FusionConfig(schedule="labelwise")), blank_id=0)
    with pytest.raises(ValueError, match="fusion.weights"):
        build_search(SearchConfig(fusion=FusionConfig(weights={"lm": 0.4})), blank_id=0)
    with pytest.raises(ValueError, match="ctc_greedy.*fusion"):
        build_search(SearchConfig(method="ctc_greedy", beam=1, fusion=FusionConfig(prior_scale=0.2)), blank_id=0)


def test_prior_wiring() -> None:
    cfg = SearchConfig(fusion=FusionConfig(prior_scale=0.3))
    with pytest.raises(ValueError, match="prior_scale=0.3 needs a label prior"):
        build_search(cfg, blank_id=0)
    search = build_search(cfg, blank_id=0, log_prior=torch.log(torch.tensor([0.5, 0.25, 0.25])))
    assert isinstance(search, CTCTimeSyncSearch) and search.fusion.weights == {"prior": -0.3}
    # scale 0: no prior object at all, even when a prior is at hand
    assert build_search(SearchConfig(), blank_id=0, log_prior=torch.zeros(3)).fusion.prior is None
    with pytest.raises(ValueError, match="non-finite"):
        LabelPrior(torch.tensor([0.0, float("-inf")]))


def test_config_is_frozen() -> None:
    cfg = SearchConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.beam = 3  # type: ignore[misc]
    assert dataclasses.replace(cfg, beam=3).beam == 3



class _Uniform(Scorer):
    """A stateless uniform LM over `v` labels (enough to test the wiring)."""

    def __init__(self, v: int) -> None:
        self.v = v

    def vocab_size(self) -> int:
        return self.v

    def init_state(self, batch_size, beam, enc):  # type: ignore[no-untyped-def]
        return None

    def score(self, tokens, lengths, state):  # type: ignore[no-untyped-def]
        return torch.full((tokens.shape[0], self.v), -math.log(self.v)), None


def test_label_wise_wiring_and_its_errors() -> None:
    cfg = SearchConfig(fusion=FusionConfig(schedule="label_wise", weights={"lm": 0.5}, prior_scale=0.2))
    search = build_search(cfg, blank_id=0, log_prior=torch.log(torch.tensor([0.5, 0.25, 0.25])),
                          scorers={"lm": _Uniform(3), "other": _Uniform(7)}, vocab_size=3)
    assert isinstance(search.fusion, LabelWiseFusion)
    assert search.fusion.weights == {"lm": 0.5, "prior": -0.2} and list(search.fusion.scorers) == ["lm"]
    with pytest.raises(ValueError, match=r"fusion.weights names \['lm'\], but no scorer of that name was given \(given: none\)"):
        build_search(cfg, blank_id=0, log_prior=torch.zeros(3))
    with pytest.raises(ValueError, match="'lm' has 7 labels but the AM has 3: fusion.schedule='label_wise' scores AM labels and needs one vocabulary"):
        build_search(cfg, blank_id=0, log_prior=torch.zeros(3), scorers={"lm": _Uniform(7)}, vocab_size=3)
    with pytest.raises(ValueError, match="needs fusion.weights"):
        build_search(SearchConfig(fusion=FusionConfig(schedule="label_wise")), blank_id=0)
    for bad in (float("nan"), -0.1, float("inf")):
        with pytest.raises(ValueError, match=r"weights\['lm'\]=.* must be finite and >= 0"):
            FusionConfig(schedule="label_wise", weights={"lm": bad})
    with pytest.raises(ValueError, match="prior_scale=nan must be finite"):
        FusionConfig(prior_scale=float("nan"))


def test_delayed_wiring_and_its_errors() -> None:
    from asrllm.data.tokenizer import CharTokenizer
    from asrllm.models.llm import LLMConfig, build_llm
    from asrllm.search.fusion import DelayedFusion
    from asrllm.search.lm_scorer import LMScorer

    for bad, match in [
        (dict(schedule="label_wise", weights={"lm": 1.0}, every=5), "every only apply to schedule='delayed'"),
        (dict(schedule="none", retokenize=True), "retokenize only apply to schedule='delayed'"),
        (dict(schedule="delayed", weights={"lm": 1.0}, trigger="end", every=5), "every=5 only applies to trigger='every'"),
        (dict(schedule="delayed", weights={"lm": 1.0}, every=0), "every=0 must be >= 1 frame"),
    ]:
        with pytest.raises(ValueError, match=match):
            FusionConfig(**bad)
    with pytest.raises(ConfigError, match="'sometimes' is not one of \\['every', 'end', 'shortest'\\]"):
        from_dict(FusionConfig, {"schedule": "delayed", "trigger": "sometimes"})

    cfg = SearchConfig(fusion=FusionConfig(schedule="delayed", weights={"lm": 0.5}, trigger="every", every=10))
    search = build_search(cfg, blank_id=0, scorers={"lm": _Uniform(3)}, vocab_size=3)
    assert isinstance(search.fusion, DelayedFusion) and search.fusion.every == 10 and search.fusion.retokenizers is None
    with pytest.raises(ValueError, match="'lm' has 3 labels but the AM has 5.*retokenize: true"):
        build_search(cfg, blank_id=0, scorers={"lm": _Uniform(3)}, vocab_size=5)
    v2 = dataclasses.replace(cfg, fusion=dataclasses.replace(cfg.fusion, retokenize=True))
    with pytest.raises(ValueError, match="retokenize=true needs the AM tokenizer"):
        build_search(v2, blank_id=0, scorers={"lm": _Uniform(3)}, vocab_size=3)
    am = CharTokenizer(list("AB"))
    with pytest.raises(ValueError, match=r"scorers \['lm'\] are not LMs with a tokenizer of their own"):
        build_search(v2, blank_id=0, scorers={"lm": _Uniform(3)}, vocab_size=3, am_tokenizer=am)
    lm_tok = CharTokenizer(list("ABC"))  # another vocabulary than the AM's: fine when re-tokenising
    lm = build_llm(LLMConfig(arch=dict(model_type="llama", hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                       num_attention_heads=2)), label_tokenizer=lm_tok).eval()
    search = build_search(v2, blank_id=0, scorers={"lm": LMScorer(lm)}, vocab_size=am.vocab_size, am_tokenizer=am)
    assert search.fusion.retokenizers["lm"].lm_tokenizer is lm_tok
