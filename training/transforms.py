"""Image preprocessing, defined once from the model's own timm data config.

The eval transform is timm's (``resolve_data_config`` + ``create_transform``) built from the
``pretrained_cfg`` saved with the model, so training, evaluation and the app can never disagree.
The train transform is a few random augmentations in front of that same eval transform.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from timm.data import create_transform, resolve_data_config
from torchvision import transforms as T


@dataclass(frozen=True)
class Augmentation:
    """Random augmentations applied to the full cell image before the model's own resize and crop."""

    hflip: float = 0.0  # probability
    vflip: float = 0.0  # probability
    rotation: float = 0.0  # max degrees either way; cells have no natural orientation
    zoom: float = 0.0  # max centre-crop zoom-in, e.g. 0.2 = up to 1.2x
    zoom_prob: float = 0.0
    color_jitter: float = 0.0  # brightness/contrast/saturation strength: a cheap stain variation
    hue: float = 0.0


def data_config(model: torch.nn.Module) -> dict:
    """The preprocessing recorded in the model's ``pretrained_cfg``."""
    return resolve_data_config(model=model)


def eval_transform(model: torch.nn.Module) -> Callable:
    return create_transform(**data_config(model), is_training=False)


def train_transform(model: torch.nn.Module, augmentation: Augmentation) -> Callable:
    ops: list = []
    a = augmentation
    if a.hflip:
        ops.append(T.RandomHorizontalFlip(a.hflip))
    if a.vflip:
        ops.append(T.RandomVerticalFlip(a.vflip))
    if a.rotation:
        ops.append(T.RandomRotation(a.rotation, interpolation=T.InterpolationMode.BILINEAR, fill=0))
    if a.zoom and a.zoom_prob:
        # An affine scale > 1 about the centre is a centre crop resized back: the thesis's zoom.
        ops.append(T.RandomApply([T.RandomAffine(0, scale=(1.0, 1.0 + a.zoom))], p=a.zoom_prob))
    if a.color_jitter or a.hue:
        ops.append(T.ColorJitter(a.color_jitter, a.color_jitter, a.color_jitter, a.hue))
    return T.Compose([*ops, eval_transform(model)])


def pixel_batch(transform: Callable) -> Callable[[dict], dict]:
    """Wrap an image transform for ``Dataset.with_transform``: batches of images -> ``pixel_values``."""

    def apply(batch: dict) -> dict:
        out = {"pixel_values": [transform(image.convert("RGB")) for image in batch["image"]]}
        if "label" in batch:
            out["labels"] = batch["label"]
        if "index" in batch:  # added by the loaders, to map gathered predictions back to rows
            out["index"] = batch["index"]
        return out

    return apply
