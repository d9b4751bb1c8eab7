#!/usr/bin/env bash
# The shared stage script behind every recipe's run.sh (ESPnet's asr.sh, kept short).
# Each stage is one Python entry point; option defaults of the models and searches live in their
# YAML configs and dataclasses, not here. Every stage can be re-run, under one rule that the Python
# entry points apply (asrllm/provenance.py): each output keeps a record of what it was made from
# (resolved config, content digests of its input files and checkpoints); a re-run with the same
# inputs skips it, with other inputs it stops with an error naming what differs, unless
# --force true, which redoes exactly the outputs whose inputs changed.
#   Stage 0: corpus        local/corpus.sh (recipe-specific: build or locate the raw corpus)
#   Stage 1: data dirs     local/data.sh  (recipe-specific: raw corpus -> data/<set>/ Kaldi dirs)
#   Stage 2: tokenizer     data/token/<token_name>/
#   Stage 3: AM training   exp/<am_tag>/
#   Stage 4: decoding      exp/<am_tag>/decode_<set>_<method>/ (every method from one encoder pass)
#   Stage 5: scoring       result.txt + metrics.json per decode dir, then RESULTS.md
# Language models (PAPER.md §5); an LM config conf/lm/<name>.yaml trains into exp/<name>/:
#   Stage 6: LM tokenizers data/token/<name>/ for each <name>:<set> of lm_tokenizers
#   Stage 7: LLM pre-train exp/<name>/ of llm_pretrain_config on data/<lm_text_set>, exported to
#                          exp/<name>/llm (a stand-in for a downloaded pre-trained LLM)
#   Stage 8: LM training   each of lm_configs on the transcriptions data/<train_set>
#   Stage 9: perplexity    exp/<name>/ppl_<set>/ of stages 7-8 and, untrained, of lm_zeroshot_configs
#                          (into exp/<name>_zeroshot/); then RESULTS.md
# Combination of the AM with LMs (PAPER.md §5); skipped while nbest_config is "":
#   Stage 10: CTC prior    exp/<am_tag>/prior.safetensors: mean CTC softmax on data/<prior_set>
#   Stage 11: N-best lists exp/<am_tag>/decode_<set>_<method>/ of nbest_config for test_sets, scored
#   Stage 12: scale tuning the valid set's N-best lists rescored with every LM of rescore_config
#                          (exp/<am_tag>/tune_<valid_set>_rescore_<lm>/), then for each LM of tune_lms
#                          in turn the (λ, prior scale) of lowest dev WER, written into copies of
#                          rescore_config and fusion_config: exp/<am_tag>/tune/<lm>/ (each LM's
#                          tuning starts from the previous one's copies)
#   Stage 13: combination  test_sets rescored with the tuned rescore_config and decoded with the tuned
#                          fusion_config (label-wise, delayed fusion), scored; then RESULTS.md
# Speech LLMs (PAPER.md §3); a config conf/speech_llm/<name>.yaml trains into exp/<name>/:
#   Stage 14: speech LLMs  each of speech_llm_configs trained on data/<train_set> (encoder from the AM:
#                          the config's init section), checkpoints averaged
#   Stage 15: SLLM decode  exp/<name>/decode_<set>_<method>/ of speech_llm_decode_config for test_sets and
#                          speech_llm_extra_sets (e.g. a hallucination probe set), which the AM also decodes
#                          (decode_config); scored; then RESULTS.md
#   Stage 16: on request   lm_extra_config (e.g. SmolLM2-135M LoRA, slow on CPU) trained as in stage 8 +
#                          perplexity, and speech_llm_extra_configs trained and decoded as in 14-15;
#                          beyond the default --stop-stage, so run it with --stage 16
set -euo pipefail

