"""`CTCDraftSearch`: self-speculative decoding — CTC greedy drafts verified by the model in one pass.

(IBM, arXiv 2603.11243.) A model with a CTC head (a speech LLM's aux CTC, an AED's CTC) has a
cheap hypothesis for every utterance: the CTC greedy path, collapsed. Where the CTC posterior is
confident (every frame's best posterior ≥ `threshold`), that draft is checked with ONE teacher-
forced forward pass of the main model over draft + EOS: if the model's most probable next label is
the draft's at every position and EOS at its end, the draft is exactly what greedy decoding of
the model would produce, and it is the utterance's result; otherwise (or where the CTC is not
confident) the utterance is decoded by the wrapped label-synchronous search as usual. Verification
is per utterance: a draft is accepted whole or not at all.

Exact for greedy decoding of the model alone (beam 1, no other scorer): every accepted draft is
the greedy hypothesis, every other utterance is searched, so the output is that of the search.
With a beam or with joint CTC weights the accepted draft is the model's greedy hypothesis, not
necessarily the beam's best: then it is a speed-up that can change results, to be measured.
The reported scores are those the wrapped search would give this hypothesis (weighted sum of the
main model's and, when joint, the CTC log-probability of the whole draft, length-normalised alike).

Shapes: B utterances, C of them drafted, T CTC frames, L draft labels, V labels.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from asrllm.search.hyps import NBestEntry
from asrllm.search.label_sync import LabelSyncSearch
from asrllm.search.scorer import EncoderOutput


@dataclasses.dataclass
class DraftStats:
    """What the drafts did since the last reset (reports only)."""

    utterances: int = 0
    drafted: int = 0  # confident enough to verify
    accepted: int = 0  # verified: the model agrees at every position

    def reset(self) -> None:
        self.utterances = self.drafted = self.accepted = 0


class CTCDraftSearch:
    """A `LabelSyncSearch` (main model, optionally + "ctc") that first tries each utterance's CTC greedy draft."""

    def __init__(self, search: LabelSyncSearch, blank_id: int, threshold: float) -> None:
        extra = sorted(set(search.names[1:]) - {"ctc"})
        if extra:
            raise ValueError(f"CTC drafts verify the main model (and joint CTC) only; this search also fuses {extra}")
        if search.nbest != 1:
            raise ValueError(f"CTC drafts give one hypothesis per utterance; nbest={search.nbest} asks for more")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"CTCDraftSearch: threshold={threshold} is a posterior probability in [0, 1]")
        self.search = search
        self.blank_id = blank_id
        self.threshold = threshold
        self.stats = DraftStats()

    def __call__(self, enc: EncoderOutput, utt_ids: list[str] | None = None) -> list[list[NBestEntry]]:
        if enc.ctc_log_probs is None:
            raise ValueError("CTCDraftSearch needs CTC log-probs (EncoderOutput.ctc_log_probs)")
        B = enc.batch_size
        ids = utt_ids if utt_ids is not None else [str(b) for b in range(B)]
        drafts, confident = self._drafts(enc)
        max_len = self.search.max_lengths(enc)  # (B,)
        drafted = [b for b in range(B) if confident[b] and len(drafts[b]) <= int(max_len[b])
                   and self.search.eos_id not in drafts[b]]
        accepted: dict[int, list[NBestEntry]] = {}
        if drafted:
            verified = self._verify(enc.rows(drafted), [drafts[b] for b in drafted], [ids[b] for b in drafted])
            accepted = {b: entries for b, entries in zip(drafted, verified) if entries is not None}
        rest = [b for b in range(B) if b not in accepted]
        searched = dict(zip(rest, self.search(enc.rows(rest), [ids[b] for b in rest]))) if rest else {}
        self.stats.utterances += B
        self.stats.drafted += len(drafted)
        self.stats.accepted += len(accepted)
        return [accepted[b] if b in accepted else searched[b] for b in range(B)]

    def _drafts(self, enc: EncoderOutput) -> tuple[list[list[int]], list[bool]]:
        """Per utterance the collapsed CTC greedy labels and whether every frame's best posterior >= threshold."""
        lens = enc.ctc_lens if enc.ctc_lens is not None else enc.lens
        best, path = enc.ctc_log_probs.max(dim=-1)  # (B, T) each
        drafts, confident = [], []
        for b in range(enc.batch_size):
            t = int(lens[b])
            frames = path[b, :t]
            keep = torch.ones_like(frames, dtype=torch.bool)
            keep[1:] = frames[1:] != frames[:-1]
            labels = frames[keep & (frames != self.blank_id)]
            drafts.append(labels.tolist())
            confident.append(t > 0 and bool(best[b, :t].min() >= torch.tensor(self.threshold).log()))
        return drafts, confident

    def _verify(self, enc: EncoderOutput, drafts: list[list[int]], ids: list[str]) -> list[list[NBestEntry] | None]:
        """[entry] for each draft the main model agrees with everywhere (None where it does not)."""
        search = self.search
        main = search.names[0]
        scorer = search.scorers[main]
        C, L = len(drafts), max(len(d) for d in drafts)
        tokens = torch.tensor([d + [0] * (L - len(d)) for d in drafts], dtype=torch.long, device=enc.lens.device)
        lengths = torch.tensor([len(d) for d in drafts], device=enc.lens.device)  # (C,)
        dist = scorer.label_distributions(tokens, lengths, scorer.init_state(C, 1, enc))  # (C, L + 1, V)
        pos = torch.arange(L + 1, device=tokens.device)
        targets = torch.cat([tokens, tokens[:, :1]], dim=1).masked_fill(pos == lengths[:, None], search.eos_id)
        inside = pos <= lengths[:, None]  # (C, L + 1) the draft's labels and its EOS
        agree = ((dist.argmax(dim=-1) == targets) | ~inside).all(dim=1)  # (C,)
        totals = {main: dist.double().gather(2, targets[..., None])[..., 0].masked_fill(~inside, 0.0).sum(1)}
        if "ctc" in search.names:
            lens = enc.ctc_lens if enc.ctc_lens is not None else enc.lens
            totals["ctc"] = -F.ctc_loss(enc.ctc_log_probs.double().transpose(0, 1), tokens, lens, lengths,
                                        blank=self.blank_id, reduction="none", zero_infinity=False)
        weights = dict(zip(search.names, search.weights.tolist()))
        total = sum(weights[name] * value for name, value in totals.items())  # (C,)
        ranked = search.rank_score(total, lengths)
        out: list[list[NBestEntry] | None] = []
        for c in range(C):
            if not bool(agree[c]):
                out.append(None)
                continue
            text = search.detokenize(drafts[c]) if search.detokenize else ""
            out.append([NBestEntry(ids[c], 0, drafts[c], text, float(ranked[c]),
                                   {name: float(value[c]) for name, value in totals.items()})])
        return out

