"""Training's image pipeline: decoding, and augmentation in front of the model's own preprocessing.

The preprocessing itself (``cnmc.preprocessing``) is defined once and saved with the model. Training decodes on the
CPU and augments whole batches on its device (:class:`BatchAugment`), with the same geometry and normalisation
taken from the same config.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data.mixup import cutmix_bbox_and_lam, mixup_target
from torchvision.transforms import Compose
from torchvision.transforms.functional import pil_to_tensor

from cnmc.preprocessing import CellNormalization, data_config


@dataclass(frozen=True)
class Augmentation:
    """Random augmentations applied to the full cell image before the model's own resize and crop."""

    hflip: float = 0.0  # probability
    vflip: float = 0.0  # probability
    rotation: float = 0.0  # max degrees either way; cells have no natural orientation
    zoom: float = 0.0  # max centre-crop zoom-in, e.g. 0.2 = up to 1.2x
    zoom_out: float = 0.0  # max zoom-out, e.g. 0.2 = down to 0.8x (it did not hide size: results/*-scale/)
    zoom_prob: float = 0.0
    color_jitter: float = 0.0  # brightness/contrast/saturation strength: a cheap stain variation
    hue: float = 0.0


# BatchAugment resizes separately, with antialiasing, only when the field shrinks below this fraction.
ANTIALIAS_BELOW = 0.9


