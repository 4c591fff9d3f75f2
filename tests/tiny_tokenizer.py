"""The tiny checkpoints' tokenizer lives in the service now (`dsocr.tiny.tokenizer`, which the demo checkpoint
uses too); re-exported here for the scripts that import it by this name (bench/benchmark.py,
`python tests/vllm_checkpoint.py FOLDER`)."""

import sys
from pathlib import Path

# A script run from elsewhere (`python bench/benchmark.py`) has tests/ on its path but not the service's root.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.append(_ROOT)

from dsocr.tiny.tokenizer import BOS, EOS, PAD, SPECIAL_TOKENS, TABLE_TOKENS, build_tokenizer  # noqa: E402

__all__ = ["BOS", "EOS", "PAD", "SPECIAL_TOKENS", "TABLE_TOKENS", "build_tokenizer"]
