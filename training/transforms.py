"""Image preprocessing, defined once from the model's own timm data config.

The eval transform is timm's (``resolve_data_config`` + ``create_transform``) built from the
``pretrained_cfg`` saved with the model, so training, evaluation and the app can never disagree.
Training decodes on the CPU and augments whole batches on its device (:class:`BatchAugment`), with the
same geometry and normalisation taken from the same config.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image
from timm.data import create_transform, resolve_data_config
from timm.data.mixup import mixup_target
from torchvision.transforms.functional import pil_to_tensor


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


def data_config(model: torch.nn.Module) -> dict:
    """The preprocessing recorded in the model's ``pretrained_cfg``."""
    return resolve_data_config(model=model)


def eval_transform(model: torch.nn.Module) -> Callable:
    return create_transform(**data_config(model), is_training=False)


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
        # Constants live on the device, and the inverse is taken once: copying a tensor to the GPU, or
        # torch.linalg.inv there, would make the host wait for the GPU on every batch.
        to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
        self.register_buffer("to_yiq", to_yiq, persistent=False)
        self.register_buffer("to_rgb", torch.linalg.inv(to_yiq.double()).float(), persistent=False)
        self.register_buffer("luma", to_yiq[0], persistent=False)  # grey = luma . rgb, the weights ColorJitter uses

    def _uniform(self, n: int, low: float, high: float) -> torch.Tensor:
        return torch.empty(n, device=self.mean.device).uniform_(low, high)

    def _chance(self, n: int, p: float) -> torch.Tensor:
        return torch.rand(n, device=self.mean.device) < p

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        a, n = self.augmentation, images.shape[0]
        # The loader's batches come channels-last (training.evaluate.stack_images); the ops below run faster on
        # contiguous ones on a CPU, and on a GPU the copy costs next to nothing. Pixels stay 0-255 until the colour
        # map, which takes the division along: one pass fewer over the batch.
        x = images.contiguous().float()
        if self.resize < ANTIALIAS_BELOW * x.shape[-1]:
            x = F.interpolate(x, size=(self.resize, self.resize), mode=self.mode, antialias=True).clamp_(0, 255)
        # Output coordinates -> input coordinates: centre crop, zoom, rotation and flips in one affine map.
        scale = torch.full((n,), self.size / self.resize, device=x.device)
        if (a.zoom or a.zoom_out) and a.zoom_prob:
            zoom = self._uniform(n, 1.0 - a.zoom_out, 1.0 + a.zoom)
            scale = torch.where(self._chance(n, a.zoom_prob), scale / zoom, scale)
        angle = self._uniform(n, -a.rotation, a.rotation).deg2rad()
        flip_x = torch.where(self._chance(n, a.hflip), -1.0, 1.0)
        flip_y = torch.where(self._chance(n, a.vflip), -1.0, 1.0)
        cos, sin, zero = angle.cos() * scale, angle.sin() * scale, torch.zeros(n, device=x.device)
        theta = torch.stack(
            [torch.stack([cos * flip_x, -sin * flip_y, zero], -1), torch.stack([sin * flip_x, cos * flip_y, zero], -1)],
            1,
        )
        grid = F.affine_grid(theta, [n, 3, self.size, self.size], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        matrix, offset = self._colour_map(x)
        x = torch.baddbmm(offset, matrix, x.flatten(2)).view_as(x)
        return x.clamp_(0, 1).sub_(self.mean).div_(self.std)

    def _colour_map(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per image, the (3, 3) matrix and (3, 1) offset that scale 0-255 pixels to 0-1 and apply the colour jitter.

        Brightness, contrast and saturation, as torchvision's ColorJitter defines them and in that order, and the
        hue rotation in YIQ are each linear in the pixels once the image's mean grey is known, so together they are
        one affine map: one pass over the batch on the device instead of a dozen.
        """
        a, n = self.augmentation, x.shape[0]
        matrix = torch.eye(3, device=x.device).expand(n, 3, 3) / 255
        offset = torch.zeros(n, 3, 1, device=x.device)
        if a.color_jitter:
            j = a.color_jitter
            brightness, contrast, saturation = (self._uniform(n, 1 - j, 1 + j).view(n, 1, 1) for _ in range(3))
            mean_grey = brightness * (x.mean((-1, -2)) @ self.luma).view(n, 1, 1) / 255
            # Contrast blends with the mean grey; saturation with each pixel's grey, whose weights sum to 1.
            matrix = matrix * brightness * contrast
            offset = (1 - contrast) * mean_grey.expand(n, 3, 1)
            grey = self.luma.expand(n, 3, 3)
            desaturate = saturation * torch.eye(3, device=x.device) + (1 - saturation) * grey
            matrix, offset = desaturate @ matrix, desaturate @ offset
        if a.hue:
            rotate = _hue_matrix(self._uniform(n, -a.hue, a.hue) * 2 * math.pi, self.to_yiq, self.to_rgb)
            matrix, offset = rotate @ matrix, rotate @ offset
        return matrix, offset


def _hue_matrix(angle: torch.Tensor, to_yiq: torch.Tensor, to_rgb: torch.Tensor) -> torch.Tensor:
    """(n, 3, 3) RGB maps that rotate the chroma plane of YIQ: a hue shift without an HSV round trip."""
    cos, sin, one, zero = angle.cos(), angle.sin(), torch.ones_like(angle), torch.zeros_like(angle)
    rotation = torch.stack(
        [torch.stack([one, zero, zero], -1), torch.stack([zero, cos, -sin], -1), torch.stack([zero, sin, cos], -1)], 1
    )
    return to_rgb @ rotation @ to_yiq


def mix_batch(
    x: torch.Tensor, labels: torch.Tensor, alpha: float, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup: every image blended with its mirror in the batch, the one-hot targets by the same weight.

    The weight is drawn from Beta(alpha, alpha) once a batch, as timm's ``Mixup`` draws it; that class itself
    refuses odd batches, and an epoch's last batch can be odd (its middle image then mixes with itself).
    """
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    return x * lam + x.flip(0) * (1 - lam), mixup_target(labels, num_classes, lam)


def flip_averaged(predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Test-time augmentation: ``predict`` averaged over the four flips of the (n, c, h, w) batch ``x``.

    Cells have no orientation, so flips are equally valid inputs; they go through ``predict`` as one batch.
    """
    out = predict(torch.cat([x, x.flip(-1), x.flip(-2), x.flip(-1, -2)]))
    return out.view(4, len(x), *out.shape[1:]).mean(0)


class FixedSizeTensor:
    """The loader's only per-image work for training: decode to uint8 at one common size, so batches stack."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if image.size != (self.size, self.size):
            image = image.resize((self.size, self.size), Image.Resampling.BICUBIC)
        return pil_to_tensor(image)


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
