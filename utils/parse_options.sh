#!/usr/bin/env bash
# Kaldi-style option parsing, sourced by a script after it has set its defaults:
#   stage=0; nj=4; . utils/parse_options.sh
# Each `--some-name VALUE` (or `--some-name=VALUE`) sets the existing shell variable some_name.
# An option whose variable was not defined first is an error naming it. Remaining arguments are
# left in "$@". `--help` prints the script's commented option defaults (lines `name=value  # why`).
__asrllm_args=()
while (( $# )); do
  case $1 in
    --help|-h)
      echo "Usage: $0 [options]"
      awk -F'#' '/^[a-z_][a-z0-9_]*=/ && NF > 1 { split($1, kv, "="); n = kv[1]; gsub("_", "-", n);
        printf "  --%-22s %-18s %s\n", n, kv[2], $2 }' "$0"
      exit 0 ;;
    --*=*) __name=${1%%=*}; __value=${1#*=}; shift ;;
    --*) [[ $# -ge 2 ]] || { echo "$0: option $1 needs a value" >&2; exit 1; }
         __name=$1; __value=$2; shift 2 ;;
    *) __asrllm_args+=("$1"); shift; continue ;;
  esac
  __var=${__name#--}; __var=${__var//-/_}
  if ! declare -p "$__var" >/dev/null 2>&1; then
    echo "$0: unknown option $__name" >&2; exit 1
  fi
  printf -v "$__var" '%s' "$__value"
done
set -- "${__asrllm_args[@]+"${__asrllm_args[@]}"}"
unset __asrllm_args __name __value __var
