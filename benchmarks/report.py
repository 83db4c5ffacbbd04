"""Every benchmark ends the same way: its numbers as indented JSON in a file under benchmarks/results/."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def percentiles(times_ms: Sequence[float], digits: int = 1) -> dict:
    """The p50 and p95 of timings in milliseconds, as every benchmark reports them."""
    return {f"p{q}_ms": round(float(np.percentile(times_ms, q)), digits) for q in (50, 95)}


def save(report: dict, path: str | Path, *, show: bool = True) -> None:
    """Write ``report`` to ``path`` (creating its folder), and print it unless the benchmark printed its own lines."""
    text = json.dumps(report, indent=2)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text + "\n")
    if show:
        print(text)
