"""Does an image look like a C-NMC cell? A deliberately simple check, to warn before trusting a prediction.

C-NMC images are single segmented cells centred on pure black: the border is black, the cell covers a
modest part of the field, and it sits near the middle. The check measures exactly that on the RGB image:

- ``border_dark``: the share of pixels in the outer 5 % frame that are near black (max channel <= 10);
- ``foreground``: the share of the whole image that is not near black;
- ``offset``: how far the foreground's centroid is from the centre, as a fraction of the image size.

Real cells (all 46 fixtures) give border_dark = 1.0, foreground 0.09-0.25 and offset < 0.02; all 7,108 local
cells cover 4-25 % of their image. Ordinary photos fail the border test at once. The thresholds leave margins
both ways; anything outside them gets a warning. The foreground range is kept near the real cells' because the
models' verdicts largely follow cell size (results/size-baseline/): a cell at another magnification misleads them.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from PIL import Image

from cnmc.cells import cell_mask

MIN_BORDER_DARK = 0.9
FOREGROUND_RANGE = (0.03, 0.35)
MAX_OFFSET = 0.15
_SIZE = 128  # enough resolution for shares and a centroid, and fast


class Lookalike(NamedTuple):
    looks_like_cell: bool
    reasons: list[str]  # why not, in words; empty when it looks like a cell


def check_lookalike(image: Image.Image) -> Lookalike:
    foreground = cell_mask(np.asarray(image.convert("RGB").resize((_SIZE, _SIZE), Image.Resampling.BOX)))
    frame = max(1, _SIZE // 20)
    border = np.ones_like(foreground)
    border[frame:-frame, frame:-frame] = False
    reasons = []
    border_dark = 1 - foreground[border].mean()
    if border_dark < MIN_BORDER_DARK:
        reasons.append(f"the background is not black ({border_dark:.0%} of the border is dark, expected ≥ 90%)")
    share = foreground.mean()
    if not FOREGROUND_RANGE[0] <= share <= FOREGROUND_RANGE[1]:
        reasons.append(
            f"the subject covers {share:.0%} of the image, where C-NMC cells cover 4-25%; the models' verdicts "
            "follow cell size, so a cell at another magnification misleads them"
        )
    if share > 0:
        ys, xs = np.nonzero(foreground)
        offset = np.hypot(ys.mean() / _SIZE - 0.5, xs.mean() / _SIZE - 0.5)
        if offset > MAX_OFFSET:
            reasons.append(f"the subject is off-centre by {offset:.0%} of the image size")
    return Lookalike(not reasons, reasons)
