"""The documentation tells the truth it can be checked for: docs/configuration.md's settings tables are the
settings (every variable listed with its real default, and no row for one that does not exist), and every
relative link in README.md and docs/ reaches a file, and a heading where it names one."""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path

import pytest

from settings import Settings, env_name

ROOT = Path(__file__).resolve().parent.parent
CONFIGURATION = ROOT / "docs" / "configuration.md"
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ROW = re.compile(r"^\| `(DEEPSEEK_\w+)` \| `([^`]*)` \|", re.MULTILINE)
# Markdown links and images: [text](target) and ![alt](target); the target ends at the first space or ")".
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)[^)]*\)")


def shown(default: object) -> str:
    if isinstance(default, Enum):
        return str(default.value)
    if isinstance(default, list):
        return ",".join(str(item) for item in default)
    return str(default).replace("\n", "\\n").replace("|", "\\|")


def settings_section() -> str:
    """The "## Settings" section of docs/configuration.md, up to the next section."""
    text = CONFIGURATION.read_text()
    start = text.index("\n## Settings\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def test_every_setting_is_in_the_configuration_page_with_its_default() -> None:
    rows = ROW.findall(settings_section())
    listed = dict(rows)
    assert len(listed) == len(rows), "a variable is listed twice"
    for field, info in Settings.model_fields.items():
        name = env_name(field)
        assert name in listed, f"{name} is missing from docs/configuration.md's settings tables"
        assert listed[name] == shown(info.default), name
    known = {env_name(field) for field in Settings.model_fields}
    assert set(listed) <= known, f"not settings: {sorted(set(listed) - known)}"


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(document: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", document.read_text(), flags=re.MULTILINE | re.DOTALL)
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.MULTILINE):
        base = candidate = slug(heading)
        n = 0
        while candidate in found:  # repeated headings get -1, -2, ...
            n += 1
            candidate = f"{base}-{n}"
        found.add(candidate)
    return found


def links(document: Path) -> list[str]:
    """Links outside code: a fenced block or an inline `span` may show a link's syntax without being one."""
    text = re.sub(r"^```.*?^```", "", document.read_text(), flags=re.MULTILINE | re.DOTALL)
    text = re.sub(r"`[^`\n]*`", "", text)
    return [target for target in LINK.findall(text) if "://" not in target and not target.startswith("mailto:")]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_resolves(document: Path) -> None:
    assert links(document) or document.name != "README.md", "the README links into docs/"
    for target in links(document):
        path, _, anchor = target.partition("#")
        linked = (document.parent / path).resolve() if path else document
        assert linked.exists(), f"{target}: no such file"
        if anchor:
            assert linked.suffix == ".md", f"{target}: an anchor into a file that is not markdown"
            assert anchor in anchors(linked), f"{target}: no such heading in {linked.name}"
