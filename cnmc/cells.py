"""C-NMC's cells: the class names, the file-name convention that carries patient and label, and the cell mask."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

CLASS_NAMES = ["hem", "all"]
UNKNOWN_LABEL = -1
# Cells are segmented onto pure black; a pixel whose brightest channel is above this is cell, not background
# (the margin absorbs the noise of lossy re-encoding).
BACKGROUND_LEVEL = 10
_CELL_NAME = re.compile(r"^UID_(?P<patient>[^_]+)_.+_(?P<label>all|hem)$", re.IGNORECASE)


def cell_mask(pixels: np.ndarray) -> np.ndarray:
    """Where an RGB image (0-255, height x width x 3) shows its cell: the brightest channel is above the background."""
    # Channel by channel: numpy's max over a last axis of 3 is ten times slower, and this runs per image in loaders.
    return np.maximum(np.maximum(pixels[..., 0], pixels[..., 1]), pixels[..., 2]) > BACKGROUND_LEVEL


def parse_cell_name(name: str) -> tuple[str, int]:
    """``UID_H10_3_1_hem.bmp`` -> ``("H10", 0)``. The suffix is the authoritative label."""
    match = _CELL_NAME.match(Path(name).stem)
    if not match:
        raise ValueError(f"name does not follow UID_<patient>_<image>_<cell>_<all|hem>: {name}")
    return match["patient"], CLASS_NAMES.index(match["label"].lower())
