#!/usr/bin/env bash
# Local job runner (the default in cmd.sh): run_local.sh LOGFILE COMMAND...
# Runs COMMAND on this machine, writes its output to LOGFILE (and to the terminal), and fails with
# the log's name when COMMAND fails. A Slurm runner takes the same arguments. The log's first line
# is the command, shell-quoted (copy-pasteable, also with spaces in paths or values).
set -euo pipefail
log=$1; shift
mkdir -p "$(dirname "$log")"
quoted=""
for arg in "$@"; do
  if [[ $arg =~ ^[A-Za-z0-9_./=:,+@%-]+$ ]]; then quoted+=" $arg"; else quoted+=" ${arg@Q}"; fi
done
{ echo "#$quoted"; echo "# started $(date -Is) on $(hostname)"; } > "$log"
rc=0
"$@" 2>&1 | tee -a "$log" || rc=$?
echo "# ended $(date -Is) with status $rc" >> "$log"
if (( rc != 0 )); then echo "run_local.sh: command failed (status $rc); see $log" >&2; exit "$rc"; fi
