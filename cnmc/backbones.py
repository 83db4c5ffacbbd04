"""The four backbones of the thesis, as timm models with C-NMC's labels and preprocessing attached."""

from __future__ import annotations

from dataclasses import dataclass

import timm
import torch

from cnmc.cells import CLASS_NAMES
from cnmc.export import weights_tag

# The cells are centred on black; a fixed centre crop of 320 of the 450 px keeps the cell whole and its
# size, a real cue (blasts are larger), and drops empty background before resizing to the input size.
DEFAULT_CROP_PCT = 320 / 450


@dataclass(frozen=True)
class Backbone:
    display_name: str
    timm_name: str
    thesis_name: str
    img_size: int


BACKBONES = [
    Backbone("MobileNetV2", "mobilenetv2_100", "mobilenetv2", 224),
    Backbone("VGG19", "vgg19_bn", "vgg19", 224),
    Backbone("InceptionV3", "inception_v3", "inceptionv3", 299),
    Backbone("ResNet101V2", "resnetv2_101", "resnet101v2", 224),
]


def resolve_backbone(name: str) -> Backbone:
    """Accept the timm name, the thesis's name or the display name, in any case."""
    key = name.lower().removeprefix("timm/")
    for backbone in BACKBONES:
        if key in (backbone.timm_name, backbone.thesis_name, backbone.display_name.lower()):
            return backbone
    known = ", ".join(f"{b.timm_name} ({b.thesis_name})" for b in BACKBONES)
    raise ValueError(f"Unknown backbone {name!r}; choose one of: {known}")


class PretrainedWeightsUnavailable(RuntimeError):
    pass


def create_model(
    name: str,
    *,
    pretrained: bool,
    drop_rate: float = 0.0,
    img_size: int | None = None,
    crop_pct: float = DEFAULT_CROP_PCT,
) -> torch.nn.Module:
    """A 2-class timm model whose ``pretrained_cfg`` carries the preprocessing it will be saved with."""
    backbone = resolve_backbone(name)
    size = img_size or backbone.img_size
    try:
        model = timm.create_model(
            backbone.timm_name,
            pretrained=pretrained,
            num_classes=len(CLASS_NAMES),
            drop_rate=drop_rate,
            pretrained_cfg_overlay={
                "input_size": (3, size, size),
                "crop_pct": crop_pct,
                "crop_mode": "center",
            },
        )
    except (OSError, RuntimeError, ValueError) as error:
        if not pretrained:
            raise
        raise PretrainedWeightsUnavailable(
            f"Could not fetch the ImageNet weights of {backbone.timm_name} from the Hugging Face Hub "
            f"({type(error).__name__}: {error}). Without network access, train from scratch with "
            "--no-pretrained."
        ) from error
    model.pretrained_cfg["label_names"] = list(CLASS_NAMES)
    # Not the ImageNet weights that the default tag names, even when training starts from them.
    model.pretrained_cfg["tag"] = weights_tag(model.pretrained_cfg.get("tag"), pretrained=pretrained)
    return model