class BatchAugment(torch.nn.Module):
    """Train-time augmentation of whole uint8 batches on the training device (GPU or CPU).

    Per-image PIL augmentation costs ~6 ms of CPU per cell, which starves a GPU; here the loader only
    decodes, and one batched resample does rotation, flips, zoom and the model's own centre crop. The
    geometry follows the model's data config exactly as timm's eval transform does: resize the field to
    ``floor(size / crop_pct)``, keep the centre ``size`` pixels, then normalise with its mean and std.
    The resize is part of the same affine map, unless it shrinks the field below :data:`ANTIALIAS_BELOW` of
    its decoded size (a 128 px model): only then is it done first, antialiased as PIL's resize is. At 224
    and 299 px the single resample matches the eval transform as closely as two did, and the best preset's
    whole augmentation costs about 30 % less (measured on a CPU).
    """

    def __init__(self, model: torch.nn.Module, augmentation: Augmentation):
        super().__init__()
        config = data_config(model)
        self.size = config["input_size"][-1]
        self.resize = math.floor(self.size / config["crop_pct"])
        self.mode = "bicubic" if config["interpolation"] == "bicubic" else "bilinear"
        self.augmentation = augmentation
        self.register_buffer("mean", torch.tensor(config["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config["std"]).view(1, 3, 1, 1), persistent=False)
        to_yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
        self.to_yiq, self.to_rgb = to_yiq, np.linalg.inv(to_yiq)
        self.register_buffer("luma", torch.tensor(to_yiq[0], dtype=torch.float32), persistent=False)  # grey = luma.rgb

    def _uniforms(self, n: int) -> np.ndarray:
        """(n, 9) uniforms in [0, 1), one column per random choice, from torch's CPU generator (seeded runs repeat)."""
        return torch.rand(n, 9, dtype=torch.float64).numpy()

    def _draw(self, n: int) -> np.ndarray:
        """Every image's random maps, built on the CPU and packed flat for one copy to the device.

        The (2, 3) affine map of output to input coordinates (centre crop, zoom, rotation, flips), the (3, 3) colour
        matrix that also scales 0-255 to 0-1, and the (3,) offset per unit of the image's mean grey (contrast blends
        with it, and only the device knows it). Built here with numpy, they cost the host a few microseconds; as
        ~40 small kernels on the device they cost it over a millisecond a batch, which a small model's step, bound
        by the host launching its kernels, pays in full.
        """
        a, u = self.augmentation, self._uniforms(n)

        def between(column: int, low: float, high: float) -> np.ndarray:
            return low + (high - low) * u[:, column]

        scale = np.full(n, self.size / self.resize)
        if (a.zoom or a.zoom_out) and a.zoom_prob:
            scale = np.where(u[:, 1] < a.zoom_prob, scale / between(0, 1.0 - a.zoom_out, 1.0 + a.zoom), scale)
        angle = np.deg2rad(between(2, -a.rotation, a.rotation))
        flip_x, flip_y = np.where(u[:, 3] < a.hflip, -1.0, 1.0), np.where(u[:, 4] < a.vflip, -1.0, 1.0)
        cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
        theta = np.zeros((n, 2, 3))
        theta[:, 0, :2] = np.stack([cos * flip_x, -sin * flip_y], -1)
        theta[:, 1, :2] = np.stack([sin * flip_x, cos * flip_y], -1)
        matrix, per_grey = np.tile(np.eye(3) / 255, (n, 1, 1)), np.zeros((n, 3, 1))
        if a.color_jitter:  # brightness, contrast and saturation, as torchvision's ColorJitter defines them
            brightness, contrast, saturation = (between(c, 1 - a.color_jitter, 1 + a.color_jitter) for c in (5, 6, 7))
            # Saturation blends each pixel with its grey; the grey's weights sum to 1, so it keeps a grey offset.
            desaturate = saturation[:, None, None] * np.eye(3) + (1 - saturation)[:, None, None] * self.to_yiq[0]
            matrix = desaturate @ (matrix * (brightness * contrast)[:, None, None])
            per_grey = np.ones((n, 3, 1)) * ((1 - contrast) * brightness / 255)[:, None, None]
        if a.hue:  # rotate the chroma plane of YIQ: a hue shift without an HSV round trip
            turn = between(8, -a.hue, a.hue) * 2 * math.pi
            rotation = np.zeros((n, 3, 3))
            rotation[:, 0, 0] = 1
            rotation[:, 1:, 1:] = np.stack(
                [np.stack([np.cos(turn), -np.sin(turn)], -1), np.stack([np.sin(turn), np.cos(turn)], -1)], 1
            )
            rotate = self.to_rgb @ rotation @ self.to_yiq
            matrix, per_grey = rotate @ matrix, rotate @ per_grey
        return np.concatenate([theta.ravel(), matrix.ravel(), per_grey.ravel()])

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n, device = images.shape[0], images.device
        params = torch.from_numpy(self._draw(n)).float()
        if device.type == "cuda":  # from pinned memory the copy is queued; from pageable memory the host would wait
            params = params.pin_memory().to(device, non_blocking=True)
        theta, matrix, per_grey = params[: 6 * n].view(n, 2, 3), params[6 * n : 15 * n].view(n, 3, 3), params[15 * n :]
        # The loader's batches come channels-last (training.evaluate.stack_images); the ops below run faster on
        # contiguous ones on a CPU, and on a GPU the copy costs next to nothing. Pixels stay 0-255 until the colour
        # matrix, which takes the division along: one pass fewer over the batch.
        x = images.contiguous().float()
        if self.resize < ANTIALIAS_BELOW * x.shape[-1]:
            x = F.interpolate(x, size=(self.resize, self.resize), mode=self.mode, antialias=True).clamp_(0, 255)
        grid = F.affine_grid(theta, [n, 3, self.size, self.size], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False).flatten(2)
        if self.augmentation.color_jitter:
            grey = x.mean(-1) @ self.luma
            x = torch.baddbmm(per_grey.view(n, 3, 1) * grey.view(n, 1, 1), matrix, x)
        else:
            x = torch.bmm(matrix, x)
        return x.view(n, 3, self.size, self.size).clamp_(0, 1).sub_(self.mean).div_(self.std)


def mix_batch(
    x: torch.Tensor, labels: torch.Tensor, num_classes: int, mixup: float = 0.0, cutmix: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or CutMix of every image with its mirror in the batch, the one-hot targets by the same weight.

    The weight is drawn from Beta(alpha, alpha) once a batch, and with both on each batch picks one of the two
    with equal odds, as timm's ``Mixup`` does; that class itself refuses odd batches, and an epoch's last batch
    can be odd (its middle image then mixes with itself). CutMix's weight is the area its box really kept.
    """
    use_cutmix = cutmix > 0 and (mixup <= 0 or bool(torch.rand(()) < 0.5))
    alpha = cutmix if use_cutmix else mixup
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    if use_cutmix:
        (top, bottom, left, right), lam = cutmix_bbox_and_lam(x.shape, lam)
        mixed = x.clone()
        mixed[..., top:bottom, left:right] = x.flip(0)[..., top:bottom, left:right]
    else:
        mixed = x * lam + x.flip(0) * (1 - lam)
    return mixed, mixup_target(labels, num_classes, lam)


class FixedSizeTensor:
    """The loader's only per-image work for training: decode to uint8 at one common size, so batches stack."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if image.size != (self.size, self.size):
            image = image.resize((self.size, self.size), Image.Resampling.BICUBIC)
        return pil_to_tensor(image)


def decoder(size: int, cell_normalization: CellNormalization | None = None) -> Callable:
    """Training's per-image work on the CPU: the model's cell normalisation, if any, then :class:`FixedSizeTensor`."""
    tensor = FixedSizeTensor(size)
    return tensor if cell_normalization is None else Compose([cell_normalization, tensor])


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
