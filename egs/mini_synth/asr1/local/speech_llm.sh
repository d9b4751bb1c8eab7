#!/usr/bin/env bash
# On request, after ./run.sh: the demo's speech LLMs (docs/speech_llm.md), stages 14-15: the demo
# AM's encoder + stack 2 (80 ms) + the pre-trained tiny LLM, prefix and merged attention, decoded on
# dev, test and the hallucination probe set (which the AM decodes too).
set -euo pipefail
./run.sh --stage 14 --stop-stage 15 \
  --speech-llm-configs "conf/speech_llm/sllm_tiny_prefix.yaml conf/speech_llm/sllm_tiny_merged.yaml" \
  --speech-llm-extra-sets probe "$@"
