"""Time-synchronous CTC prefix beam search, batched over utterances AND hypotheses.

Shapes: B utterances, K beam, N = B·K hypotheses (hypothesis n belongs to utterance n // K),
T frames, V vocabulary, S candidate labels per frame, C = K·(1+S) candidates per utterance
(per hypothesis: 1 "stay" + S extensions), F fusion score names, L label capacity.

Notation (Graves et al. 2006 §3.2; Hannun et al. 2014, Alg. 1): for a prefix h after frame t,
  p_b(h)   log-prob of all alignments of frames 1..t that collapse to h and end in a blank,
  p_nb(h)  the same for alignments that end in h's last label a,
  x_t(c)   the frame's log-prob of label c; ε is the blank (id from the tokenizer, never assumed).
Per frame (icefall `_step_worker` cases, here for all N hypotheses at once):
  Case 0  *a + ε → *a    p_b'(h)   = logaddexp(p_b(h), p_nb(h)) + x_t(ε)
  Case 1  *a + a → *a    p_nb'(h)  = p_nb(h) + x_t(a)             (repeat collapses)
  Case 2  *a + a → *aa   p_nb'(ha) = p_b(h) + x_t(a)              (a repeat needs a blank between)
  Case 3  *a + b → *ab   p_nb'(hb) = logaddexp(p_b(h), p_nb(h)) + x_t(b)
Path recombination: an extension h+c whose label sequence is already a prefix in the beam is
merged into it (logaddexp of the p_nb terms). Prefixes carry a rolling hash of their labels and the
hash of their parent (the prefix without the last label); a K×K comparison per utterance finds
"child j extends beam member i", so the merge is a few tensor ops. Extensions that come from
different parents cannot coincide (prefixes in the beam are distinct), so this is the only merge.

Score of a prefix = logaddexp(p_b, p_nb) (the CTC score, kept apart) + Σ_f w_f · fusion_f, where
the fusion scores come from the `FusionSchedule` hooks (see fusion.py). Pruning keeps the K best
per utterance; frames past an utterance's length leave its prefixes untouched.

Why one hash pair and not label comparison: comparing (K, K, L) label tensors every frame costs
O(K²·L); two independent 31-bit polynomial hashes give a 62-bit key, compared in O(K²).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import Tensor

from asrllm.batched import BatchedState
from asrllm.search.frames import collapse_frames
from asrllm.search.fusion import FusionSchedule, NoFusion
from asrllm.search.hyps import NBestEntry, rank_nbest

_HASH_MOD = (2147483647, 2147483629)  # two primes < 2^31: h·base stays below 2^62 in int64
_HASH_BASE = (1000003, 911382323)


@dataclasses.dataclass
class CTCPrefixes(BatchedState):
    """The running prefixes of a time-synchronous search, hypothesis dimension N first."""

    tokens: Tensor  # (N, L) int64 labels; positions >= lengths hold the blank id
    lengths: Tensor  # (N,) int64
    last: Tensor  # (N,) int64 last label, the blank id for the empty prefix
    hash: Tensor  # (N, 2) int64 rolling hashes of the labels
    parent_key: Tensor  # (N,) int64 key of the prefix without its last label (-1 for the empty one)
    pb: Tensor  # (N,) log p_b
    pnb: Tensor  # (N,) log p_nb
    fusion: Tensor  # (N, F) unweighted fusion scores, summed over labels/frames


@dataclasses.dataclass(frozen=True)
class _Context:
    """What every frame of one call shares: fusion names/weights and index tensors built once."""

    names: list[str]  # fusion score names, F of them, in record order
    w: Tensor  # (F,) their weights
    stay_cols: Tensor  # (K,) column of each hypothesis' "stay" candidate in (B, C)
    utt_offset: Tensor  # (B, 1) first hypothesis index of each utterance, b·K
    cand_cols: Tensor  # (S,) 0..S-1
    hash_mod: Tensor  # (2,)
    hash_base: Tensor  # (2,)


def _stack(scores: dict[str, Tensor], names: list[str], shape: tuple[int, ...], w: Tensor) -> Tensor:
    """name -> tensor of `shape` dict to shape + (F,) in `names` order; a missing name counts 0, an
    unknown one (a misspelt scorer name in a schedule) is an error naming it."""
    unknown = sorted(set(scores) - set(names))
    if unknown:
        raise ValueError(f"fusion scores {unknown} have no weight (known scorers: {', '.join(names)})")
    zeros = torch.zeros(shape, dtype=w.dtype, device=w.device)
    return torch.stack([scores.get(n, zeros).to(w.dtype) for n in names], dim=-1)


def _key(h: Tensor) -> Tensor:
    """(…, 2) hash pair -> (…,) 62-bit key."""
    return h[..., 0] * 2147483648 + h[..., 1]


class CTCTimeSyncSearch:
    """Frame-synchronous CTC prefix beam search (Graves et al. 2006; Hannun et al. 2014), batched.

    Hypotheses of all utterances are scored together as tensors; the Python loop runs over frames
    only. Label scores other than CTC (LM, label prior) come in through `fusion`.

    >>> lp = torch.log(torch.tensor([[[.6, .4], [.6, .4]]]))  # T=2, V=2, blank 0
    >>> nbest = CTCTimeSyncSearch(blank_id=0, beam=2, nbest=2)(lp, torch.tensor([2]))[0]
    >>> [(e.tokens, round(e.score, 2)) for e in nbest]  # p("1") = .4·.6 + .6·.4 + .4·.4
    [([1], -0.45), ([], -1.02)]
    """

    def __init__(
        self,
        blank_id: int,
        beam: int = 8,
        nbest: int = 1,
        token_prune_topk: int | None = 16,
        token_min_logp: float | None = None,
        beam_threshold: float | None = None,
        blank_collapse: float | None = None,
        soft_collapse: float | None = None,
        fusion: FusionSchedule | None = None,
        detokenize: Callable[[list[int]], str] | None = None,
    ) -> None:
        if not 1 <= nbest <= beam:
            raise ValueError(f"CTCTimeSyncSearch: need 1 <= nbest={nbest} <= beam={beam}")
        self.blank_id = blank_id  # from the tokenizer
        self.beam = beam  # K
        self.nbest = nbest
        self.token_prune_topk = token_prune_topk  # S (None: all non-blank labels)
        self.token_min_logp = token_min_logp
        self.beam_threshold = beam_threshold
        self.blank_collapse = blank_collapse  # frames.collapse_frames thresholds (None: off)
        self.soft_collapse = soft_collapse
        self.fusion = fusion if fusion is not None else NoFusion()
        self.detokenize = detokenize

    @torch.inference_mode()
    def __call__(self, log_probs: Tensor, lens: Tensor, utt_ids: list[str] | None = None) -> list[list[NBestEntry]]:
        """log_probs (B, T, V) CTC log-softmax outputs, lens (B,) valid frames -> per utterance its N-best.

        Entries are sorted by total score; dead prefixes (score -inf) are left out, so a list can be
        shorter than nbest. The caller's tensors are not modified.
        """
        B, T, V = log_probs.shape
        if not 0 <= self.blank_id < V:
            raise ValueError(f"CTCTimeSyncSearch: blank_id={self.blank_id} outside the vocabulary of size {V}")
        if V < 2:
            raise ValueError(f"CTCTimeSyncSearch: vocabulary of size {V} has no label besides the blank")
        ids = utt_ids if utt_ids is not None else [str(b) for b in range(B)]
        if len(ids) != B:
            raise ValueError(f"CTCTimeSyncSearch: {len(ids)} utterance ids for a batch of {B}")
        lens = lens.to(log_probs.device)
        if B == 0:
            return []
        if int(lens.max()) > T or int(lens.min()) < 0:
            raise ValueError(f"CTCTimeSyncSearch: lens {lens.tolist()} outside [0, T={T}]")
        log_probs, lens = collapse_frames(log_probs, lens, self.blank_id, self.blank_collapse, self.soft_collapse)
        B, T, V = log_probs.shape
        device, K = log_probs.device, self.beam
        names = list(self.fusion.weights)

        cand, x_cand = self._frame_candidates(log_probs)  # (B, T, S) both
        x_blank = log_probs[:, :, self.blank_id]  # (B, T)
        prefixes = self._init_prefixes(B, int(lens.max()) + 1, len(names), log_probs.dtype, device)
        S = cand.shape[2]
        ctx = _Context(
            names=names,
            w=torch.tensor([self.fusion.weights[n] for n in names], dtype=log_probs.dtype, device=device),  # (F,)
            stay_cols=torch.arange(K, device=device) * (1 + S),
            utt_offset=torch.arange(B, device=device)[:, None] * K,
            cand_cols=torch.arange(S, device=device),
            hash_mod=torch.tensor(_HASH_MOD, device=device),
            hash_base=torch.tensor(_HASH_BASE, device=device),
        )
        fstate = self.fusion.init_state(B, K, device)
        for t in range(int(lens.max())):
            active = t < lens  # (B,)
            frame = (log_probs[:, t], x_blank[:, t], cand[:, t], x_cand[:, t])
            prefixes, fstate = self._step(t, frame, active, prefixes, fstate, ctx)
        return self._finish(prefixes, fstate, ctx, ids)

    def _frame_candidates(self, log_probs: Tensor) -> tuple[Tensor, Tensor]:
        """Non-blank labels tried at every frame: ids (B, T, S) and their log-probs (B, T, S)."""
        B, T, V = log_probs.shape
        S = V - 1 if self.token_prune_topk is None else min(self.token_prune_topk, V - 1)
        if S == V - 1:  # all labels: no top-k needed
            ids = torch.cat([torch.arange(self.blank_id), torch.arange(self.blank_id + 1, V)]).to(log_probs.device)
            x = log_probs.index_select(2, ids)  # (B, T, S)
            ids = ids.expand(B, T, S)
        else:
            masked = log_probs.clone()  # never write into the caller's tensor
            masked[:, :, self.blank_id] = float("-inf")
            x, ids = masked.topk(S, dim=2)  # (B, T, S)
        if self.token_min_logp is not None:
            x = x.masked_fill(x < self.token_min_logp, float("-inf"))
        return ids, x

    def _init_prefixes(self, B: int, L: int, F: int, dtype: torch.dtype, device: torch.device) -> CTCPrefixes:
        """N = B·K prefixes: per utterance the empty prefix (log-prob 0) and K-1 dead slots."""
        K, N = self.beam, B * self.beam
        pb = torch.full((B, K), float("-inf"), dtype=dtype, device=device)
        pb[:, 0] = 0.0
        return CTCPrefixes(
            tokens=torch.full((N, L), self.blank_id, dtype=torch.long, device=device),
            lengths=torch.zeros(N, dtype=torch.long, device=device),
            last=torch.full((N,), self.blank_id, dtype=torch.long, device=device),
            hash=torch.zeros(N, 2, dtype=torch.long, device=device),
            parent_key=torch.full((N,), -1, dtype=torch.long, device=device),
            pb=pb.view(N),
            pnb=torch.full((N,), float("-inf"), dtype=dtype, device=device),
            fusion=torch.zeros(N, F, dtype=dtype, device=device),
        )

    def _step(
        self,
        t: int,
        frame: tuple[Tensor, Tensor, Tensor, Tensor],
        active: Tensor,
        p: CTCPrefixes,
        fstate: BatchedState | None,
        c: _Context,
    ) -> tuple[CTCPrefixes, BatchedState | None]:
        """Frame t. frame = x (B, V), x_blank (B,), cand (B, S), x_cand (B, S); active (B,)."""
        x, x_blank, cand, x_cand = frame
        names, w = c.names, c.w
        B, S = cand.shape
        K, N, F = self.beam, cand.shape[0] * self.beam, w.shape[0]
        neg_inf = float("-inf")
        pb, pnb, last = p.pb.view(B, K), p.pnb.view(B, K), p.last.view(B, K)
        ptot = torch.logaddexp(pb, pnb)  # (B, K)
        x_last = x.gather(1, last)  # (B, K): x_t(a), a = last label (blank for the empty prefix)

        # Case 0: *a + ε → *a
        stay_pb = ptot + x_blank[:, None]  # (B, K)
        # Case 1: *a + a → *a (only from alignments ending in a; p_nb = -inf for the empty prefix)
        stay_pnb = pnb + x_last  # (B, K)
        # Cases 2 and 3: *a + a → *aa (from p_b only), *a + b → *ab (from both)
        same = cand[:, None, :] == last[:, :, None]  # (B, K, S)
        ext_pnb = torch.where(same, pb[:, :, None], ptot[:, :, None]) + x_cand[:, None, :]  # (B, K, S)

        # Path recombination: beam member j = i + a (a = last(j)) receives the Case 2/3 paths of i.
        key, parent_key = _key(p.hash).view(B, K), p.parent_key.view(B, K)
        alive = ptot > neg_inf  # (B, K)
        child = alive & (p.lengths.view(B, K) > 0)  # (B, K)
        match = (parent_key[:, :, None] == key[:, None, :]) & child[:, :, None] & alive[:, None, :]  # (B, Kj, Ki)
        has_parent = match.any(dim=2)  # (B, K)
        parent = match.to(torch.uint8).argmax(dim=2)  # (B, K): i for each j (0 where none)
        from_parent = torch.where(last.gather(1, parent) == last, pb.gather(1, parent), ptot.gather(1, parent))
        enter = from_parent + x_last  # (B, K)
        stay_pnb = torch.where(has_parent, torch.logaddexp(stay_pnb, enter), stay_pnb)
        # ... and the candidate (i, a) must not be counted a second time as a new prefix.
        hit = same & has_parent[:, :, None]  # (B, Kj, S): cand[s] = last(j) and j has a parent
        flat = parent[:, :, None] * S + c.cand_cols  # (B, Kj, S): index of (i, s)
        taken = torch.zeros(B, K * S, dtype=torch.long, device=x.device)
        taken.scatter_add_(1, flat.view(B, K * S), hit.view(B, K * S).long())  # (B, K·S)
        ext_pnb = ext_pnb.masked_fill(taken.view(B, K, S) > 0, neg_inf)

        # Fusion hook (a): label scores of the extensions, before pruning.
        fused = (p.fusion @ w).view(B, K) if F else torch.zeros_like(ptot)  # (B, K)
        stay_total = torch.logaddexp(stay_pb, stay_pnb) + fused  # (B, K)
        ext_total = ext_pnb + fused[:, :, None]  # (B, K, S)
        ext_f = None
        if F:
            ext_scores, fstate = self.fusion.extend(p.tokens, p.lengths, cand.repeat_interleave(K, dim=0), fstate)
            ext_f = _stack(ext_scores, names, (N, S), w).view(B, K * S, F)  # (B, K·S, F)
            ext_total = ext_total + (ext_f @ w).view(B, K, S)

        # Prune to the K best of the C = K·(1+S) candidates (column 0 of each hypothesis = stay).
        total = torch.cat([stay_total[:, :, None], ext_total], dim=2).view(B, K * (1 + S))  # (B, C)
        sel = total.topk(K, dim=1).indices  # (B, K), sorted best first
        sel = torch.where(active[:, None], sel, c.stay_cols)  # padded frames: every hypothesis stays
        parent_k, col = sel // (1 + S), sel % (1 + S)  # (B, K)
        is_ext = col > 0  # (B, K)
        s = (col - 1).clamp(min=0)  # (B, K)
        label = cand.gather(1, s)  # (B, K)
        ext_idx = parent_k * S + s  # (B, K): index into (B, K·S)
        new_pb = torch.where(is_ext, neg_inf, stay_pb.gather(1, parent_k))
        new_pnb = torch.where(is_ext, ext_pnb.view(B, K * S).gather(1, ext_idx), stay_pnb.gather(1, parent_k))
        new_pb = torch.where(active[:, None], new_pb, pb).view(N)
        new_pnb = torch.where(active[:, None], new_pnb, pnb).view(N)

        src = (parent_k + c.utt_offset).view(N)  # (N,)
        is_ext, label = is_ext.view(N), label.view(N)
        fusion = p.fusion.index_select(0, src)  # (N, F)
        if ext_f is not None:
            gained = ext_f.gather(1, ext_idx[:, :, None].expand(B, K, F)).view(N, F)  # (N, F)
            fusion = fusion + torch.where(is_ext[:, None], gained, torch.zeros_like(gained))
        tokens = p.tokens.index_select(0, src)  # (N, L)
        lengths = p.lengths.index_select(0, src)  # (N,)
        pos = lengths[:, None]  # (N, 1)
        tokens.scatter_(1, pos, torch.where(is_ext[:, None], label[:, None], tokens.gather(1, pos)))
        old_hash = p.hash.index_select(0, src)  # (N, 2)
        hashed = (old_hash * c.hash_base + label[:, None] + 1) % c.hash_mod  # (N, 2)
        new = CTCPrefixes(
            tokens=tokens,
            lengths=lengths + is_ext.long(),
            last=torch.where(is_ext, label, p.last.index_select(0, src)),
            hash=torch.where(is_ext[:, None], hashed, old_hash),
            parent_key=torch.where(is_ext, _key(old_hash), p.parent_key.index_select(0, src)),
            pb=new_pb,
            pnb=new_pnb,
            fusion=fusion,
        )
        if self.beam_threshold is not None:
            new = self._threshold(new, B, active, w)

        # Fusion hook (b): after pruning.
        if F:
            fstate = self.fusion.select_state(fstate, src, torch.where(is_ext, label, -1))
            active_n = active.repeat_interleave(K)  # (N,)
            alive = torch.logaddexp(new.pb, new.pnb) > neg_inf  # (N,)
            scores, fstate = self.fusion.after_prune(
                new.tokens, new.lengths, is_ext & active_n, active_n, alive, t, fstate
            )
            if scores:
                new = dataclasses.replace(new, fusion=new.fusion + _stack(scores, names, (N,), w))
        return new, fstate

    def _threshold(self, p: CTCPrefixes, B: int, active: Tensor, w: Tensor) -> CTCPrefixes:
        """Kill prefixes scoring more than beam_threshold below their utterance's best."""
        K = self.beam
        total = torch.logaddexp(p.pb, p.pnb) + (p.fusion @ w if w.numel() else 0.0)  # (N,)
        total = total.view(B, K)
        best = total.max(dim=1, keepdim=True).values  # (B, 1)
        dead = ((total < best - self.beam_threshold) & active[:, None]).view(B * K)  # (N,)
        neg_inf = float("-inf")
        return dataclasses.replace(p, pb=p.pb.masked_fill(dead, neg_inf), pnb=p.pnb.masked_fill(dead, neg_inf))

    def _finish(
        self, p: CTCPrefixes, fstate: BatchedState | None, c: _Context, ids: list[str]
    ) -> list[list[NBestEntry]]:
        """Fusion hook (c), final ranking, and conversion to `NBestEntry` lists."""
        names, w = c.names, c.w
        N = len(ids) * self.beam
        fusion = p.fusion
        if names:
            final = self.fusion.final(p.tokens, p.lengths, fstate)
            if final:
                fusion = fusion + _stack(final, names, (N,), w)
        ctc = torch.logaddexp(p.pb, p.pnb)  # (N,)
        scores = torch.cat([ctc[:, None], fusion], dim=1)  # (N, 1 + F): CTC first, weight 1
        weights = torch.cat([torch.ones(1, dtype=w.dtype, device=w.device), w])
        return rank_nbest(p.tokens, p.lengths, scores, ["ctc", *names], weights, ids, self.nbest, self.detokenize)
