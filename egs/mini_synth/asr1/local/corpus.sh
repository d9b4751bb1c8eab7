#!/usr/bin/env bash
# Stage 0 of mini_synth: build the synthetic corpus (LibriSpeech layout + LM text).
#   local/corpus.sh [--corpus-dir DIR] [options of asrllm.bin.make_synth_corpus, e.g. --num-train 4000]
# DIR/LibriSpeech/{train,dev,test}/... and DIR/librispeech-lm-norm.txt are written.
set -euo pipefail
corpus_dir=corpus
if [[ ${1:-} == --corpus-dir ]]; then corpus_dir=$2; shift 2; fi
python -m asrllm.bin.make_synth_corpus --config conf/corpus.yaml --out-dir "$corpus_dir" "$@"
