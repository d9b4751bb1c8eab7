#!/usr/bin/env bash
# Stage 1 of mini_synth: LibriSpeech-layout tree -> Kaldi-style data dirs, the probe set, the LM text.
#   local/data.sh [--corpus-dir DIR] [--force true]   (force: redo data dirs made from another tree)
set -euo pipefail
corpus_dir=corpus  # root holding LibriSpeech/ and librispeech-lm-norm.txt
force=false
. utils/parse_options.sh
force_opt=(); [[ $force == true ]] && force_opt=(--force)
for subset in train dev test; do
  python -m asrllm.bin.prepare_librispeech --root "$corpus_dir" --subset "$subset" --out-dir "data/$subset" \
    "${force_opt[@]}"
done
# the hallucination probe set (noise only, sentences cut mid-way, sentences longer than any training
# utterance), spoken by the test speakers: decoded in stage 15 (asrllm.data.synth.probe)
python -m asrllm.bin.make_probe_set --corpus-config conf/corpus.yaml --test-data data/test \
  --train-data data/train --out-dir data/probe "${force_opt[@]}"
mkdir -p data/lm
cp "$corpus_dir/librispeech-lm-norm.txt" data/lm/text
