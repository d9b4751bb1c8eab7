#!/usr/bin/env bash
# mini_synth: a small synthetic corpus (espeak-ng speech in LibriSpeech layout) built on the spot,
# running every stage of the pipeline on a laptop or CI box. Options go to asr.sh (see --help).
set -euo pipefail
./asr.sh \
  --train-set train --valid-set dev --test-sets "dev test" \
  --token-name char --token-config conf/tokenizer_char.yaml \
  --am-config conf/train_ctc_small.yaml --decode-config conf/decode_ctc.yaml \
  "$@"
