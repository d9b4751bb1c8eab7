#!/usr/bin/env bash
# On request, after ./run.sh and local/speech_llm_grid.sh's base row: the remedy for the words the
# models make up on noise (docs/joint_ctc.md): 400 noise-only utterances (conf/probe_noise_train.yaml)
# join the training set with the transcript <noise>, which `data.nonspeech` trains as "no labels".
# The AM and the grid's base speech LLM are trained again on it and decoded on dev, test and the
# probe set, alone and jointly with CTC (~1 h on 2 CPU cores). Options go to run.sh.
set -euo pipefail
python -m asrllm.bin.make_probe_set --corpus-config conf/corpus.yaml --config conf/probe_noise_train.yaml \
  --test-data data/test --train-data data/train --out-dir data/noise_train
python -m asrllm.bin.combine_data --out-dir data/train_noisy data/train data/noise_train
common=(--train-set train_noisy --am-tag train_ctc_small_noise)
./run.sh --stage 3 --stop-stage 5 "${common[@]}" --train-args "data.nonspeech=[<noise>]" --test-sets "dev test probe" "$@"
./run.sh --stage 14 --stop-stage 15 "${common[@]}" --speech-llm-configs conf/speech_llm/sllm_noise_prefix.yaml \
  --speech-llm-decode-config conf/decode_speech_llm_grid.yaml --speech-llm-extra-sets probe "$@"
./run.sh --stage 15 --stop-stage 15 "${common[@]}" --speech-llm-configs conf/speech_llm/sllm_noise_prefix.yaml \
  --speech-llm-decode-config conf/decode_speech_llm_joint.yaml --speech-llm-extra-sets probe "$@"
