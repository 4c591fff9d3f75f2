"""The tiny native checkpoint builder lives in the service now (`dsocr.tiny.checkpoint`, which `./start.sh demo`
serves); re-exported here for the scripts that import it by this name (bench/benchmark.py)."""

import sys
from pathlib import Path

# A script run from elsewhere (`python bench/benchmark.py`) has tests/ on its path but not the service's root.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.append(_ROOT)

from dsocr.tiny.checkpoint import build_native_checkpoint, tiny_config  # noqa: E402

__all__ = ["build_native_checkpoint", "tiny_config"]
