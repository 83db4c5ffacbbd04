"""Grad-CAM with the ``grad-cam`` package, on each model's fp32 weights, read inside the cell.

The map is taken at the model's last stride-16 feature map (timm's ``feature_info``), not at its last one: at
128 px the last one is a 4x4 grid whose peak sits at the same place below the cell for most cells and for a
textureless disc, and stays there when the cell is flipped (docs/results.md, "Reading Grad-CAM"). Averaged over the
four flips of the cell, as the served probability is, and kept to the cell (``cnmc.cells.cell_mask``), it shows
where inside the cell the model found what raised P(ALL); the share of the map that fell on the background is
reported beside it, not hidden.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from cnmc.cells import cell_mask
from cnmc.load import LoadedModel
from cnmc.preprocessing import data_config

# An 8x8 grid at 128 px: fine enough to point inside a cell, deep enough to be about the class (docs/results.md).
TARGET_REDUCTION = 16
# Shown at this many times the model's input, so the browser doesn't blur a 128 px view into a smear.
DISPLAY_SCALE = 3


@dataclass
class Explanation:
    view: np.ndarray  # the model's input as RGB uint8 (after its own resize, crop and any cell normalisation)
    heat: np.ndarray  # the map over ``view``, 0-1, before it is kept to the cell
    mask: np.ndarray  # where ``view`` shows the cell

    @property
    def outside_share(self) -> float:
        """The share of the map's weight on the black background (0 when the map is empty)."""
        total = self.heat.sum()
        return float(self.heat[~self.mask].sum() / total) if total > 0 else 0.0

    def picture(self) -> np.ndarray:
        """The cell as the model saw it, beside the map kept to the cell, enlarged for the screen (RGB uint8)."""
        inside = np.where(self.mask, self.heat, 0.0)
        view = self.view.astype(np.float32) / 255
        painted = show_cam_on_image(view, inside / inside.max(), use_rgb=True) if inside.max() > 0 else self.view
        shown = np.where(self.mask[..., None], painted, self.view)
        pair = np.concatenate([self.view, shown], axis=1)
        height, width = pair.shape[:2]
        size = (width * DISPLAY_SCALE, height * DISPLAY_SCALE)
        return np.asarray(Image.fromarray(pair).resize(size, Image.Resampling.BICUBIC))


def target_layer(model: torch.nn.Module, reduction: int = TARGET_REDUCTION) -> str:
    """The name of the last feature map at ``reduction`` times below the input (or the nearest finer one)."""
    stages = [f for f in getattr(model, "feature_info", []) if f["reduction"] <= reduction]
    if not stages:
        raise ValueError(f"{model.pretrained_cfg['architecture']} reports no feature map to take Grad-CAM at")
    return stages[-1]["module"]


def explain(
    loaded: LoadedModel, image: Image.Image, class_index: int, *, layer: str | None = None, flips: bool = True
) -> Explanation:
    """Grad-CAM of ``class_index`` over the model's input view; with ``flips``, averaged over the view's 4 flips,
    each map flipped back, as :func:`cnmc.preprocessing.flip_averaged` averages the probability."""
    x = loaded.transform(image).unsqueeze(0)
    views = torch.cat([x, x.flip(-1), x.flip(-2), x.flip(-1, -2)]) if flips else x
    module = loaded.model.get_submodule(layer or target_layer(loaded.model))
    with GradCAM(model=loaded.model, target_layers=[module]) as cam:
        maps = torch.from_numpy(cam(input_tensor=views, targets=[ClassifierOutputTarget(class_index)] * len(views)))
    if flips:
        maps = torch.stack([maps[0], maps[1].flip(-1), maps[2].flip(-2), maps[3].flip(-1, -2)])
    view = np.rint(_unnormalise(x[0], loaded.model) * 255).astype(np.uint8)
    return Explanation(view, maps.mean(0).numpy(), cell_mask(view))


def _unnormalise(x: torch.Tensor, model: torch.nn.Module) -> np.ndarray:
    """Undo the eval transform's normalisation, to show exactly the pixels the model saw."""
    config = data_config(model)
    mean, std = torch.tensor(config["mean"]).view(3, 1, 1), torch.tensor(config["std"]).view(3, 1, 1)
    return (x * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
