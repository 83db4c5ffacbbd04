"""The range of cell size and stain among a model's training cells, kept in its config.json, and a cell's check
against it.

The models' verdicts follow cell size and stain (the shift protocol, training.shifts), so a cell at another
magnification, or stained or scanned elsewhere (ALL-IDB's cells segmented onto black, say), can get a confident
verdict that means nothing. Each measure below is taken on every training cell; the range kept is the middle
:data:`PERCENTILES` of them, and a cell outside it in any measure gets a warning.

    python -m cnmc.training_range DATA_DIR MODEL_DIR

measures the range on the cells under DATA_DIR (C-NMC's layout; only those of the model's ``train_patients`` when
its config.json lists them) and writes it into MODEL_DIR's config.json under :data:`TRAINING_RANGE_KEY`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from cnmc.cells import cell_mask, parse_cell_name
from cnmc.export import CONFIG_NAME, TRAIN_PATIENTS_KEY, TRAINING_RANGE_KEY

PERCENTILES = (0.5, 99.5)
IMAGE_SUFFIXES = {".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp"}
# What each measure is, for the warnings; all are taken over the cell's pixels (cnmc.cells.cell_mask).
MEASURES = {
    "area": "the share of the image the cell covers",
    "red": "the cell's mean red (0-255)",
    "green": "the cell's mean green (0-255)",
    "blue": "the cell's mean blue (0-255)",
    "contrast": "the spread of the cell's brightness (standard deviation, 0-255)",
}


def measure(image: Image.Image) -> dict[str, float] | None:
    """The measures of one RGB image's cell, or None when it has no cell pixel."""
    pixels = np.asarray(image.convert("RGB"))
    mask = cell_mask(pixels)
    if not mask.any():
        return None
    cell = pixels[mask].astype(np.float64)
    red, green, blue = cell.mean(axis=0)
    return {"area": float(mask.mean()), "red": red, "green": green, "blue": blue, "contrast": cell.mean(1).std()}


def training_range(measures: Iterable[dict[str, float]]) -> dict:
    """The middle :data:`PERCENTILES` of each measure over the training cells, as config.json keeps it."""
    table = {name: [] for name in MEASURES}
    for cell in measures:
        for name in MEASURES:
            table[name].append(cell[name])
    cells = len(table["area"])
    if not cells:
        raise ValueError("No training cells to measure")
    bounds = {name: [round(float(v), 4) for v in np.percentile(values, PERCENTILES)] for name, values in table.items()}
    return {"cells": cells, "percentiles": list(PERCENTILES), **bounds}


def outside(cell: dict[str, float] | None, bounds: dict) -> list[str]:
    """How the measured ``cell`` lies outside ``bounds`` (a model's training range), in words; empty if inside."""
    if cell is None:
        return []
    reasons = []
    for name, what in MEASURES.items():
        low, high = bounds[name]
        if not low <= cell[name] <= high:
            side = "below" if cell[name] < low else "above"
            value, low, high = (_shown(name, v) for v in (cell[name], low, high))
            share = PERCENTILES[1] - PERCENTILES[0]
            reasons.append(f"{what} is {value}, {side} the range of {share:g} % of the training cells ({low}-{high})")
    return reasons


def _shown(name: str, value: float) -> str:
    return f"{value:.0%}" if name == "area" else f"{value:.0f}"


def measure_folder(data_dir: Path, patients: Iterable[str] | None = None) -> dict:
    """The training range of the C-NMC cells under ``data_dir`` (of ``patients`` only, when given)."""
    wanted = None if patients is None else set(patients)
    files = sorted(p for p in Path(data_dir).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    chosen = [p for p in files if wanted is None or _patient(p) in wanted]
    if not chosen:
        raise ValueError(f"No cell images under {data_dir}" + (" of the model's training patients" if wanted else ""))

    def measures():
        for path in chosen:
            with Image.open(path) as image:
                cell = measure(image)
            if cell is not None:
                yield cell

    return training_range(measures())


def _patient(path: Path) -> str | None:
    try:
        return parse_cell_name(path.name)[0]
    except ValueError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path, help="a folder of C-NMC cells (searched recursively)")
    parser.add_argument("model_dir", type=Path, help="a model folder written by cnmc.export (its config.json)")
    args = parser.parse_args(argv)
    config_path = args.model_dir / CONFIG_NAME
    if not config_path.is_file():
        parser.error(f"{config_path} not found: give a model folder written by cnmc.export")
    config = json.loads(config_path.read_text())
    try:
        config[TRAINING_RANGE_KEY] = measure_folder(args.data_dir, config.get(TRAIN_PATIENTS_KEY))
    except ValueError as error:
        parser.error(str(error))
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    print(json.dumps(config[TRAINING_RANGE_KEY], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
