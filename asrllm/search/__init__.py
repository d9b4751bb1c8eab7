"""Search: scorer protocol, CTC greedy and time-synchronous prefix beam search, fusion schedules.

Public API only; see STYLE.md "A proposed decomposition of asrllm/search/".
"""

from asrllm.batched import BatchedState
from asrllm.search.build import SCHEDULES, SEARCHES, CTCSearch, build_schedule, build_search
from asrllm.search.config import FusionConfig, SearchConfig
from asrllm.search.fusion import FusionSchedule, LabelPrior, LabelWiseFusion, NoFusion
from asrllm.search.greedy import CTCGreedySearch, ctc_greedy
from asrllm.search.hyps import NBestEntry, read_nbest_jsonl, write_nbest_jsonl
from asrllm.search.scorer import EncoderOutput, PartialScorer, Scorer
from asrllm.search.time_sync import CTCTimeSyncSearch

__all__ = [
    "SCHEDULES",
    "SEARCHES",
    "CTCGreedySearch",
    "CTCSearch",
    "CTCTimeSyncSearch",
    "EncoderOutput",
    "FusionConfig",
    "FusionSchedule",
    "LabelPrior",
    "LabelWiseFusion",
    "NBestEntry",
    "NoFusion",
    "PartialScorer",
    "Scorer",
    "BatchedState",
    "SearchConfig",
    "build_schedule",
    "build_search",
    "ctc_greedy",
    "read_nbest_jsonl",
    "write_nbest_jsonl",
]