stage=0                  # first stage to run
stop_stage=15            # last stage to run (stage 16 only on request)
force=false              # true: redo the outputs whose inputs changed (otherwise such a change is an error)
corpus_dir=corpus        # where the raw corpus is (or is built)
corpus_args=""           # extra options for local/corpus.sh (e.g. corpus size), split at spaces
ngpu=0                   # GPUs for training (0: CPU)
nproc=1                  # training processes when ngpu=0 (CPU DDP over gloo)
nj=1                     # parallel decoding jobs per test set
train_set=train          # data/<train_set>
valid_set=dev            # data/<valid_set>, used for validation loss
test_sets="dev test"     # sets to decode and score
token_name=char          # data/token/<token_name>
token_config=conf/tokenizer_char.yaml  # tokenizer options
am_config=conf/train_ctc.yaml          # acoustic model + trainer options
am_tag=""                # exp/<am_tag>; default: name of am_config
decode_config=conf/decode_ctc.yaml     # decoding methods
average_last=3           # checkpoints averaged into model_avg.safetensors (the newest N)
checkpoint=average       # which weights to decode: average | latest | step_<N>
train_args=""            # extra key=value overrides for AM training (stage 3); values may hold spaces: "a.b=[1, 2]"
decode_args=""           # extra key=value overrides of the decode config (stage 4)
normalizer=""            # stage 5 text normaliser (asrllm.eval.normalizer; "": the leaderboard's of March 2026)
lm_tokenizers=""         # stage 6: "<name>:<set> ...": conf/tokenizer_<name>.yaml trained on data/<set>
lm_text_set=lm           # data/<lm_text_set>: LLM pre-training text (plain `text` file or data dir)
llm_pretrain_config=""   # stage 7: LM config pre-trained on the LM text ("": skip)
llm_pretrain_args=""     # extra key=value overrides for stage 7
lm_configs=""            # stage 8: LM configs trained on the transcriptions
lm_train_args=""         # extra key=value overrides for stages 8 and 10
lm_zeroshot_configs=""   # stage 9: LM configs evaluated without training (pre-trained or re-vocabularised as is)
lm_test_sets=""          # stage 9: perplexity sets (default: test_sets)
prior_set=""             # stage 10: data/<prior_set> for the CTC prior (default: train_set)
nbest_config=""          # stage 11: decode config of the N-best lists (one method, nbest > 1); "": skip 10-13
rescore_config=""        # stages 12-13: rescoring config (asrllm.bin.rescore): the LMs (by name), the prior,
                         #   and per tuned LM <lm> a method rescore_<lm> that weights it
fusion_config=""         # stage 13: decode config of the fusion methods; its scales are tuned in stage 12
tune_lms=""              # stage 12: LM names (keys of rescore_config's lms) to tune, in this order
tune_args=""             # stage 12: extra options of asrllm.bin.tune_scales, e.g. --lm-grid "0 0.5 1"
speech_llm_configs=""    # stage 14: speech-LLM training configs
speech_llm_args=""       # extra key=value overrides for stages 14 and 16 (speech LLM training)
speech_llm_decode_config=""  # stage 15: decode config of the speech LLMs (method label_sync, ...)
speech_llm_extra_sets="" # stage 15: more sets (data/<set>) the speech LLMs and the AM decode, e.g. a probe set
lm_extra_config=""       # stage 16: an LM config trained and evaluated only on request
speech_llm_extra_configs=""  # stage 16: speech-LLM configs trained and decoded only on request
. utils/parse_options.sh

[[ -f cmd.sh ]] && . ./cmd.sh
[[ -f path.sh ]] && . ./path.sh
: "${train_cmd:=utils/run_local.sh}" "${decode_cmd:=utils/run_local.sh}"
[[ -n $am_tag ]] || am_tag=$(basename "${am_config%.*}")
am_dir=exp/$am_tag
[[ -n $lm_test_sets ]] || lm_test_sets=$test_sets
if (( ngpu > 1 )); then launcher=(torchrun --standalone --nproc_per_node "$ngpu")
elif (( ngpu == 0 && nproc > 1 )); then launcher=(torchrun --standalone --nproc_per_node "$nproc")
else launcher=(python); fi

