#!/usr/bin/env bash
# Stage 0 of mini_synth: build the synthetic corpus (LibriSpeech layout + LM text) in --corpus-dir.
# Other options (e.g. --num-train 4000) go to asrllm.bin.make_synth_corpus.
set -euo pipefail
corpus_dir=corpus  # output root: <corpus_dir>/LibriSpeech/..., <corpus_dir>/librispeech-lm-norm.txt
. utils/parse_options.sh
python -m asrllm.bin.make_synth_corpus --config conf/corpus.yaml --out-dir "$corpus_dir" "$@"
