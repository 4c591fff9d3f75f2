"""The demo: `DEEPSEEK_OCR_MODEL_PATH=demo` (`./start.sh demo`) serves a tiny, randomly initialised DeepSeek-OCR-2
checkpoint of the real transformers classes (`dsocr.tiny`), so that the whole service (endpoints, PDFs,
streaming, the page at /) runs on a laptop without downloading the 6-7 GB weights. Only the text is random.

The checkpoint is built once into a cache folder (`DEEPSEEK_OCR_DEMO_DIR`, default
`${XDG_CACHE_HOME:-~/.cache}/deepseek-ocr-service/demo-checkpoint`) and reused by later starts. A build writes a
temporary sibling folder and renames it into place, so a build that is killed never leaves half a checkpoint; a
version stamp in the folder (a hash of the builder's code and the transformers version) rebuilds it when either
changes. Builds of several processes at once are serialised by a lock file beside the folder.

Nothing here imports torch or transformers until a build runs: the remote-code profile and the vLLM front import
this module too.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import shutil
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from dsocr.profiles import DEMO, is_demo  # noqa: F401 (the model-path rules live together, importable without a venv)

if TYPE_CHECKING:
    from settings import Settings

log = logging.getLogger("deepseek_ocr.demo")

DEMO_DIR_ENV = "DEEPSEEK_OCR_DEMO_DIR"
# Random weights never end an answer, so every page generates exactly this many tokens unless
# DEEPSEEK_OCR_MAX_NEW_TOKENS is set. Measured through the service on a 2-core CPU (an A4 page in gundam mode:
# 1024 global view + 6 tiles; best of 6 requests, three runs on a shared machine): 0.8-1.4 s at 64 tokens,
# 1.1-2.6 s at 256, 1.5-3.1 s at 512, 4.3 s at 1024. The vision encoder and the ~1100-token prefill dominate up
# to 256 tokens; past it decoding does, so 256 is where a page still answers in a second or two with a
# paragraph of (random) text to show.
DEMO_MAX_NEW_TOKENS = 256
STAMP_FILE = ".demo-version"
_BUILDER_FILES = ("checkpoint.py", "tokenizer.py")
# The first transformers with the native DeepSeek-OCR-2 classes (requirements.txt).
_NATIVE_TRANSFORMERS = (5, 17)


class DemoError(Exception):
    """The demo cannot be built or served here; the message says why and what to do."""


def demo_dir() -> Path:
    """Where the demo checkpoint lives: DEEPSEEK_OCR_DEMO_DIR, else the user's cache folder."""
    configured = os.environ.get(DEMO_DIR_ENV, "").strip()
    if configured:
        return Path(configured).expanduser().absolute()
    cache = os.environ.get("XDG_CACHE_HOME", "").strip() or Path.home() / ".cache"
    return Path(cache).expanduser().absolute() / "deepseek-ocr-service" / "demo-checkpoint"


def demo_settings(settings: "Settings") -> "Settings":
    """The demo's generation cap (DEMO_MAX_NEW_TOKENS), unless DEEPSEEK_OCR_MAX_NEW_TOKENS was set."""
    if "ocr_max_new_tokens" in settings.model_fields_set:
        return settings
    return settings.model_copy(update={"ocr_max_new_tokens": DEMO_MAX_NEW_TOKENS})


def builder_version() -> str:
    """Changes whenever the builder does: its code (dsocr/tiny) or the transformers that writes the checkpoint."""
    digest = hashlib.sha256()
    tiny = Path(__file__).resolve().parent / "tiny"
    for name in _BUILDER_FILES:
        digest.update((tiny / name).read_bytes())
    digest.update(_transformers_version().encode())
    return digest.hexdigest()[:16]


def _transformers_version() -> str:
    try:
        return metadata.version("transformers")
    except metadata.PackageNotFoundError:
        return "none"


def check_demo_can_run(folder: Path | None = None) -> Path:
    """Refuses, before anything loads, a demo that cannot run here: transformers without the native classes, or
    a cache folder that cannot be made. Returns the folder."""
    folder = folder or demo_dir()
    version = _transformers_version()
    try:
        release = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        release = _NATIVE_TRANSFORMERS  # a development build: let the build tell
    if version == "none" or release < _NATIVE_TRANSFORMERS:
        raise DemoError(
            f"the demo needs the native DeepSeek-OCR-2 classes of transformers >= 5.17 (installed: {version}); "
            "run it in the native profile: ./start.sh demo"
        )
    if folder.exists() and not folder.is_dir():
        raise DemoError(f"{DEMO_DIR_ENV}={str(folder)!r} is a file; point it at a folder for the demo checkpoint")
    if _holds_other_files(folder):
        raise DemoError(_OTHER_FILES.format(folder=folder, env=DEMO_DIR_ENV))
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DemoError(f"cannot create the demo checkpoint's folder {folder.parent} ({exc}); set {DEMO_DIR_ENV} "
                        "to a writable folder") from None
    return folder


def is_current(folder: Path, version: str | None = None) -> bool:
    """The folder holds a demo checkpoint built by this builder."""
    try:
        return (folder / STAMP_FILE).read_text(encoding="utf-8").strip() == (version or builder_version())
    except OSError:
        return False


def ensure_demo_checkpoint(folder: Path | None = None) -> Path:
    """The demo checkpoint's folder, built first if it is missing or was built by another builder."""
    folder = folder or demo_dir()
    version = builder_version()
    if is_current(folder, version):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(folder):
        if is_current(folder, version):  # another process built it while this one waited
            return folder
        if _holds_other_files(folder):
            raise DemoError(_OTHER_FILES.format(folder=folder, env=DEMO_DIR_ENV))
        _remove_leftovers(folder)
        log.info("building the demo checkpoint (a tiny random DeepSeek-OCR-2) in %s: once, later starts reuse it",
                 folder)
        temporary = folder.with_name(f"{folder.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            from dsocr.tiny.checkpoint import build_native_checkpoint

            build_native_checkpoint(temporary, seed=0)
            (temporary / STAMP_FILE).write_text(version + "\n", encoding="utf-8")
            _move_into_place(temporary, folder)
        finally:
            shutil.rmtree(temporary, ignore_errors=True)
    return folder


_OTHER_FILES = ("{folder} ({env}) holds files that are not a demo checkpoint; point {env} at a new folder (the "
                "demo replaces the folder whenever it is rebuilt)")


def _holds_other_files(folder: Path) -> bool:
    """A folder the demo did not make (no stamp, not empty): never replaced."""
    return folder.is_dir() and not (folder / STAMP_FILE).exists() and any(folder.iterdir())


def _move_into_place(built: Path, folder: Path) -> None:
    """Renames the finished build onto `folder`; an older build there is moved aside first, then removed."""
    old = None
    if folder.exists():
        old = folder.with_name(f"{folder.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
        os.rename(folder, old)
    os.rename(built, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _remove_leftovers(folder: Path) -> None:
    """Temporary folders of builds that were killed (only the lock's holder builds, so none is in use)."""
    for pattern in (f"{folder.name}.tmp-*", f"{folder.name}.old-*"):
        for leftover in folder.parent.glob(pattern):
            log.info("removing %s, left by an interrupted demo build", leftover)
            shutil.rmtree(leftover, ignore_errors=True)


@contextlib.contextmanager
def _build_lock(folder: Path) -> Iterator[None]:
    """One build at a time across processes (an advisory lock on a file beside the folder)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, the rename still keeps each build whole
        yield
        return
    with open(folder.with_name(f".{folder.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
