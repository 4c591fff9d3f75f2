#!/usr/bin/env bash
# Sets up a virtual environment (once, and again when the requirements change) and starts the service.
#
#   ./start.sh                      serve on 0.0.0.0:8000 (HOST / PORT or --host / --port to change)
#   ./start.sh test [pytest args]   run the test suite (the same environment: switching never reinstalls)
#   --model PATH_OR_ID              the checkpoint: a folder or a Hugging Face repo id (DEEPSEEK_OCR_MODEL_PATH)
#   --profile native|remote-code|vllm
#                                   which requirements: native (requirements.txt, .venv), the original
#                                   checkpoints' remote code (requirements-remote-code.txt, .venv-remote-code), or
#                                   the front of vLLM servers (requirements-service.txt only, no torch,
#                                   .venv-vllm-front). Default: vllm when DEEPSEEK_OCR_ENGINE=vllm; remote-code
#                                   when DEEPSEEK_OCR_MODEL_PATH is a folder whose config.json has auto_map (or
#                                   DEEPSEEK_OCR_ENGINE=remote-code); else native.
#
# Environment: PYTHON (interpreter for the venv, default python3), VENV (its folder), TORCH_SPEC (what
# `pip install` gets when torch is missing, default torch==2.13.0), TORCH_INDEX_URL (where pip looks for it,
# e.g. PyTorch's CPU-only wheel index https://download.pytorch.org/whl/cpu; default: the usual index). Every
# DEEPSEEK_* variable of the README's settings table reaches the service (DEEPSEEK_OCR_MODEL_PATH,
# DEEPSEEK_OCR_ENGINE, DEEPSEEK_OCR_DEVICE, DEEPSEEK_OCR_MAX_NEW_TOKENS, ...).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PYTHON=${PYTHON:-python3}
HOST=${HOST:-0.0.0.0}
PORT=${PORT:-8000}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
command=serve
profile=

# An option's value must follow it: `./start.sh --port` alone is an error, not a port named "".
value_of() {
  if (($# < 2)) || [[ -z $2 || $2 == -* ]]; then
    echo "start.sh: $1 needs a value (see ./start.sh --help)" >&2
    exit 2
  fi
}

while (($#)); do
  case $1 in
    --host) value_of "$@"; HOST=$2; shift 2 ;;
    --port) value_of "$@"; PORT=$2; shift 2 ;;
    --profile) value_of "$@"; profile=$2; shift 2 ;;
    --model) value_of "$@"; export DEEPSEEK_OCR_MODEL_PATH=$2; shift 2 ;;
    test) command=test; shift; break ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | grep '^#' | cut -c3-; exit 0 ;;
    *) echo "start.sh: unknown argument $1 (see ./start.sh --help)" >&2; exit 2 ;;
  esac
done

# The checkpoint's layout picks the profile: original folders ship their own code (config.json auto_map).
checkpoint_has_remote_code() {
  local config="${DEEPSEEK_OCR_MODEL_PATH:-../../ocr_project/model}/config.json"
  [[ ${DEEPSEEK_OCR_ENGINE:-auto} == remote-code ]] && return 0
  [[ ${DEEPSEEK_OCR_ENGINE:-auto} == auto && -f $config ]] || return 1
  "$PYTHON" -c 'import json, sys; sys.exit(0 if json.load(open(sys.argv[1])).get("auto_map") else 1)' "$config"
}
if [[ -z $profile ]]; then
  if [[ $command == serve && ${DEEPSEEK_OCR_ENGINE:-auto} == vllm ]]; then profile=vllm
  elif [[ $command == serve ]] && checkpoint_has_remote_code; then profile=remote-code
  else profile=native; fi
fi
case $profile in
  native) requirements=(requirements.txt); VENV=${VENV:-.venv} ;;
  remote-code) requirements=(requirements-remote-code.txt); VENV=${VENV:-.venv-remote-code} ;;
  vllm) requirements=(requirements-service.txt); VENV=${VENV:-.venv-vllm-front} ;;
  *) echo "start.sh: --profile must be native, remote-code or vllm, not $profile" >&2; exit 2 ;;
esac
# The test tools belong to every profile: one install serves both `./start.sh` and `./start.sh test`.
requirements+=(requirements-dev.txt)

if [[ ! -x $VENV/bin/python ]]; then
  echo "start.sh: creating the virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"

if [[ $profile != vllm ]] && ! python -c "import torch" 2>/dev/null; then
  echo "start.sh: torch is missing; installing $TORCH_SPEC (set TORCH_SPEC to pick another build)"
  python -m pip install --quiet ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "$TORCH_SPEC"
fi

# One stamp per profile over all of its requirement files: reinstall only when they changed.
stamp="$VENV/.requirements-$(cat requirements-service.txt "${requirements[@]}" | sha256sum | cut -c1-16)"
if [[ ! -f $stamp ]]; then
  echo "start.sh: installing ${requirements[*]} ($profile profile, in $VENV)"
  python -m pip install --quiet --upgrade pip
  python -m pip install --quiet "${requirements[@]/#/-r}"
  rm -f "$VENV"/.requirements-*
  touch "$stamp"
fi

if [[ $command == test ]]; then
  exec python -m pytest "$@"
fi
exec python -m uvicorn app:app --host "$HOST" --port "$PORT"
