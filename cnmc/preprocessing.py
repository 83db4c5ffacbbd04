"""Preprocessing, defined once and saved with the model, so training, evaluation and the app can never disagree.

The eval transform is timm's (``resolve_data_config`` + ``create_transform``) built from the ``pretrained_cfg`` saved
with the model. A model may also normalise each cell before that (:class:`CellNormalization`, saved in its
config.json as ``cell_normalization``), which timm's config can't express; :func:`eval_transform` applies it first.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image, ImageOps
from timm.data import create_transform, resolve_data_config
from torchvision.transforms import Compose

from cnmc.cells import cell_mask


@dataclass(frozen=True)
class CellNormalization:
    """Each cell brought to one size, the middle of the frame and one stain intensity, before the model sees it.

    Cell size and stain intensity belong to the acquisition batch, not to the disease (training.shifts), while
    the N:C ratio, the nuclear outline and the chromatin don't change with either. So:

    1. each RGB channel is scaled so that its mean inside the cell (pixels whose brightest channel is above the
       black background, ``cnmc.cells.cell_mask``) is ``channel_means``; the background is left as it is;
    2. the image is resampled (bicubic) about the cell's centroid so that the cell covers ``area`` of the frame,
       centred, on black padding. The scale is kept within [1/``max_zoom``, ``max_zoom``], so a speck isn't blown up.

    An image without any cell pixel is returned unchanged. Saved in the model's config.json, so training,
    evaluation, the app and ``cnmc.load`` apply the same steps.
    """

    # The training cells (fold_0 + fold_1, 1,500 drawn) cover 0.08-0.25 of the frame, median 0.16; 0.2 gives the
    # chromatin more of the input's pixels while the largest cells still fit the centre crop.
    area: float = 0.2
    # Their mean R, G, B inside the cell (0-255).
    channel_means: tuple[float, float, float] = (68.0, 29.4, 78.7)
    max_zoom: float = 2.0

    def __call__(self, image: Image.Image) -> Image.Image:
        rgb = np.asarray(image.convert("RGB"))
        inside = cell_mask(rgb)
        if not inside.any():
            return image.convert("RGB")
        cell = rgb[inside].astype(np.float32)
        gains = np.asarray(self.channel_means, dtype=np.float32) / np.maximum(cell.mean(0), 1.0)
        stained = rgb.copy()
        stained[inside] = np.clip(np.rint(cell * gains), 0, 255).astype(np.uint8)
        ys, xs = np.nonzero(inside)
        zoom = float(np.clip(np.sqrt(self.area / inside.mean()), 1 / self.max_zoom, self.max_zoom))
        height, width = inside.shape
        # The source box centred on the cell's centroid that fills the frame; PIL's resize filters it as a resize
        # would (antialiased when shrinking). Black is padded where the box leaves the image.
        cx, cy, half_w, half_h = xs.mean() + 0.5, ys.mean() + 0.5, width / 2 / zoom, height / 2 / zoom
        box = (cx - half_w, cy - half_h, cx + half_w, cy + half_h)
        pad = math.ceil(max(0.0, -box[0], -box[1], box[2] - width, box[3] - height))
        frame = ImageOps.expand(Image.fromarray(stained), pad) if pad else Image.fromarray(stained)
        return frame.resize((width, height), Image.Resampling.BICUBIC, box=tuple(b + pad for b in box))

    def to_config(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_config(cls, config: dict | None) -> CellNormalization | None:
        """From a config.json's ``cell_normalization`` entry; None when the model has none."""
        if not config:
            return None
        return cls(**{**config, "channel_means": tuple(config["channel_means"])})


def data_config(model: torch.nn.Module) -> dict:
    """The preprocessing recorded in the model's ``pretrained_cfg``."""
    return resolve_data_config(model=model)


def eval_transform(model: torch.nn.Module, cell_normalization: CellNormalization | None = None) -> Callable:
    """The model's preprocessing: its cell normalisation, if it has one, then timm's eval transform."""
    transform = create_transform(**data_config(model), is_training=False)
    return transform if cell_normalization is None else Compose([cell_normalization, transform])


def flip_averaged(predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Test-time augmentation: ``predict`` averaged over the four flips of the (n, c, h, w) batch ``x``.

    Cells have no orientation, so flips are equally valid inputs; they go through ``predict`` as one batch.
    """
    out = predict(torch.cat([x, x.flip(-1), x.flip(-2), x.flip(-1, -2)]))
    return out.view(4, len(x), *out.shape[1:]).mean(0)
