"""A document's outputs, each written whole or not at all (a temporary file beside it, then a rename): the
markdown, with `--json` the full answer, with `--figures` the figure crops, to which the markdown then links."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

# A figure in the answer's markdown: an image link to the run's artifacts (`/api/runs/{runId}/...images/N.jpg`,
# see dsocr/pipeline/artifacts.py), which the service serves for a limited time only.
FIGURE_LINK = re.compile(r"!\[([^\]]*)\]\(([^)\s]*/api/runs/[^)\s]+)\)")
FIGURES_SUFFIX = "_figures"


def write_atomically(path: Path, data: bytes) -> None:
    """`path` holds either its old content or all of `data`, whenever the process stops."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def figure_links(markdown: str) -> list[str]:
    """The figure links of a document's markdown, each once, in order."""
    return list(dict.fromkeys(match.group(2) for match in FIGURE_LINK.finditer(markdown)))


async def write_outputs(markdown_path: Path, answer: dict[str, Any], with_json: bool, with_figures: bool,
                        download: Callable[[str], Awaitable[bytes]]) -> None:
    """Writes the markdown last, so that its presence means the rest is there too (it is what a later run looks
    at to decide that the document is done)."""
    markdown = answer.get("text") or ""
    if with_figures:
        folder = markdown_path.with_name(markdown_path.stem + FIGURES_SUFFIX)
        local: dict[str, str] = {}
        for number, link in enumerate(figure_links(markdown), start=1):
            name = f"figure-{number}{Path(link).suffix or '.jpg'}"
            write_atomically(folder / name, await download(link))
            local[link] = f"{folder.name}/{name}"
        markdown = FIGURE_LINK.sub(lambda match: f"![{match.group(1)}]({local[match.group(2)]})", markdown)
    if with_json:
        text = json.dumps(answer, ensure_ascii=False, indent=2) + "\n"
        write_atomically(markdown_path.with_suffix(".json"), text.encode("utf-8"))
    write_atomically(markdown_path, markdown.encode("utf-8"))
