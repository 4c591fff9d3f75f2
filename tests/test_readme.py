"""The README's settings table is the settings: every variable is listed with its real default."""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path

from settings import Settings, env_name

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def shown(default: object) -> str:
    if isinstance(default, Enum):
        return str(default.value)
    if isinstance(default, list):
        return ",".join(default)
    return str(default).replace("\n", "\\n").replace("|", "\\|")


def test_every_setting_is_in_the_readme_with_its_default() -> None:
    for field, info in Settings.model_fields.items():
        row = re.search(r"^\| `" + env_name(field) + r"` \| `([^`]*)` \|", README, re.MULTILINE)
        assert row, f"{env_name(field)} is missing from the README's settings table"
        assert row.group(1) == shown(info.default), env_name(field)
