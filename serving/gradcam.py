"""Grad-CAM overlays with the ``grad-cam`` package, on each model's fp32 weights.

The target layer is the last spatial feature map before global pooling, named per timm architecture.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from cnmc.load import LoadedModel
from cnmc.preprocessing import data_config

TARGET_LAYERS = {
    "mobilenetv2_100": "bn2",  # BatchNormAct after conv_head, 7x7 at 224 px
    "vgg19_bn": "features.51",  # the last ReLU, before the final max-pool
    "inception_v3": "Mixed_7c",
    "resnetv2_101": "norm",  # the pre-activation network's final norm + ReLU
}


def target_layer(model: torch.nn.Module) -> torch.nn.Module:
    architecture = model.pretrained_cfg["architecture"]
    if architecture not in TARGET_LAYERS:
        raise ValueError(f"No Grad-CAM target layer is set for {architecture}")
    return model.get_submodule(TARGET_LAYERS[architecture])


def overlay(loaded: LoadedModel, image: Image.Image, class_index: int) -> np.ndarray:
    """The heat map of ``class_index`` over the model's input view (after its own resize and crop), RGB uint8."""
    x = loaded.transform(image).unsqueeze(0)
    with GradCAM(model=loaded.model, target_layers=[target_layer(loaded.model)]) as cam:
        heat = cam(input_tensor=x, targets=[ClassifierOutputTarget(class_index)])[0]
    return show_cam_on_image(_unnormalise(x[0], loaded.model), heat, use_rgb=True)


def _unnormalise(x: torch.Tensor, model: torch.nn.Module) -> np.ndarray:
    """Undo the eval transform's normalisation, to show exactly the pixels the model saw."""
    config = data_config(model)
    mean, std = torch.tensor(config["mean"]).view(3, 1, 1), torch.tensor(config["std"]).view(3, 1, 1)
    return (x * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
