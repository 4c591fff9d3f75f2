"""Which files a conversion reads and where each one's output goes: files, folders walked recursively, or a list
of paths on stdin; images and PDFs are recognised by their first bytes, as the service recognises uploads."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

# The signatures the service accepts (dsocr/pipeline/documents.py `sniff` and `is_pdf`), repeated here: the client
# imports nothing of the service's layers, so that it stays light and outside the service's import graph.
IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*", b"BM")
PDF_MAGIC = b"%PDF-"
# Readers accept a PDF's header anywhere in its first KiB (PDF 1.7, annex H), and so does the service.
HEADER_WINDOW = 1024
STDIN = "-"


def document_kind(head: bytes) -> str | None:
    """"image" or "pdf" for a file starting with `head`, None for anything else."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP" or head.startswith(IMAGE_SIGNATURES):
        return "image"  # image signatures first: a PNG may well hold "%PDF-" in its first KiB
    return "pdf" if PDF_MAGIC in head[:HEADER_WINDOW] else None


@dataclass(frozen=True)
class Source:
    """A document to convert: the file, and its place below the root it was found under, which the output
    mirrors."""

    path: Path
    relative: PurePosixPath
    kind: str  # "image" or "pdf"


@dataclass
class Found:
    sources: list[Source] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)  # read, but neither an image nor a PDF
    unreadable: list[tuple[Path, str]] = field(default_factory=list)  # could not be read: (path, why)


def find_documents(paths: Iterable[str], stdin_lines: Iterable[str], exclude: Path | None = None) -> Found:
    """Every image and PDF named by `paths`. A file given by itself lands at the top of the output, a folder's
    files keep their place below it, and a file listed on stdin (`-`) keeps the relative path it is listed
    with (as `find` writes it). Nothing under `exclude` (the output folder) is read."""
    found = Found()
    seen: set[Path] = set()
    excluded = exclude.resolve() if exclude is not None else None
    for argument in paths:
        if argument == STDIN:
            for line in stdin_lines:
                if line.strip():
                    _add_path(found, seen, Path(line.rstrip("\r\n")), excluded, listed=True)
        else:
            _add_path(found, seen, Path(argument), excluded, listed=False)
    return found


def _add_path(found: Found, seen: set[Path], path: Path, excluded: Path | None, listed: bool) -> None:
    if path.is_dir():
        for folder, subfolders, files in os.walk(path, onerror=lambda exc: found.unreadable.append(
                (Path(exc.filename), exc.strerror or str(exc)))):
            folder_path = Path(folder)
            if excluded is not None and folder_path.resolve() == excluded:
                subfolders.clear()
                continue
            subfolders.sort()  # a stable order: the same run twice converts in the same order
            for name in sorted(files):
                file = folder_path / name
                _add_file(found, seen, file, PurePosixPath(file.relative_to(path).as_posix()))
    elif listed and not path.is_absolute() and ".." not in path.parts:
        _add_file(found, seen, path, PurePosixPath(path.as_posix()))
    else:
        _add_file(found, seen, path, PurePosixPath(path.name))


def _add_file(found: Found, seen: set[Path], path: Path, relative: PurePosixPath) -> None:
    try:
        real = path.resolve()
        if real in seen:  # named twice (a file and its folder, or a link): converted once
            return
        with open(path, "rb") as file:
            head = file.read(HEADER_WINDOW)
    except OSError as exc:
        found.unreadable.append((path, exc.strerror or str(exc)))
        return
    seen.add(real)
    kind = document_kind(head)
    if kind is None:
        found.ignored.append(path)
    else:
        found.sources.append(Source(path, relative, kind))


def output_bases(sources: list[Source]) -> tuple[dict[Source, PurePosixPath], dict[Source, Source]]:
    """Each source's output path without its extension: `a/b/report` for `a/b/report.pdf`; `a/b/report.pdf` and
    `a/b/report.png` when both exist, so that neither overwrites the other. A source that would still share an
    output (the same relative path under two roots) gets none: it is returned with the source that has it."""
    stems = Counter(source.relative.with_suffix("") for source in sources)
    bases: dict[Source, PurePosixPath] = {}
    owners: dict[PurePosixPath, Source] = {}
    clashes: dict[Source, Source] = {}
    for source in sources:
        stem = source.relative.with_suffix("")
        base = stem if stems[stem] == 1 else source.relative
        if base in owners:
            clashes[source] = owners[base]
        else:
            owners[base] = source
            bases[source] = base
    return bases, clashes


def with_extension(base: PurePosixPath, extension: str) -> PurePosixPath:
    """`base` plus `extension` (".md"), kept whole: `report.pdf` becomes `report.pdf.md`, not `report.md`."""
    return base.with_name(base.name + extension)