log() { echo "$(date '+%F %T') (asr.sh) $*"; }
# selected N NAME: true (and logged) when stage N lies in [stage, stop_stage].
selected() {
  (( stage <= $1 && $1 <= stop_stage )) || return 1
  log "Stage $1: $2"
}
force_opt=(); [[ $force == true ]] && force_opt=(--force)
# Space-separated lists as arrays (no glob expansion); key=value override strings go to Python as
# ONE argument, split there before each `key=` (asrllm.config.split_overrides), so values keep spaces.
read -ra corpus_opts <<< "$corpus_args"
read -ra test_set_list <<< "$test_sets"
read -ra lm_test_set_list <<< "$lm_test_sets"
read -ra tune_lm_list <<< "$tune_lms"
read -ra tune_opts <<< "$tune_args"
[[ -n $prior_set ]] || prior_set=$train_set
read -ra lm_tokenizer_list <<< "$lm_tokenizers"
read -ra lm_config_list <<< "$lm_configs"
read -ra lm_zeroshot_list <<< "$lm_zeroshot_configs"
read -ra speech_llm_list <<< "$speech_llm_configs"
read -ra speech_llm_extra_list <<< "$speech_llm_extra_configs"
read -ra sllm_set_list <<< "$test_sets $speech_llm_extra_sets"

# score_sets DIR METHOD...: score DIR/decode_<set>_<method>/ of every set of set_list (default: test_sets).
score_sets() {
  local dir=$1 dset method; shift
  for dset in "${set_list[@]}"; do
    for method in "$@"; do
      python -m asrllm.bin.score --decode-dir "$dir/decode_${dset}_$method" --data "data/$dset" \
        ${normalizer:+--normalizer "$normalizer"}
    done
  done
}
# decode_sets DIR CONFIG [ARGS]: decode every set of set_list with the model of DIR and CONFIG, nj parallel jobs.
decode_sets() {
  local dir=$1 config=$2 dset job pids; shift 2
  for dset in "${set_list[@]}"; do
    pids=()
    for (( job = 0; job < nj; job++ )); do
      $decode_cmd "$dir/logs/decode_$(basename "${config%.*}")_${dset}.$job.log" \
        python -m asrllm.bin.decode --config "$config" --model-dir "$dir" \
          --checkpoint "$checkpoint" --data "data/$dset" --num-jobs "$nj" --job "$job" "${force_opt[@]}" "$@" &
      pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid"; done  # fails the stage if any job failed
  done
}
set_list=("${test_set_list[@]}")

if selected 0 "corpus"; then
  local/corpus.sh --corpus-dir "$corpus_dir" "${force_opt[@]}" "${corpus_opts[@]}"
fi

if selected 1 "data dirs"; then
  local/data.sh --corpus-dir "$corpus_dir" --force "$force"
fi

token_dir=data/token/$token_name
if selected 2 "tokenizer ($token_name)"; then
  $train_cmd "exp/logs/tokenizer_$token_name.log" \
    python -m asrllm.bin.train_tokenizer --config "$token_config" \
      --data-dir "data/$train_set" --out-dir "$token_dir" "${force_opt[@]}"
fi

if selected 3 "AM training ($am_dir)"; then
  $train_cmd "$am_dir/logs/train.log" \
    "${launcher[@]}" -m asrllm.bin.train --config "$am_config" \
      --train-data "data/$train_set" --valid-data "data/$valid_set" \
      --tokenizer "$token_dir" --exp-dir "$am_dir" "${force_opt[@]}" ${train_args:+"$train_args"}
  python -m asrllm.bin.average_checkpoints --exp-dir "$am_dir" --last "$average_last"
fi

if selected 4 "decoding (${test_sets})"; then
  decode_sets "$am_dir" "$decode_config" ${decode_args:+"$decode_args"}
fi

if selected 5 "scoring and RESULTS.md"; then
  read -ra methods <<< "$(python -m asrllm.bin.list_methods "$decode_config")"
  score_sets "$am_dir" "${methods[@]}"
  python -m asrllm.bin.make_results exp --out RESULTS.md --title "mini_synth results"
fi

