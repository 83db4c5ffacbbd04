"""Every benchmark ends the same way: its numbers as indented JSON in a file under benchmarks/results/."""

from __future__ import annotations

import json
from pathlib import Path


def save(report: dict, path: str | Path, *, show: bool = True) -> None:
    """Write ``report`` to ``path`` (creating its folder), and print it unless the benchmark printed its own lines."""
    text = json.dumps(report, indent=2)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text + "\n")
    if show:
        print(text)
