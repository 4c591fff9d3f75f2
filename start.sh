#!/usr/bin/env bash
# Sets up a virtual environment (once, and again when the requirements change) and starts the service.
#
#   ./start.sh                      serve on 0.0.0.0:8000 (HOST / PORT or --host / --port to change)
#   ./start.sh test [pytest args]   install the test tools too and run the test suite
#
# Environment: PYTHON (interpreter for the venv, default python3), VENV (its folder, default .venv),
# TORCH_SPEC (what `pip install` gets when torch is missing, default torch==2.13.0).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
HOST=${HOST:-0.0.0.0}
PORT=${PORT:-8000}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
command=serve
requirements=(requirements.txt)

while (($#)); do
  case $1 in
    --host) HOST=$2; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    test) command=test; requirements+=(requirements-dev.txt); shift; break ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "start.sh: unknown argument $1 (see ./start.sh --help)" >&2; exit 2 ;;
  esac
done

if [[ ! -x $VENV/bin/python ]]; then
  echo "start.sh: creating the virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"

if ! python -c "import torch" 2>/dev/null; then
  echo "start.sh: torch is missing; installing $TORCH_SPEC (set TORCH_SPEC to pick another build)"
  python -m pip install --quiet "$TORCH_SPEC"
fi

# Reinstall only when the requirement files differ from those of the last install.
stamp="$VENV/.requirements-$(cat "${requirements[@]}" | sha256sum | cut -c1-16)"
if [[ ! -f $stamp ]]; then
  echo "start.sh: installing ${requirements[*]}"
  python -m pip install --quiet --upgrade pip
  python -m pip install --quiet "${requirements[@]/#/-r}"
  rm -f "$VENV"/.requirements-*
  touch "$stamp"
fi

if [[ $command == test ]]; then
  exec python -m pytest "$@"
fi
exec python -m uvicorn app:app --host "$HOST" --port "$PORT"