lm_tag() { basename "${1%.*}"; }  # conf/lm/<name>.yaml -> <name>
# train_lm CONFIG TRAIN_DATA ARGS: train an LM into exp/<name>/ (skipped when trained from the same inputs).
train_lm() {
  local dir; dir=exp/$(lm_tag "$1")
  $train_cmd "$dir/logs/train.log" \
    "${launcher[@]}" -m asrllm.bin.train --config "$1" \
      --train-data "$2" --valid-data "data/$valid_set" --exp-dir "$dir" "${force_opt[@]}" ${3:+"$3"}
}
# perplexities DIR [--config CONFIG]: DIR/ppl_<set>/metrics.json for the sets of lm_test_sets
# (one call: the model is built once, and only for sets not yet evaluated from the same inputs).
perplexities() {
  local dir=$1 dset sets=(); shift
  for dset in "${lm_test_set_list[@]}"; do sets+=("data/$dset"); done
  $decode_cmd "$dir/logs/perplexity.log" \
    python -m asrllm.bin.perplexity --model-dir "$dir" --data "${sets[@]}" "${force_opt[@]}" "$@"
}

if selected 6 "LM tokenizers (${lm_tokenizers})"; then
  for spec in "${lm_tokenizer_list[@]}"; do
    name=${spec%%:*}
    $train_cmd "exp/logs/tokenizer_$name.log" \
      python -m asrllm.bin.train_tokenizer --config "conf/tokenizer_$name.yaml" \
        --data-dir "data/${spec#*:}" --out-dir "data/token/$name" "${force_opt[@]}"
  done
fi

pretrain_dir=exp/$(lm_tag "${llm_pretrain_config:-none}")
if [[ -n $llm_pretrain_config ]] && selected 7 "LLM pre-training ($pretrain_dir)"; then
  train_lm "$llm_pretrain_config" "data/$lm_text_set" "$llm_pretrain_args"
  python -m asrllm.bin.export_llm --model-dir "$pretrain_dir" --out-dir "$pretrain_dir/llm" "${force_opt[@]}"
fi

if selected 8 "LM training on data/$train_set (${lm_configs})"; then
  for config in "${lm_config_list[@]}"; do train_lm "$config" "data/$train_set" "$lm_train_args"; done
fi

if selected 9 "perplexities on ${lm_test_sets}, then RESULTS.md"; then
  for config in ${llm_pretrain_config:+"$llm_pretrain_config"} "${lm_config_list[@]}"; do
    perplexities "exp/$(lm_tag "$config")"
  done
  for config in "${lm_zeroshot_list[@]}"; do perplexities "exp/$(lm_tag "$config")_zeroshot" --config "$config"; done
  python -m asrllm.bin.make_results exp --out RESULTS.md --title "mini_synth results"
fi

# The combination stages 10-13 (skipped without nbest_config).
nbest_method=""
if [[ -n $nbest_config ]]; then
  nbest_method=$(python -m asrllm.bin.list_methods --one "$nbest_config")
  # tuned_configs: the copies of rescore_config and fusion_config that the last tuned LM's stage-12 run wrote.
  tuned_rescore=$rescore_config tuned_fusion=$fusion_config
  for lm in "${tune_lm_list[@]}"; do
    tuned_rescore=$am_dir/tune/$lm/$(basename "$rescore_config")
    tuned_fusion=$am_dir/tune/$lm/$(basename "$fusion_config")
  done
fi

if [[ -n $nbest_config ]] && selected 10 "CTC prior of $am_dir on data/$prior_set"; then
  $decode_cmd "$am_dir/logs/prior.log" \
    python -m asrllm.bin.estimate_prior --model-dir "$am_dir" --checkpoint "$checkpoint" \
      --data "data/$prior_set" "${force_opt[@]}"
fi

if [[ -n $nbest_config ]] && selected 11 "N-best lists ($nbest_method) of ${test_sets}"; then
  decode_sets "$am_dir" "$nbest_config"
  score_sets "$am_dir" "$nbest_method"
fi

if [[ -n $nbest_config ]] && selected 12 "scale tuning on data/$valid_set (${tune_lms})"; then
  $decode_cmd "$am_dir/logs/rescore_tune_${valid_set}.log" \
    python -m asrllm.bin.rescore --config "$rescore_config" --model-dir "$am_dir" \
      --nbest-dir "$am_dir/decode_${valid_set}_$nbest_method" --data "data/$valid_set" --out-prefix tune "${force_opt[@]}"
  templates=("$rescore_config" "$fusion_config")
  for lm in "${tune_lm_list[@]}"; do
    python -m asrllm.bin.tune_scales --nbest-dir "$am_dir/tune_${valid_set}_rescore_$lm" --data "data/$valid_set" \
      --lm "$lm" --template "${templates[0]}" --template "${templates[1]}" --out-dir "$am_dir/tune/$lm" \
      ${normalizer:+--normalizer "$normalizer"} "${force_opt[@]}" "${tune_opts[@]}"
    templates=("$am_dir/tune/$lm/$(basename "$rescore_config")" "$am_dir/tune/$lm/$(basename "$fusion_config")")
  done
