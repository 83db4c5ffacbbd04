"""Atomic file writes: an interrupted run never leaves a half-written file behind."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def replace_dir(tmp: Path, target: Path) -> None:
    """Swap a fully written ``tmp`` folder into ``target``; the old one is only removed afterwards."""
    old = target.with_name(f"{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def existing_dir(target: Path) -> Path | None:
    """``target``, or its ``.old`` twin when a swap was interrupted between the two renames."""
    old = target.with_name(f"{target.name}.old")
    return target if target.is_dir() else old if old.is_dir() else None
