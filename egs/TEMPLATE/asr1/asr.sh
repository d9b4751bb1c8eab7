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
set -euo pipefail

stage=0                  # first stage to run
stop_stage=100           # last stage to run
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
train_args=""            # extra key=value overrides for training
decode_args=""           # extra options for decoding
. utils/parse_options.sh

[[ -f cmd.sh ]] && . ./cmd.sh
[[ -f path.sh ]] && . ./path.sh
: "${train_cmd:=utils/run_local.sh}" "${decode_cmd:=utils/run_local.sh}"
[[ -n $am_tag ]] || am_tag=$(basename "${am_config%.*}")
am_dir=exp/$am_tag

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
  if (( ngpu > 1 )); then launcher=(torchrun --standalone --nproc_per_node "$ngpu")
  elif (( ngpu == 0 && nproc > 1 )); then launcher=(torchrun --standalone --nproc_per_node "$nproc")
  else launcher=(python); fi
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
log "finished stages $stage..$stop_stage"
