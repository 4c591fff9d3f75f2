"""Reads a text/event-stream body into (event, data) pairs."""

from __future__ import annotations

import json
from typing import Iterable


def parse_events(lines: Iterable[str]) -> list[tuple[str, dict]]:
    events, name, data = [], None, []
    for line in lines:
        if line == "":
            if name is not None or data:
                events.append((name or "message", json.loads("\n".join(data))))
            name, data = None, []
        elif line.startswith("event:"):
            name = line[len("event:"):].strip()
        elif line.startswith("data:"):
            data.append(line[len("data:"):].strip())
    return events
