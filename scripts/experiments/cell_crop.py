"""Experiment: a prepared copy in which every cell is cropped to its own bounding box, hiding its size.

    python -m scripts.experiments.cell_crop prepared prepared-cellcrop
    python -m training.train ... --data-dir prepared-cellcrop --crop-pct 1.0

The shipped recipe's score is mostly the cell's size (results/size-baseline/). Here each image becomes a square
around the cell (10 % margin, black padding) resized back to the copy's size, so every cell fills the field
and a model can only learn shape, texture and colour. A model trained on this copy expects cropped cells, which
its saved preprocessing does not do, so it is for measurement, not for the app.
"""

import sys

import numpy as np
from PIL import Image

from cnmc.cells import cell_mask
from scripts.experiments.prepared_copy import write_mapped_copy

MARGIN = 1.1


def crop_to_cell(image: Image.Image) -> Image.Image:
    image = image.convert("RGB")
    ys, xs = np.nonzero(cell_mask(np.asarray(image)))
    if len(xs) == 0:
        return image
    cx, cy = (xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2
    half = MARGIN * max(xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()) / 2
    box = tuple(round(v) for v in (cx - half, cy - half, cx + half, cy + half))
    return image.crop(box).resize(image.size, Image.Resampling.BICUBIC)  # outside the image crops to black


def main(source: str, target: str) -> None:
    write_mapped_copy(source, target, crop_to_cell, {"cell_crop_margin": MARGIN})


if __name__ == "__main__":
    main(*sys.argv[1:])
