#!/usr/bin/env bash
# Sets up a virtual environment (once, and again when the requirements change) and starts the service.
#
#   ./start.sh demo                 serve a tiny, randomly initialised DeepSeek-OCR-2 (DEEPSEEK_OCR_MODEL_PATH=demo,
#                                   native profile), then open http://localhost:8000/: every endpoint, PDFs,
#                                   streaming and the page work, but the text is random. Built once (seconds) into
#                                   ${XDG_CACHE_HOME:-~/.cache}/deepseek-ocr-service/demo-checkpoint
#                                   (DEEPSEEK_OCR_DEMO_DIR moves it); 256 new tokens a page unless
#                                   DEEPSEEK_OCR_MAX_NEW_TOKENS is set. No download but the packages.
#   ./start.sh                      serve on 0.0.0.0:8000 (HOST / PORT or --host / --port to change)
#   ./start.sh test [pytest args]   run the test suite (the same environment: switching never reinstalls)
#   --model PATH_OR_ID              the checkpoint: a folder, a Hugging Face repo id, or demo
#                                   (DEEPSEEK_OCR_MODEL_PATH). Without it: ../../ocr_project/model when that
#                                   folder exists, else deepseek-community/DeepSeek-OCR-2 from the Hugging Face
#                                   hub (6-7 GB, downloaded once into its cache, HF_HUB_CACHE; without network
#                                   the service stops at once, naming ./start.sh demo)
#   --profile native|remote-code|vllm
#                                   which requirements: native (requirements.txt, .venv), the original
#                                   checkpoints' remote code (requirements-remote-code.txt, .venv-remote-code), or
#                                   the front of vLLM servers (requirements-service.txt only, no torch,
#                                   .venv-vllm-front). Default: vllm when DEEPSEEK_OCR_ENGINE=vllm; remote-code
#                                   when the checkpoint's config.json has auto_map (or DEEPSEEK_OCR_ENGINE=
#                                   remote-code): a folder's, or a repo id's in the Hugging Face cache
#                                   (HF_HUB_CACHE, HF_HOME); deepseek-ai/DeepSeek-OCR and deepseek-ai/DeepSeek-OCR-2
#                                   count as remote-code before they are cached; else native (so pass --profile
#                                   remote-code for another original-layout repo id that is not cached yet).
#                                   `python3 -m dsocr profile` prints that default.
#   --dry-run                       print the profile, its virtual environment and the command, and stop
#
# Environment: PYTHON (interpreter for the venv, default python3), VENV (its folder), TORCH_SPEC (what
# `pip install` gets when torch is missing, default torch==2.13.0), TORCH_INDEX_URL (where pip looks for it,
# e.g. PyTorch's CPU-only wheel index https://download.pytorch.org/whl/cpu; default: the usual index). Every
# DEEPSEEK_* variable of docs/configuration.md's settings tables reaches the service (DEEPSEEK_OCR_MODEL_PATH,
# DEEPSEEK_OCR_ENGINE, DEEPSEEK_OCR_DEVICE, DEEPSEEK_OCR_MAX_NEW_TOKENS, ...), and so do DEEPSEEK_OCR_DEMO_DIR (the
# demo checkpoint's folder), HF_HUB_CACHE / HF_HOME (the Hugging Face cache), HF_TOKEN and HF_HUB_OFFLINE=1 (use
# the Hugging Face cache only, never the network).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PYTHON=${PYTHON:-python3}
HOST=${HOST:-0.0.0.0}
PORT=${PORT:-8000}
# uvicorn's HTTP/1.1 protocol with a connection cap and a request-head deadline (DEEPSEEK_OCR_MAX_CONNECTIONS,
# DEEPSEEK_OCR_HEADER_TIMEOUT_S).
GUARDED_HTTP=dsocr.api.connections:GuardedH11Protocol
# asyncio's event loop, the one the tests cover (uvicorn would pick uvloop where installed, as requirements-dev does).
LOOP=asyncio
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
command=serve
profile=
demo=
dry_run=

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
    --dry-run) dry_run=1; shift ;;
    demo) demo=1; export DEEPSEEK_OCR_MODEL_PATH=demo; shift ;;
    test) command=test; shift; break ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | grep '^#' | cut -c3-; exit 0 ;;
    *) echo "start.sh: unknown argument $1 (see ./start.sh --help)" >&2; exit 2 ;;
  esac
done

if [[ -n $demo ]]; then
  # The demo checkpoint is in the native layout, loaded by this process.
  if [[ -n $profile && $profile != native ]]; then
    echo "start.sh: the demo runs in the native profile, not $profile" >&2
    exit 2
  fi
  if [[ ${DEEPSEEK_OCR_ENGINE:-auto} != auto && ${DEEPSEEK_OCR_ENGINE:-auto} != transformers ]]; then
    echo "start.sh: the demo runs on the transformers engine: unset DEEPSEEK_OCR_ENGINE=$DEEPSEEK_OCR_ENGINE" >&2
    exit 2
  fi
  profile=native
fi

# Without --profile, Python reads the checkpoint's layout (dsocr/profiles.py: standard library only, so the system
# python3 runs it before any virtual environment exists). Tests always use the native profile unless told.
if [[ -z $profile ]]; then
  if [[ $command == serve ]]; then profile=$("$PYTHON" -m dsocr profile)
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

if [[ -n $dry_run ]]; then
  echo "profile: $profile ($VENV; ${requirements[*]})"
  echo "model: ${DEEPSEEK_OCR_MODEL_PATH:-(unset: ../../ocr_project/model when it exists, else deepseek-community/DeepSeek-OCR-2)}"
  if [[ $command == test ]]; then echo "command: python -m pytest $*"
  else echo "command: python -m uvicorn app:app --host $HOST --port $PORT --loop $LOOP --http $GUARDED_HTTP"; fi
  exit 0
fi

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
if [[ -n $demo ]]; then
  [[ $HOST == 0.0.0.0 || $HOST == :: ]] && url_host=localhost || url_host=$HOST
  echo "start.sh: the demo: a tiny random checkpoint, so the text is random; open http://$url_host:$PORT/ once it is up"
fi
exec python -m uvicorn app:app --host "$HOST" --port "$PORT" --loop "$LOOP" --http "$GUARDED_HTTP"
