"""`CTCPrefixScorer`: CTC prefix scores (Watanabe et al. 2017) of given candidate labels, as a `PartialScorer`.

The CTC prefix probability of a label sequence g is the mass of every CTC alignment whose label
sequence starts with g: ψ(g) = Σ over alignments of g·(anything). A label-synchronous search adds
log ψ(g·c) − log ψ(g) when it appends c, and log p_CTC(g) − log ψ(g) when g ends (EOS), so that a
finished hypothesis has collected exactly log p_CTC(g), the negative CTC loss (acceptance 1 of
issue 10).

Recursions over frames t = 0 .. T−1 (x_t(c): CTC log-prob of label c at frame t, x_t(∅): blank),
with r^n_t(g), r^b_t(g): mass of g's alignments over frames 0..t that end in g's last label or in a
blank; φ_t(g, c) = r^b_t(g) ⊕ r^n_t(g) if c ≠ last(g) else r^b_t(g), and φ_{−1} = log 1 for the empty
g (log 0 otherwise); ⊕ = log-add:

    r^n_t(gc) = (r^n_{t−1}(gc) ⊕ φ_{t−1}(g, c)) + x_t(c)
    r^b_t(gc) = (r^n_{t−1}(gc) ⊕ r^b_{t−1}(gc)) + x_t(∅)
    log ψ(gc) = ⊕_{t < T} φ_{t−1}(g, c) + x_t(c)
    log p_CTC(g) = r^n_{T−1}(g) ⊕ r^b_{T−1}(g)

Each r recursion is first-order linear in the probability domain, so it has a closed form over
all frames at once: with C_t = Σ_{u ≤ t} x_u(c), r^n_t(gc) = C_t + logcumsumexp_{τ ≤ t}(φ_{τ−1} − C_{τ−1}),
and likewise r^b with the blank's cumulative sum. One label step is therefore a few passes over
an (N, S, T) tensor instead of a Python loop over T frames (ESPnet's CTCPrefixScoreTH loops over
frames). The cumulative sums are kept in float64 (they reach −10⁴ and more over long inputs, and
the differences must keep their digits); frame log-probs are clamped at −10⁵ so that a −inf
(a masked logit) cannot turn the differences into nan; exp(−10⁵) is 0 in float64 anyway.

Windowing (optional, `window` W frames): a candidate may start only within W frames of its
prefix's peak, the frame argmax_t r^n_t(g) where g's last label most probably sits: φ_{t−1}(g, c)
counts only for |t − peak(g)| ≤ W (no window for the empty prefix: leading silence has any
length). It constrains the alignments, so every score of a windowed search is that of the
constrained CTC model; a window covering the whole input changes nothing.

Only the S candidates the search gives are scored (its pre-beam): memory per step is N·S·T, never
N·V·T (Qwen's V is 152k). The state keeps each prefix's r (N, T, 2) and, after `score_partial`, those
of its S extensions, from which `select_state` takes the appended label's (reuse of the parent's
variables: nothing is recomputed for the chosen extension).

Shapes: B utterances, K beam, N = B·K hypotheses, T CTC frames, V' CTC outputs (labels + blank),
V the search's labels, S candidates per hypothesis.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from asrllm.batched import BatchedState
from asrllm.search.scorer import EncoderOutput, PartialScorer

_FLOOR = -1e5  # frame log-probs are clamped here (see the module docstring)


@dataclasses.dataclass(frozen=True)
class CTCFrames:
    """The CTC posteriors of the B utterances, shared by all their hypotheses (not a tensor field:
    `BatchedState.select` carries it over unchanged)."""

    by_label: Tensor  # (B, V', T) float64 log-probs, label-major (a candidate's frames are one contiguous
    # row), clamped at _FLOOR; frames >= lens[b] are 0 (never read)
    lens: Tensor  # (B,) int64 valid frames


@dataclasses.dataclass
class CTCPrefixState(BatchedState):
    """Prefix variables of N hypotheses; after `score_partial` also those of their S candidates."""

    frames: CTCFrames
    utt: Tensor  # (N,) int64 utterance of each hypothesis (row of frames.by_label)
    r: Tensor  # (N, 2, T) float64 log r^n_t(g), log r^b_t(g)
    log_psi: Tensor  # (N,) float64 log ψ(g)
    last: Tensor  # (N,) int64 last label of g (-1: g is empty)
    cand: Tensor | None = None  # (N, S) the candidates scored last
    cand_r: Tensor | None = None  # (N, S, 2, T) r of each candidate extension g·c
    cand_log_psi: Tensor | None = None  # (N, S) log ψ(g·c)


class CTCPrefixScorer(PartialScorer):
    """log ψ(g·c) − log ψ(g) for candidates c (EOS: log p_CTC(g) − log ψ(g)), batched over N hypotheses.

    vocab_size: V, the search's labels; label ids < V map to the same CTC column; blank_id: the CTC
    column of blank (an LLM vocabulary has it as one extra column V, an AM tokenizer inside V, where
    a candidate equal to it scores -inf); eos_id: the label that ends a hypothesis; window: W frames
    around the prefix's peak where a new label may start (None: anywhere; module docstring).
    """

    def __init__(self, vocab_size: int, blank_id: int, eos_id: int, window: int | None = None) -> None:
        if window is not None and window < 0:
            raise ValueError(f"CTCPrefixScorer: window={window} must be >= 0 frames or None (= off)")
        self._vocab_size = vocab_size
        self.blank_id = blank_id
        self.eos_id = eos_id
        self.window = window

    def vocab_size(self) -> int:
        return self._vocab_size

    def init_state(self, batch_size: int, beam: int, enc: EncoderOutput | None) -> CTCPrefixState:
        """The empty prefix of every hypothesis: r^n = log 0, r^b_t = Σ_{u ≤ t} x_u(∅), ψ = 1."""
        if enc is None or enc.ctc_log_probs is None:
            raise ValueError("CTCPrefixScorer needs CTC log-probs (EncoderOutput.ctc_log_probs): a CTC AM or a "
                             "speech LLM with an aux CTC head (aux_ctc_weight > 0)")
        log_probs = enc.ctc_log_probs.double()  # (B, T, V')
        lens = enc.ctc_lens if enc.ctc_lens is not None else enc.lens
        if log_probs.shape[0] != batch_size or log_probs.shape[2] <= max(self.blank_id, self._vocab_size - 1):
            raise ValueError(f"CTCPrefixScorer: CTC log-probs {tuple(log_probs.shape)} for a batch of {batch_size}, "
                             f"{self._vocab_size} labels and blank {self.blank_id}")
        valid = torch.arange(log_probs.shape[1], device=lens.device) < lens[:, None]  # (B, T)
        log_probs = log_probs.clamp(min=_FLOOR).masked_fill(~valid[..., None], 0.0)
        frames = CTCFrames(log_probs.transpose(1, 2).contiguous(), lens)
        utt = torch.arange(batch_size, device=lens.device).repeat_interleave(beam)  # (N,)
        blank = frames.by_label[utt, self.blank_id]  # (N, T)
        r = torch.stack([torch.full_like(blank, -torch.inf), blank.cumsum(1)], dim=1)  # (N, 2, T)
        zeros = torch.zeros(utt.shape[0], dtype=torch.float64, device=lens.device)
        return CTCPrefixState(frames, utt, r, zeros, torch.full_like(utt, -1))

    def score_partial(
        self, tokens: Tensor, lengths: Tensor, cand: Tensor, state: BatchedState | None
    ) -> tuple[Tensor, CTCPrefixState]:
        """(N, S) float64 log-scores of candidates cand (N, S) after each prefix, and the state holding
        every candidate's extension. The state must be that of the prefixes (the search's select_state)."""
        assert isinstance(state, CTCPrefixState), type(state)
        frames, utt = state.frames, state.utt
        n, s = cand.shape
        t_max = frames.by_label.shape[2]
        t = torch.arange(t_max, device=cand.device)
        col = cand.clamp(min=0, max=self._vocab_size - 1)  # EOS / blank candidates: any column, overwritten below
        x = frames.by_label[utt[:, None], col]  # (N, S, T)
        blank = frames.by_label[utt, self.blank_id]  # (N, T)
        r_n, r_b = state.r[:, 0], state.r[:, 1]  # (N, T) each
        repeat = cand == state.last[:, None]  # (N, S) c = last(g): only alignments through a blank
        phi = torch.where(repeat[..., None], r_b[:, None, :], torch.logaddexp(r_n, r_b)[:, None, :])  # (N, S, T)
        start = torch.where(state.last < 0, 0.0, -torch.inf).to(phi.dtype)  # (N,) φ_{-1}
        phi_prev = torch.cat([start[:, None, None].expand(n, s, 1), phi[..., :-1]], dim=2)  # (N, S, T): φ_{t-1}
        valid = t < frames.lens[utt][:, None]  # (N, T)
        if self.window is not None:
            peak = r_n.masked_fill(~valid, -torch.inf).argmax(dim=1)  # (N,) where g's last label most probably sits
            near = ((t[None, :] - peak[:, None]).abs() <= self.window) | (state.last < 0)[:, None]  # (N, T)
            phi_prev = phi_prev.masked_fill(~near[:, None, :], -torch.inf)
        log_psi = (phi_prev + x).masked_fill(~valid[:, None, :], -torch.inf).logsumexp(dim=2)  # (N, S)
        new_n = _linear_recursion(x, phi_prev)  # (N, S, T)
        new_n_prev = torch.cat([torch.full_like(new_n[..., :1], -torch.inf), new_n[..., :-1]], dim=2)
        new_b = _linear_recursion(blank[:, None, :].expand(n, s, t_max), new_n_prev)  # (N, S, T)
        last_frame = (frames.lens[utt] - 1).clamp(min=0)  # (N,)
        rows = torch.arange(n, device=cand.device)
        full = torch.logaddexp(r_n[rows, last_frame], r_b[rows, last_frame])  # (N,) log p_CTC(g)
        log_psi = torch.where(cand == self.eos_id, full[:, None], log_psi)
        log_psi = log_psi.masked_fill((cand == self.blank_id) & (cand != self.eos_id), -torch.inf)
        new_state = dataclasses.replace(state, cand=cand, cand_r=torch.stack([new_n, new_b], dim=2),
                                        cand_log_psi=log_psi)
        return log_psi - state.log_psi[:, None], new_state

    def select_state(self, state: BatchedState | None, src: Tensor, labels: Tensor | None = None) -> CTCPrefixState:
        """Hypothesis n continues src[n] (N',) with labels[n] (-1: none; None: plain reorder): the appended
        label's extension variables become the prefix's."""
        assert isinstance(state, CTCPrefixState), type(state)
        if labels is None or state.cand is None:
            return dataclasses.replace(state.select(src), cand=None, cand_r=None, cand_log_psi=None)
        cand = state.cand.index_select(0, src)  # (N', S)
        grows = labels >= 0
        hit = cand == labels[:, None]  # (N', S)
        if not bool((hit.any(1) | ~grows).all()):
            raise ValueError("CTCPrefixScorer.select_state: an appended label was not among the scored candidates")
        j = hit.int().argmax(1)  # (N',)
        r = torch.where(grows[:, None, None], state.cand_r[src, j], state.r.index_select(0, src))
        log_psi = torch.where(grows, state.cand_log_psi[src, j], state.log_psi.index_select(0, src))
        last = torch.where(grows, labels, state.last.index_select(0, src))
        return CTCPrefixState(state.frames, state.utt.index_select(0, src), r, log_psi, last)

    def final_score(self, tokens: Tensor, lengths: Tensor, state: BatchedState | None) -> Tensor:
        """(N,) log p_CTC(g) − log ψ(g) of each prefix (what EOS adds)."""
        eos = torch.full((tokens.shape[0], 1), self.eos_id, dtype=torch.long, device=tokens.device)
        logp, _ = self.score_partial(tokens, lengths, eos, state)
        return logp[:, 0]


def _linear_recursion(x: Tensor, inflow: Tensor) -> Tensor:
    """y_t = (y_{t-1} ⊕ inflow_t) + x_t with y_{-1} = log 0, over the last dim, in closed form:
    y_t = C_t + logcumsumexp_{τ ≤ t}(inflow_τ − C_{τ-1}), C_t = Σ_{u ≤ t} x_u. x, inflow (..., T) float64."""
    c = x.cumsum(-1)  # (..., T)
    c_prev = torch.cat([torch.zeros_like(c[..., :1]), c[..., :-1]], dim=-1)
    return c + (inflow - c_prev).logcumsumexp(-1)
