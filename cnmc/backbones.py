"""The four backbones of the thesis, as timm models with C-NMC's labels and preprocessing attached."""

from __future__ import annotations

from dataclasses import dataclass, field

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
    # Construction arguments beyond timm's defaults; timm records them in config.json's model_args, so every
    # loader (timm's local-dir:/hf-hub:, transformers) rebuilds the same architecture.
    model_args: dict = field(default_factory=dict)
    # The layers that model_args reshape, started afresh when fine-tuning from ImageNet weights.
    reshaped_layers: tuple[str, ...] = ()
    # What model_args change from the thesis's architecture, and why, as the model card says it.
    architecture_note: str = ""


BACKBONES = [
    Backbone("MobileNetV2", "mobilenetv2_100", "mobilenetv2", 224),
    # timm's VGG19 keeps 85 % of its 139.6 M parameters in its classifier's first two layers, 4096 wide for
    # ImageNet's 1,000 classes. With the first one 64 wide (mlp_ratio 1/64) it keeps all 16 convolutions and the 3
    # classifier layers with 21.9 M parameters: 44 MB at half precision against 279 MB, which the four models'
    # 200 MB can't hold.
    Backbone(
        "VGG19",
        "vgg19_bn",
        "vgg19",
        224,
        model_args={"mlp_ratio": 1 / 64},
        reshaped_layers=("pre_logits.fc1", "pre_logits.fc2", "head.fc"),
        architecture_note="the classifier's first layer is 64 wide instead of the 4096 of the thesis's VGG19 (and "
        "of timm's default, sized for ImageNet's 1,000 classes). All 16 convolutions and the 3 classifier layers "
        "stay; the parameters fall from 139.6 M to 21.9 M, and the weights from 279 MB to 44 MB at half precision, "
        "so that the project's four models fit in 200 MB.",
    ),
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
    overlay = {"input_size": (3, size, size), "crop_pct": crop_pct, "crop_mode": "center"}
    if pretrained and backbone.reshaped_layers:
        # timm drops the listed layers' ImageNet weights when the class count differs, and loads the rest.
        overlay["classifier"] = backbone.reshaped_layers
    try:
        model = timm.create_model(
            backbone.timm_name,
            pretrained=pretrained,
            num_classes=len(CLASS_NAMES),
            drop_rate=drop_rate,
            pretrained_cfg_overlay=overlay,
            **backbone.model_args,
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
