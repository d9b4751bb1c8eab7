#!/usr/bin/env bash
# On request, after ./run.sh: the demo AM with a SentencePiece (unigram-256) CTC output, fine-tuned
# from the character AM's encoder (conf/train_ctc_small_unigram256.yaml), decoded, and combined with
# the LMs in its pieces (label-wise fusion, the paper's pairing) and in their own tokens (delayed v2).
# Stages 3-13 of asr.sh for exp/train_ctc_small_unigram256; the tokenizer is stage 6's unigram256.
set -euo pipefail
./asr.sh \
  --stage 3 --stop-stage 13 \
  --train-set train --valid-set dev --test-sets "dev test" \
  --token-name unigram256 \
  --am-config conf/train_ctc_small_unigram256.yaml --decode-config conf/decode_ctc.yaml \
  --nbest-config conf/decode_nbest.yaml --rescore-config conf/rescore_unigram256.yaml \
  --fusion-config conf/decode_fusion_unigram256.yaml \
  --tune-lms "tiny_unigram256 own_unigram256 tiny_bpe2k" \
  "$@"
