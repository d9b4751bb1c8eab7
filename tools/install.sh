#!/usr/bin/env bash
# Installs what asrllm needs on a fresh Debian machine: apt packages, then a venv with the pinned
# Python packages and asrllm itself (editable). Usage: tools/install.sh [VENV_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-$root/.venv}

missing=()
while read -r pkg; do
  [[ -z $pkg || $pkg == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done < "$root/tools/apt-packages.txt"
if (( ${#missing[@]} )); then
  echo "tools/install.sh: installing apt packages: ${missing[*]}"
  sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

[[ -x $venv/bin/python ]] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
# torch first and alone: its exact pin makes pip take the CPU wheel, not GBs of CUDA wheels.
"$venv/bin/python" -m pip install -q "$(grep '^torch==' "$root/requirements.txt")"
"$venv/bin/python" -m pip install -q -r "$root/requirements.txt" -c "$root/tools/constraints.txt"
"$venv/bin/python" -m pip install -q --no-deps -r "$root/tools/requirements-nodeps.txt"
"$venv/bin/python" -m pip install -q --no-deps -e "$root"
