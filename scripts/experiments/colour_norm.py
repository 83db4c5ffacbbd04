"""Experiment: a prepared copy in which every cell's colour is standardised, hiding its donor's stain.

    python -m scripts.experiments.colour_norm prepared prepared-colournorm
    python -m training.train ... --data-dir prepared-colournorm --cv-split splits/cnmc_cv3_seed0.json --cv-fold K

Colour carries both the cells' signal and each donor's stain (results/cpu-mobilenetv2-nocolour-cv3/). Here every
cell's pixels (those above the black background) get, channel by channel, the mean and spread of the typical cell:
the median over all cells of each cell's own means and standard deviations (six numbers, no labels). What is left
is each cell's colour pattern, not its overall tint or brightness. One image at a time, so the app could do the
same to a single cell; a model trained on the copy expects standardised cells, which its saved preprocessing does
not do, so it is for measurement, not for the app.
"""

import sys
from functools import partial

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from cnmc.cells import BACKGROUND_LEVEL, cell_mask
from scripts.experiments.prepared_copy import write_mapped_copy
from training.data import load_prepared


def cell_pixels(image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """The image as float RGB, and the mask of its cell (everything brighter than the background)."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    return pixels, cell_mask(pixels)


def typical_cell(source: str) -> tuple[np.ndarray, np.ndarray]:
    """The median over every cell of its per-channel mean and standard deviation."""
    stats = []
    for split in load_prepared(source).values():
        for image in tqdm(split["image"], desc="Measuring cell colours"):
            pixels, cell = cell_pixels(image)
            if cell.any():
                stats.append(np.concatenate([pixels[cell].mean(0), pixels[cell].std(0)]))
    median = np.median(np.stack(stats), axis=0)
    return median[:3], median[3:]


def standardise(image: Image.Image, mean: np.ndarray, std: np.ndarray) -> Image.Image:
    pixels, cell = cell_pixels(image)
    if not cell.any():
        return image.convert("RGB")
    values = pixels[cell]
    standardised = (values - values.mean(0)) / (values.std(0) + 1e-6) * std + mean
    # Kept above the background level, so the cell's outline (and area) stays what it was.
    pixels[cell] = np.clip(standardised, BACKGROUND_LEVEL + 1, 255)
    return Image.fromarray(pixels.round().astype(np.uint8))


def main(source: str, target: str) -> None:
    mean, std = typical_cell(source)
    print(f"typical cell: mean {mean.round(1).tolist()}, std {std.round(1).tolist()}")
    note = {"colour_standardised_to": {"mean": mean.tolist(), "std": std.tolist()}}
    write_mapped_copy(source, target, partial(standardise, mean=mean, std=std), note)


if __name__ == "__main__":
    main(*sys.argv[1:])
