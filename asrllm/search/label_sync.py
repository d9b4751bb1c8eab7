"""`LabelSyncSearch`: the one label-synchronous beam search (a speech LLM or an AED, alone, with
LMs fused, or jointly with CTC prefix scores).

Shapes: B utterances (Bₐ still searching), K beam, N = Bₐ·K hypotheses (hypothesis n belongs to
utterance n // K), V labels, S candidates scored per hypothesis (V, or the pre-beam P), F scorers,
L label capacity.

Per step, for all hypotheses of all utterances at once (ESPnet's BatchBeamSearch, without its name
dispatch; whisper's `_main_loop` for the end rules):
1. every full scorer gives log p(label | prefix) over V; their weighted sum is the provisional score;
2. with partial scorers (a CTC prefix scorer) only the best `pre_beam` labels by that sum become
   candidates, and only those get the partial scores (`pre_beam_eos`: the best P labels other than
   EOS, plus EOS, so that a partial scorer can end a hypothesis the full scorers would continue;
   `pre_beam_threshold` T: of those, only labels within T of their hypothesis' best by that sum,
   the block cut to the widest row: fewer prefix scores where every hypothesis is sure);
3. the weighted sum over all scorers is added to each hypothesis' total; per utterance the best K
   of its K·S candidates survive; those that chose EOS are finished, the others run on; scorer
   states follow with `select_state`;
4. an utterance is done when nothing of it runs any more, or (length_norm 0, all weights >= 0: totals
   only fall) when its `nbest` best finished hypotheses score at least its best running one: an exact
   stop, not a heuristic; with length normalisation, once it has K finished ones (whisper's rule).
   Done utterances leave the batch.
With `free_eos` step 3 changes: every hypothesis' EOS extension is offered to its utterance's finished
list (kept when it ranks among the `nbest` best finished so far) and the K beam slots go to the best
continuing candidates only. ESPnet's top K over all candidates prunes an EOS ranked low at its step
even when it would end best overall: the empty output on noise, which a speech LLM trained without
noise scores above any word sequence but ranks below the first words (docs/joint_ctc.md). Without
the exact stop (length normalisation) such a search runs until nothing of the utterance runs.
Hypotheses at their utterance's maximum length may only end (max_length_ratio · speech vectors,
capped by max_length and by what each scorer has room for, `Scorer.max_labels`). The final order
divides each total by (labels + 1)^length_norm (EOS counted): 0 = plain sum, 1 = per label.
Pruning always uses the plain totals.

The first scorer is the main model; every scorer's unweighted score is kept per hypothesis and
reported in `NBestEntry.scores` (the EOS score of each included).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from asrllm.batched import BatchedState
from asrllm.search.hyps import NBestEntry
from asrllm.search.scorer import EncoderOutput, PartialScorer, Scorer


class LabelSyncSearch:
    """Batched label-synchronous beam search over named, weighted scorers that share one label space."""

    def __init__(
        self,
        scorers: Mapping[str, Scorer],
        weights: Mapping[str, float],
        *,
        eos_id: int,
        beam: int,
        nbest: int = 1,
        length_norm: float = 0.0,
        max_length_ratio: float | None = 1.0,
        max_length: int | None = None,
        pre_beam: int | None = None,
        pre_beam_eos: bool = False,
        pre_beam_threshold: float | None = None,
        free_eos: bool = False,
        detokenize: Callable[[list[int]], str] | None = None,
    ) -> None:
        if not scorers or set(scorers) != set(weights):
            raise ValueError(f"LabelSyncSearch: scorers {sorted(scorers)} and weights {sorted(weights)} must name the same")
        vocab = {name: s.vocab_size() for name, s in scorers.items()}
        if len(set(vocab.values())) != 1:
            raise ValueError(f"LabelSyncSearch: every scorer must score one label space; vocabulary sizes {vocab}")
        if max_length_ratio is None and max_length is None:
            raise ValueError("LabelSyncSearch: set max_length_ratio or max_length (a search must end)")
        if not 1 <= nbest <= beam:
            raise ValueError(f"LabelSyncSearch: nbest={nbest} must lie in [1, beam={beam}]")
        self.names = list(scorers)
        self.scorers = dict(scorers)
        self.weights = torch.tensor([float(weights[n]) for n in self.names], dtype=torch.float64)  # (F,)
        self.full = [n for n in self.names if not isinstance(scorers[n], PartialScorer)]
        self.partial = [n for n in self.names if isinstance(scorers[n], PartialScorer)]
        if not self.full:
            raise ValueError("LabelSyncSearch: at least one full-vocabulary scorer must propose candidates")
        self.vocab_size = next(iter(vocab.values()))
        self.eos_id = eos_id
        self.beam = beam
        self.nbest = nbest
        self.length_norm = length_norm
        self.max_length_ratio = max_length_ratio
        self.max_length = max_length
        self.pre_beam = pre_beam if self.partial else None  # without partial scorers every label is scored anyway
        self.pre_beam_eos = pre_beam_eos  # the pre-beam is the best P labels other than EOS, plus EOS
        if pre_beam_threshold is not None and not (self.pre_beam is not None and pre_beam_threshold >= 0
                                                   and weights[self.names[0]] > 0):
            raise ValueError(f"LabelSyncSearch: pre_beam_threshold={pre_beam_threshold} needs a pre-beam (partial "
                             "scorers), a main (first) scorer of weight > 0, and must be >= 0")
        self.pre_beam_threshold = pre_beam_threshold  # pre-beam labels this far below their row's best are dropped
        if free_eos and self.pre_beam is not None and not pre_beam_eos:
            raise ValueError("LabelSyncSearch: free_eos with a pre-beam needs pre_beam_eos (every hypothesis' EOS "
                             "must be scored by the partial scorers too)")
        self.free_eos = free_eos  # EOS extensions end hypotheses without taking beam slots
        self.exact_stop = length_norm == 0 and bool((self.weights >= 0).all())  # totals never rise
        self.detokenize = detokenize

    def max_lengths(self, enc: EncoderOutput) -> Tensor:
        """(B,) int64 most labels a hypothesis of each utterance may have before EOS."""
        cap = torch.full_like(enc.lens, self.max_length if self.max_length is not None else torch.iinfo(torch.int64).max)
        if self.max_length_ratio is not None:
            cap = torch.minimum(cap, (enc.lens.double() * self.max_length_ratio).ceil().long())
        for scorer in self.scorers.values():  # e.g. an LLM's positions left after the speech and prompt
            room = scorer.max_labels(enc)
            if room is not None:
                cap = torch.minimum(cap, room)
        return cap

    @torch.inference_mode()
    def __call__(self, enc: EncoderOutput, utt_ids: list[str] | None = None) -> list[list[NBestEntry]]:
        """Per utterance its `nbest` best hypotheses (label ids without BOS/EOS), best first."""
        B, K, F = enc.batch_size, self.beam, len(self.names)
        ids = utt_ids if utt_ids is not None else [str(b) for b in range(B)]
        if len(ids) != B:
            raise ValueError(f"LabelSyncSearch: {len(ids)} utterance ids for a batch of {B}")
        dev = enc.lens.device
        weights = self.weights.to(dev)
        max_len = self.max_lengths(enc)  # (B,)
        cap = int(max_len.max()) if B else 0
        states: dict[str, BatchedState | None] = {n: self.scorers[n].init_state(B, K, enc) for n in self.names}
        utt = torch.arange(B, device=dev).repeat_interleave(K)  # (N,) original utterance of each hypothesis
        tokens = torch.zeros(B * K, max(cap, 1), dtype=torch.long, device=dev)  # (N, L)
        lengths = torch.zeros(B * K, dtype=torch.long, device=dev)  # (N,)
        first = torch.arange(B * K, device=dev) % K == 0
        total = torch.where(first, 0.0, -math.inf).double()  # (N,) one live empty hypothesis per utterance
        scores = torch.zeros(B * K, F, dtype=torch.float64, device=dev)  # (N, F) unweighted, per scorer
        finished: list[tuple[Tensor, Tensor, Tensor, Tensor, Tensor]] = []  # (utt, tokens, lengths, total, scores)
        best_done = torch.full((B, self.nbest), -math.inf, dtype=torch.float64, device=dev)  # ranking scores
        num_done = torch.zeros(B, dtype=torch.long, device=dev)

        for _ in range(cap + 1):
            cand, cand_scores, new_states = self._score(tokens, lengths, states, weights)  # (N, S), F × (N, S)
            n, S = cand.shape
            step = total[:, None] + self._weighted(cand_scores)  # (N, S)
            ending = lengths >= max_len[utt]  # (N,) at the maximum length: EOS only
            if self.free_eos:  # every EOS extension is offered to the finished lists; the K slots go on
                is_eos = cand == self.eos_id  # (N, S): one column per hypothesis
                eos_total, eos_col = step.masked_fill(~is_eos, -math.inf).max(dim=1)  # (N,)
                enters = self.rank_score(eos_total, lengths) > best_done[utt, -1]  # (N,) into its utterance's n-best
                rows = enters.nonzero().squeeze(1)
                if rows.numel():
                    eos_scores = scores[rows] + torch.stack([s[rows, eos_col[rows]] for s in cand_scores], dim=1)
                    self._finish(finished, best_done, num_done, utt[rows], tokens[rows], lengths[rows],
                                 eos_total[rows], eos_scores)
                step = step.masked_fill(is_eos | ending[:, None], -math.inf)
            elif bool(ending.any()):
                step = step.masked_fill(ending[:, None] & (cand != self.eos_id), -math.inf)
            Ba = n // K
            top, idx = step.view(Ba, K * S).topk(K, dim=1)  # (Bₐ, K) best candidates per utterance
            src = (idx // S + torch.arange(Ba, device=dev)[:, None] * K).view(-1)  # (N,) parent hypothesis
            col = (idx % S).view(-1)  # (N,)
            top = top.view(-1)
            label = cand[src, col]  # (N,)
            alive = top > -math.inf
            ends = alive & (label == self.eos_id)
            runs = alive & ~ends
            new_scores = scores[src] + torch.stack([s[src, col] for s in cand_scores], dim=1)  # (N, F)
            tokens, lengths = tokens[src], lengths[src]
            if bool(ends.any()):
                rows = ends.nonzero().squeeze(1)
                self._finish(finished, best_done, num_done, utt[rows], tokens[rows], lengths[rows], top[rows],
                             new_scores[rows])
            write = lengths.clamp(max=tokens.shape[1] - 1)
            tokens[torch.arange(n, device=dev), write] = torch.where(runs, label, tokens[torch.arange(n, device=dev), write])
            lengths = lengths + runs.long()
            total = torch.where(runs, top, -math.inf)
            scores = new_scores
            states = {name: self.scorers[name].select_state(new_states[name], src, torch.where(runs, label, -1))
                      for name in self.names}
            keep = ~self._done(total.view(Ba, K), utt.view(Ba, K)[:, 0], best_done, num_done)  # (Bₐ,)
            if not bool(keep.any()):
                break
            if not bool(keep.all()):  # done utterances leave the batch
                rows = keep.repeat_interleave(K).nonzero().squeeze(1)
                utt, tokens, lengths, total, scores = utt[rows], tokens[rows], lengths[rows], total[rows], scores[rows]
                states = {name: self.scorers[name].select_state(st, rows) for name, st in states.items()}
        return self._nbest(finished, B, ids)

    def _score(
        self, tokens: Tensor, lengths: Tensor, states: dict[str, BatchedState | None], weights: Tensor
    ) -> tuple[Tensor, list[Tensor], dict[str, BatchedState | None]]:
        """Candidates (N, S), their unweighted float64 scores (N, S) per scorer (in `names` order), and
        the scorers' new states. One (N, S) tensor per scorer, never an (N, S, F) stack: with V = 49k
        labels the search's own full-vocabulary passes cost as much as a small LLM's step."""
        new_states: dict[str, BatchedState | None] = {}
        full: dict[str, Tensor] = {}
        for name in self.full:
            full[name], new_states[name] = self.scorers[name].score(tokens, lengths, states[name])  # (N, V)
        n = tokens.shape[0]
        if self.pre_beam is None:
            cand = torch.arange(self.vocab_size, device=tokens.device).expand(n, -1)  # (N, V)
            picked = {name: logp.double() for name, logp in full.items()}
        else:
            provisional = sum(weights[self.names.index(name)] * logp.double() for name, logp in full.items())
            if self.pre_beam_eos:  # the partial scorers judge ending too (CTC: is the audio used up?)
                provisional[:, self.eos_id] = -math.inf
            best, cand = provisional.topk(min(self.pre_beam, self.vocab_size - self.pre_beam_eos), dim=1)  # (N, P), best first
            dropped = None
            if self.pre_beam_threshold is not None:  # the block narrows to the widest row's count within it
                within = best >= best[:, :1] - self.pre_beam_threshold  # (N, P)
                width = int(within.sum(dim=1).max())
                cand, dropped = cand[:, :width], ~within[:, :width]
            if self.pre_beam_eos:
                cand = torch.cat([cand, torch.full_like(cand[:, :1], self.eos_id)], dim=1)  # (N, P' + 1)
                if dropped is not None:
                    dropped = torch.cat([dropped, torch.zeros_like(dropped[:, :1])], dim=1)
            picked = {name: logp.gather(1, cand).double() for name, logp in full.items()}
            if dropped is not None:  # the main model (weight 1 − λ > 0) rules them out
                picked[self.names[0]] = picked[self.names[0]].masked_fill(dropped, -math.inf)
        for name in self.partial:
            scorer = self.scorers[name]
            assert isinstance(scorer, PartialScorer)
            logp, new_states[name] = scorer.score_partial(tokens, lengths, cand, states[name])  # (N, S)
            picked[name] = logp.double()
        return cand, [picked[name] for name in self.names], new_states

    def _weighted(self, scores: list[Tensor]) -> Tensor:
        """(N, S) Σ_f w_f · scores_f, without a multiply for weight 1 (the lone main model)."""
        total = None
        for w, s in zip(self.weights.tolist(), scores):
            term = s if w == 1.0 else w * s
            total = term if total is None else total + term
        return total

    def _finish(self, finished: list[tuple[Tensor, ...]], best_done: Tensor, num_done: Tensor, utt: Tensor,
                tokens: Tensor, lengths: Tensor, total: Tensor, scores: Tensor) -> None:
        """Record ended hypotheses (rows in utterance order, at most K per utterance) in `finished` and
        update each utterance's `nbest` best ranking scores (B, nbest) and count (B,) in place."""
        finished.append((utt, tokens, lengths, total, scores))
        ranked = self.rank_score(total, lengths)
        per_utt = torch.full((best_done.shape[0], self.beam), -math.inf, dtype=torch.float64, device=total.device)
        slot = torch.arange(utt.numel(), device=utt.device) - torch.searchsorted(utt, utt)
        per_utt[utt, slot] = ranked
        best_done[:] = torch.cat([best_done, per_utt], dim=1).topk(self.nbest, dim=1).values
        num_done += torch.bincount(utt, minlength=num_done.shape[0])

    def rank_score(self, total: Tensor, lengths: Tensor) -> Tensor:
        """Final ranking score of finished hypotheses: total / (labels + 1)^length_norm."""
        if self.length_norm == 0:
            return total
        return total / (lengths + 1).double() ** self.length_norm

    def _done(self, total: Tensor, utt: Tensor, best_done: Tensor, num_done: Tensor) -> Tensor:
        """(Bₐ,) bool: utterances whose search is over. total (Bₐ, K) running totals; utt (Bₐ,)."""
        best_running = total.max(dim=1).values  # (Bₐ,)
        over = best_running == -math.inf
        if self.exact_stop:
            return over | (best_done[utt, -1] >= best_running)
        if self.free_eos:  # every hypothesis ends at every step: K ended ones say nothing; run to the end
            return over
        return over | (num_done[utt] >= self.beam)

    def _nbest(self, finished: list[tuple[Tensor, ...]], B: int, ids: list[str]) -> list[list[NBestEntry]]:
        """Per utterance its `nbest` best finished hypotheses by ranking score, as `NBestEntry` lists."""
        out: list[list[NBestEntry]] = [[] for _ in range(B)]
        if not finished:
            return [[NBestEntry(i, 0, [], "", -math.inf, {})] for i in ids]
        utt, tokens, lengths, total, scores = (torch.cat(parts) for parts in zip(*finished))
        ranked = self.rank_score(total, lengths)
        order = torch.argsort(-ranked, stable=True)
        order = order[torch.argsort(utt[order], stable=True)]  # by utterance, best first within
        for i in order.tolist():
            b = int(utt[i])
            if len(out[b]) < self.nbest:
                labels = tokens[i, : int(lengths[i])].tolist()
                out[b].append(NBestEntry(ids[b], len(out[b]), labels, self.detokenize(labels) if self.detokenize else "",
                                         float(ranked[i]), dict(zip(self.names, scores[i].tolist()))))
        return [entries or [NBestEntry(ids[b], 0, [], "", -math.inf, {})] for b, entries in enumerate(out)]
