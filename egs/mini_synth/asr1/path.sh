# Puts the project's venv (made by tools/install.sh) first on PATH and keeps runs reproducible.
MAIN_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
[[ -d $MAIN_ROOT/.venv/bin ]] && export PATH=$MAIN_ROOT/.venv/bin:$PATH
export PYTHONUNBUFFERED=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
