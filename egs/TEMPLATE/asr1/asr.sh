#!/usr/bin/env bash
# The shared stage script behind every recipe's run.sh (ESPnet's asr.sh, kept short).
# Each stage is one Python entry point; option defaults of the models and searches live in their
# YAML configs and dataclasses, not here. Every stage can be re-run; finished stages leave a
# `.done` marker (remove it, or pass --force true, to redo one).
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
#   Stage 10: extra LM     lm_extra_config (e.g. SmolLM2-135M LoRA, slow on CPU) trained as in stage 8
#                          + perplexity; beyond the default --stop-stage, so run it with --stage 10
set -euo pipefail

stage=0                  # first stage to run
stop_stage=9             # last stage to run (stage 10 only on request)
force=false              # redo stages even if their .done marker exists
corpus_dir=corpus        # where the raw corpus is (or is built)
corpus_args=""           # extra options for local/corpus.sh (e.g. corpus size)
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
train_args=""            # extra key=value overrides for AM training (stage 3)
decode_args=""           # extra options for decoding
lm_tokenizers=""         # stage 6: "<name>:<set> ...": conf/tokenizer_<name>.yaml trained on data/<set>
lm_text_set=lm           # data/<lm_text_set>: LLM pre-training text (plain `text` file or data dir)
llm_pretrain_config=""   # stage 7: LM config pre-trained on the LM text ("": skip)
llm_pretrain_args=""     # extra key=value overrides for stage 7
lm_configs=""            # stage 8: LM configs trained on the transcriptions
lm_train_args=""         # extra key=value overrides for stages 8 and 10
lm_zeroshot_configs=""   # stage 9: LM configs evaluated without training (pre-trained or re-vocabularised as is)
lm_test_sets=""          # stage 9: perplexity sets (default: test_sets)
lm_extra_config=""       # stage 10: an LM config trained and evaluated only on request
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
# run_stage N NAME MARKER: true when stage N is selected and its MARKER file does not exist yet.
run_stage() {
  (( stage <= $1 && $1 <= stop_stage )) || return 1
  if [[ $force != true && -f $3 ]]; then log "Stage $1: $2 (done: $3 exists; --force true redoes it)"; return 1; fi
  log "Stage $1: $2"
}
mark_done() { mkdir -p "$(dirname "$1")"; date -Is > "$1"; }

if run_stage 0 "corpus" "$corpus_dir/.done"; then
  # shellcheck disable=SC2086
  local/corpus.sh --corpus-dir "$corpus_dir" $corpus_args
  mark_done "$corpus_dir/.done"
fi

if run_stage 1 "data dirs" data/.done; then
  local/data.sh --corpus-dir "$corpus_dir"
  mark_done data/.done
fi

token_dir=data/token/$token_name
if run_stage 2 "tokenizer ($token_name)" "$token_dir/.done"; then
  ${train_cmd} exp/logs/tokenizer_$token_name.log \
    python -m asrllm.bin.train_tokenizer --config "$token_config" \
      --data-dir "data/$train_set" --out-dir "$token_dir"
  mark_done "$token_dir/.done"
fi

if run_stage 3 "AM training ($am_dir)" "$am_dir/.done_train"; then
  # shellcheck disable=SC2086
  ${train_cmd} "$am_dir/logs/train.log" \
    "${launcher[@]}" -m asrllm.bin.train --config "$am_config" \
      --train-data "data/$train_set" --valid-data "data/$valid_set" \
      --tokenizer "$token_dir" --exp-dir "$am_dir" --resume $train_args
  python -m asrllm.bin.average_checkpoints --exp-dir "$am_dir" --last "$average_last"
  mark_done "$am_dir/.done_train"
fi

decode_marker=$am_dir/.done_decode_$(basename "${decode_config%.*}")_$checkpoint
if run_stage 4 "decoding (${test_sets})" "$decode_marker"; then
  for dset in $test_sets; do
    pids=()
    for job in $(seq 0 $((nj - 1))); do
      # shellcheck disable=SC2086
      ${decode_cmd} "$am_dir/logs/decode_${dset}.$job.log" \
        python -m asrllm.bin.decode --config "$decode_config" --model-dir "$am_dir" \
          --checkpoint "$checkpoint" --data "data/$dset" --num-jobs "$nj" --job "$job" $decode_args &
      pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid"; done  # fails the stage if any job failed
  done
  mark_done "$decode_marker"
