"""Perplexity of a language model on text (stage 8 of the recipes).

    python -m asrllm.bin.perplexity --model-dir exp/tiny_llm_ft_unigram256 --data data/dev data/test \\
        [--checkpoint latest]
    python -m asrllm.bin.perplexity --model-dir exp/smollm2_135m_zeroshot --data data/dev \\
        --config conf/lm/smollm2_135m.yaml

A trained LM: `--model-dir` holds `config.yaml` and checkpoints (asrllm.bin.train). Untrained or
zero-shot: `--config` (an LM training YAML; its trainer/optim sections are ignored) builds the
model as it is before training (pre-trained weights, freshly re-vocabularised embeddings), and its
resolved config is stored as `<model-dir>/config.yaml` next to the results.

Writes `<model-dir>/ppl_<set>/metrics.json` (atomically) with the exact command for every `--data`
path (the model is built once); <set> is the name of the data dir (of the file, without suffix).
metrics.json is also the set's stage record (asrllm.provenance): its `inputs` are the model (config,
and the weights' digest for a trained LM) and the text's digest. A set already evaluated from the
same inputs is skipped; from other inputs it is an error unless `--force`. With NLL the
summed negative log-likelihood in nats of every sentence's tokens and of its EOS:

    token_ppl = exp(NLL / T)    T = predicted tokens (the sentence's tokens + EOS, summed)
    word_ppl  = exp(NLL / W)    W = words + sentences (every sentence end counts as a word)

Word-level perplexity compares LMs with different label units (characters, SentencePiece, an
LLM's BPE): each divides the NLL of the same text by the same W.
"""

from __future__ import annotations

import argparse
import logging
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

from asrllm.config import ConfigError, save_config
from asrllm.data.text import LanguageModel, Sentence, TextBatchLoader, num_words, read_texts
from asrllm.models.trained import load_trained_model, model_record, read_train_log
from asrllm.provenance import datadir_digest, decide, flatten, write_record
from asrllm.train.checkpoint import latest_checkpoint
from asrllm.train.experiment import resolve_config

log = logging.getLogger("asrllm.perplexity")


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module, sentences: list[Sentence], max_batch_tokens: int, device: torch.device
) -> dict[str, Any]:
    """NLL sums and perplexities of `model` (an LM: forward(TextBatch) -> summed NLL, token count)."""
    lm: LanguageModel = model  # type: ignore[assignment]
    loader = TextBatchLoader(sentences, lm.tokenizer, lm.bos_id, lm.eos_id, max_batch_tokens, shuffle=False)
    nll, tokens, unk = 0.0, 0, 0
    for batch in loader.epoch_batches(1):
        loss_sum, count, _ = model(batch.to(device))
        nll += float(loss_sum)
        tokens += int(count)
        positions = torch.arange(batch.tokens.shape[1]) < (batch.lengths - 1)[:, None]  # (B, L) all but EOS/pad
        positions[:, 0] = False  # BOS
        unk += int(((batch.tokens == lm.tokenizer.unk_id) & positions).sum())
    words = sum(num_words(text) + 1 for _, text in sentences)
    return {
        "num_sentences": len(sentences),
        "num_tokens": tokens,
        "num_words": words,
        "num_unk": unk,
        "nll_sum": nll,
        "token_ppl": math.exp(nll / tokens),
        "word_ppl": math.exp(nll / words),
        "vocab_size": lm.tokenizer.vocab_size,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", required=True, type=Path, help="exp dir of the LM (written to with --config)")
    parser.add_argument("--data", required=True, type=Path, nargs="+", help="text files or data dirs (read_texts)")
    parser.add_argument("--checkpoint", default="latest", help="latest | average | step_<N> dir name (trained LMs)")
    parser.add_argument("--config", type=Path, help="LM training YAML: evaluate the model untrained (zero-shot)")
    parser.add_argument("--max-batch-tokens", type=int, default=4000, help="padded tokens per batch")
    parser.add_argument("--device", default="cpu", help="cpu | cuda[:i]")
    parser.add_argument("--num-threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--force", action="store_true", help="re-evaluate sets evaluated from other inputs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "-m", "asrllm.bin.perplexity", *argv])
    if args.num_threads is not None:
        torch.set_num_threads(args.num_threads)
    device = torch.device(args.device)
    sets = {(path.name if path.is_dir() else path.stem): path for path in args.data}
    try:
        if len(sets) < len(args.data):
            raise ConfigError(f"--data: two paths have the same set name ({' '.join(map(str, args.data))})")
        if args.config is not None:
            if latest_checkpoint(args.model_dir / "checkpoints") is not None:
                raise ConfigError(f"--config: {args.model_dir} holds a trained model; drop --config to evaluate it")
            exp = resolve_config(args.config, [], None)
            model_inputs = flatten(exp.config, "config")
            checkpoint = "none (untrained)"
        else:
            model_inputs = model_record(args.model_dir, args.checkpoint)
            checkpoint = args.checkpoint
        inputs = {name: {**model_inputs, "data": datadir_digest(path)} for name, path in sets.items()}
        todo = [
            name for name in sets
            if decide(args.model_dir / f"ppl_{name}" / "metrics.json", inputs[name], args.force,
                      f"perplexity of {args.model_dir} on {name}")
        ]
        if not todo:
            log.info("%s: every set is evaluated already from the same inputs; skipping", args.model_dir)
            return 0
        texts = {name: read_texts(sets[name]) for name in todo}
        if args.config is not None:
            model = exp.model_cls(exp.model).to(device).eval()
            save_config(exp.config, args.model_dir / "config.yaml")
        else:
            model = load_trained_model(args.model_dir, args.checkpoint, device)
        if not isinstance(model, LanguageModel):
            raise ConfigError(f"{args.model_dir}: {type(model).__name__} is not a language model")
    except (ConfigError, ValueError, OSError, RuntimeError) as e:
        log.error("%s", e)
        return 1

    train_command, train_seconds = read_train_log(args.model_dir)
    num_params = sum(p.numel() for p in model.parameters())
    for set_name, sentences in texts.items():
        start = time.perf_counter()
        metrics = evaluate(model, sentences, args.max_batch_tokens, device)
        metrics.update(
            test_set=set_name,
            model=args.model_dir.name,
            method="ppl",
            checkpoint=checkpoint,
            num_params=num_params,
            seconds=time.perf_counter() - start,
            command=command,
            train_command=train_command,
            train_seconds=train_seconds,
        )
        out = args.model_dir / f"ppl_{set_name}" / "metrics.json"
        write_record(out, inputs[set_name], **metrics)
        log.info(
            "%s on %s: token ppl %.3f, word ppl %.3f (%d sentences, %d tokens, %d words) -> %s",
            args.model_dir.name, set_name, metrics["token_ppl"], metrics["word_ppl"],
            metrics["num_sentences"], metrics["num_tokens"], metrics["num_words"], out,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