fi

if [[ -n $nbest_config ]] && selected 13 "rescoring and fusion decoding of ${test_sets}, then RESULTS.md"; then
  for dset in "${test_set_list[@]}"; do
    $decode_cmd "$am_dir/logs/rescore_${dset}.log" \
      python -m asrllm.bin.rescore --config "$tuned_rescore" --model-dir "$am_dir" \
        --nbest-dir "$am_dir/decode_${dset}_$nbest_method" --data "data/$dset" "${force_opt[@]}"
  done
  decode_sets "$am_dir" "$tuned_fusion"
  read -ra methods <<< "$(python -m asrllm.bin.list_methods "$tuned_rescore") $(python -m asrllm.bin.list_methods "$tuned_fusion")"
  score_sets "$am_dir" "${methods[@]}"
  python -m asrllm.bin.make_results exp --out RESULTS.md --title "mini_synth results"
fi

# train_speech_llm CONFIG: train a speech LLM into exp/<name>/ and average its last checkpoints.
train_speech_llm() {
  local dir; dir=exp/$(lm_tag "$1")
  $train_cmd "$dir/logs/train.log" \
    "${launcher[@]}" -m asrllm.bin.train --config "$1" \
      --train-data "data/$train_set" --valid-data "data/$valid_set" --exp-dir "$dir" "${force_opt[@]}" \
      ${speech_llm_args:+"$speech_llm_args"}
  python -m asrllm.bin.average_checkpoints --exp-dir "$dir" --last "$average_last"
}
# decode_speech_llm CONFIG: decode and score the speech LLM of CONFIG on test_sets + speech_llm_extra_sets.
decode_speech_llm() {
  local dir methods; dir=exp/$(lm_tag "$1")
  set_list=("${sllm_set_list[@]}")
  decode_sets "$dir" "$speech_llm_decode_config"
  read -ra methods <<< "$(python -m asrllm.bin.list_methods "$speech_llm_decode_config")"
  score_sets "$dir" "${methods[@]}"
  set_list=("${test_set_list[@]}")
}

if selected 14 "speech-LLM training (${speech_llm_configs})"; then
  for config in "${speech_llm_list[@]}"; do train_speech_llm "$config"; done
fi

if selected 15 "speech-LLM decoding (${test_sets} ${speech_llm_extra_sets}), then RESULTS.md"; then
  for config in "${speech_llm_list[@]}"; do decode_speech_llm "$config"; done
  if [[ -n $speech_llm_extra_sets ]]; then  # the AM on the extra sets, for comparison
    read -ra set_list <<< "$speech_llm_extra_sets"
    decode_sets "$am_dir" "$decode_config" ${decode_args:+"$decode_args"}
    read -ra methods <<< "$(python -m asrllm.bin.list_methods "$decode_config")"
    score_sets "$am_dir" "${methods[@]}"
    set_list=("${test_set_list[@]}")
  fi
  python -m asrllm.bin.make_results exp --out RESULTS.md --title "mini_synth results"
fi

if (( stage <= 16 && 16 <= stop_stage )); then
  log "Stage 16: on request: extra LM (${lm_extra_config}), extra speech LLMs (${speech_llm_extra_configs})"
  if [[ -n $lm_extra_config ]]; then
    train_lm "$lm_extra_config" "data/$train_set" "$lm_train_args"
    perplexities "exp/$(lm_tag "$lm_extra_config")"
  fi
  for config in "${speech_llm_extra_list[@]}"; do
    train_speech_llm "$config"
    decode_speech_llm "$config"
  done
  python -m asrllm.bin.make_results exp --out RESULTS.md --title "mini_synth results"
fi
log "finished stages $stage..$stop_stage"
