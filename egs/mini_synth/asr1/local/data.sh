#!/usr/bin/env bash
# Stage 1 of mini_synth: LibriSpeech-layout tree -> Kaldi-style data dirs, plus the LM text.
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
mkdir -p data/lm
cp "$corpus_dir/librispeech-lm-norm.txt" data/lm/text