fi

if (( stage <= 5 && 5 <= stop_stage )); then
  log "Stage 5: scoring and RESULTS.md"
  for dset in $test_sets; do
    for ddir in "$am_dir"/decode_"${dset}"_*/; do
      python -m asrllm.bin.score --decode-dir "$ddir" --data "data/$dset"
    done
  done
  python -m asrllm.bin.make_results exp --out RESULTS.md --title "mini_synth results"
fi

lm_tag() { basename "${1%.*}"; }  # conf/lm/<name>.yaml -> <name>
# train_lm CONFIG TRAIN_DATA ARGS: train an LM into exp/<name>/ (marker exp/<name>/.done_train).
train_lm() {
  local dir; dir=exp/$(lm_tag "$1")
  if [[ $force != true && -f $dir/.done_train ]]; then log "  $dir: trained already"; return; fi
  # shellcheck disable=SC2086
  ${train_cmd} "$dir/logs/train.log" \
    "${launcher[@]}" -m asrllm.bin.train --config "$1" \
      --train-data "$2" --valid-data "data/$valid_set" --exp-dir "$dir" --resume $3
  mark_done "$dir/.done_train"
}
# perplexities DIR [--config CONFIG]: DIR/ppl_<set>/metrics.json for the sets of lm_test_sets
# that lack one (one call: the model is built once).
perplexities() {
  local dir=$1 dset sets=(); shift
  for dset in $lm_test_sets; do
    [[ $force != true && -f $dir/ppl_$dset/metrics.json ]] || sets+=("data/$dset")
  done
  (( ${#sets[@]} )) || return 0
  ${decode_cmd} "$dir/logs/perplexity.log" \
    python -m asrllm.bin.perplexity --model-dir "$dir" --data "${sets[@]}" "$@"
}

if (( stage <= 6 && 6 <= stop_stage )); then
  log "Stage 6: LM tokenizers (${lm_tokenizers})"
  for spec in $lm_tokenizers; do
    name=${spec%%:*}; dir=data/token/$name
    if [[ $force != true && -f $dir/.done ]]; then log "  $dir: trained already"; continue; fi
    ${train_cmd} "exp/logs/tokenizer_$name.log" \
      python -m asrllm.bin.train_tokenizer --config "conf/tokenizer_$name.yaml" \
        --data-dir "data/${spec#*:}" --out-dir "$dir"
    mark_done "$dir/.done"
  done
fi

pretrain_dir=exp/$(lm_tag "${llm_pretrain_config:-none}")
if [[ -n $llm_pretrain_config ]] && run_stage 7 "LLM pre-training ($pretrain_dir)" "$pretrain_dir/llm/.done"; then
  train_lm "$llm_pretrain_config" "data/$lm_text_set" "$llm_pretrain_args"
  python -m asrllm.bin.export_llm --model-dir "$pretrain_dir" --out-dir "$pretrain_dir/llm"
  mark_done "$pretrain_dir/llm/.done"
fi

if (( stage <= 8 && 8 <= stop_stage )); then
  log "Stage 8: LM training on data/$train_set (${lm_configs})"
  for config in $lm_configs; do train_lm "$config" "data/$train_set" "$lm_train_args"; done
fi

if (( stage <= 9 && 9 <= stop_stage )); then
  log "Stage 9: perplexities on ${lm_test_sets}, then RESULTS.md"
  for config in $llm_pretrain_config $lm_configs; do perplexities "exp/$(lm_tag "$config")"; done
  for config in $lm_zeroshot_configs; do perplexities "exp/$(lm_tag "$config")_zeroshot" --config "$config"; done
  python -m asrllm.bin.make_results exp --out RESULTS.md --title "mini_synth results"
fi

if [[ -n $lm_extra_config ]] && (( stage <= 10 && 10 <= stop_stage )); then
  log "Stage 10: extra LM ($lm_extra_config)"
  train_lm "$lm_extra_config" "data/$train_set" "$lm_train_args"
  perplexities "exp/$(lm_tag "$lm_extra_config")"
  python -m asrllm.bin.make_results exp --out RESULTS.md --title "mini_synth results"
fi
log "finished stages $stage..$stop_stage"
