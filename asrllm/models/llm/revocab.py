"""Re-vocabularisation (PAPER.md §5 label units (b), (c)): an LLM's matrices moved to an AM tokenizer.

Label units: (a) the LLM's own tokens (`HFTokenizer`, optionally lower-cased); (b)/(c) re-vocabularised
to an AM tokenizer (SentencePiece pieces or characters) when `build_llm(cfg, label_tokenizer=...)` is
given one: `revocabularise` replaces the input embedding and output matrices by V_new rows
initialised from the LLM's own embeddings (see there).

Shapes: V_llm the LLM's vocabulary, V_new the label vocabulary, D model dimension, M source tokens.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from asrllm.config import ConfigError
from asrllm.data.hf_tokenizer import HFTokenizer
from asrllm.data.tokenizer import WORD_START, Tokenizer

logger = logging.getLogger(__name__)

REVOCAB_INITS = ("mean", "first", "random")


def piece_text(piece: str) -> str:
    """Surface text of an AM piece: SentencePiece's word marker `▁` becomes a leading space."""
    return piece.replace(WORD_START, " ")


Sources = list[list[int] | None]  # per label id: LLM ids to average, or None = mean of all rows


def revocab_sources(llm_tok: HFTokenizer, label_tok: Tokenizer) -> tuple[Sources, Sources]:
    """For every label id: the LLM ids whose (input, output) rows initialise it; None = mean of all rows.

    - ordinary piece: the LLM tokens of its text (`piece_text`, lower-cased when the LLM tokenizer
      lower-cases), e.g. "▁THE" -> llm.encode(" the");
    - bos / eos (one `<sos/eos>` id in AM tokenizers): input row from the LLM's BOS (what it sees at
      a text start), output row from the LLM's EOS (what it predicts at a text end);
    - unk: the LLM's unk if it has one, else the mean of all rows;
    - blank (CTC only; the LM never reads or predicts it): the mean of all rows, so it stays a
      neutral, untrained-looking row rather than a copy of some token.
    """
    inputs: Sources = []
    outputs: Sources = []
    for i, piece in enumerate(label_tok.pieces):
        if i == label_tok.blank_id:
            src_in = src_out = None
        elif i == label_tok.unk_id:
            src_in = src_out = [llm_tok.unk_id] if llm_tok.unk_id >= 0 else None
        elif i in (label_tok.bos_id, label_tok.eos_id):
            src_in = [llm_tok.bos_id] if i == label_tok.bos_id else [llm_tok.eos_id]
            src_out = [llm_tok.eos_id] if i == label_tok.eos_id else [llm_tok.bos_id]
        else:
            src_in = src_out = llm_tok.encode(piece_text(piece)) or None
        inputs.append(src_in)
        outputs.append(src_out)
    return inputs, outputs


def _init_rows(weight: Tensor, sources: Sources, init: str, std: float) -> Tensor:
    """(V_new, D) rows from `weight` (V_llm, D): mean / first of each source list, or random."""
    v_new, dim = len(sources), weight.shape[1]
    w = weight.detach().float()
    if init == "random":
        return torch.randn(v_new, dim, device=w.device) * std
    rows = w.mean(0).expand(v_new, dim).clone()  # (V_new, D): None -> mean of all rows
    lists = [(i, s if init == "mean" else s[:1]) for i, s in enumerate(sources) if s]
    if lists:
        seg = torch.tensor([i for i, s in lists for _ in s], device=w.device)  # (M,) label id of each source
        src = torch.tensor([t for _, s in lists for t in s], device=w.device)  # (M,) LLM ids
        total = torch.zeros(v_new, dim, device=w.device).index_add_(0, seg, w[src])  # (V_new, D)
        count = torch.zeros(v_new, device=w.device).index_add_(0, seg, torch.ones_like(seg, dtype=w.dtype))
        has = count > 0
        rows[has] = total[has] / count[has, None]
    return rows


def revocabularise(model: nn.Module, llm_tok: HFTokenizer, label_tok: Tokenizer, init: str = "mean") -> None:
    """Replace `model`'s input embedding and output matrix (in place) by rows for `label_tok`'s ids.

    init: "mean" (mean of the LLM rows of the piece's tokens, `revocab_sources`), "first" (row of
    its first token: p(piece) ~ p(first token) for the output), "random" (normal, the model's
    initializer_range). The output matrix is initialised the same way from the LLM's output rows, or
    stays tied to the new embedding where the model ties them.
    """
    if init not in REVOCAB_INITS:
        raise ConfigError(f"revocab_init={init!r} is not one of {list(REVOCAB_INITS)}")
    emb_in, emb_out = model.get_input_embeddings(), model.get_output_embeddings()
    tied = emb_out.weight is emb_in.weight
    src_in, src_out = revocab_sources(llm_tok, label_tok)
    std = float(getattr(model.config, "initializer_range", 0.02))
    dtype, device = emb_in.weight.dtype, emb_in.weight.device
    v_new, dim = label_tok.vocab_size, emb_in.weight.shape[1]
    new_in = nn.Embedding(v_new, dim, device=device, dtype=dtype)
    new_in.weight.data.copy_(_init_rows(emb_in.weight, src_in if not tied else src_out, init, std))
    # Tied models have one matrix: use the output sources (EOS for <sos/eos>), as that row is predicted.
    new_out = nn.Linear(dim, v_new, bias=False, device=device, dtype=dtype)
    if tied:
        new_out.weight = new_in.weight
    else:
        new_out.weight.data.copy_(_init_rows(emb_out.weight, src_out, init, std))
    model.set_input_embeddings(new_in)
    model.set_output_embeddings(new_out)
    model.config.vocab_size = v_new
    model.config.bos_token_id, model.config.eos_token_id = label_tok.bos_id, label_tok.eos_id
    model.config.pad_token_id = None
    logger.info("re-vocabularised the LLM to %d labels (init %s, tied %s)", v_new, init, tied)
