"""Preprocessing comes from the model's own config; augmentation only adds random ops in front of it."""

import torch

from training.backbones import create_model, resolve_backbone
from training.transforms import Augmentation, data_config, eval_transform, pixel_batch, train_transform


def test_eval_transform_follows_the_model_config(cnmc):
    model = create_model("mobilenetv2", pretrained=False, img_size=96)
    assert data_config(model)["input_size"] == (3, 96, 96)
    image = cnmc["fold_0"][0]["image"]
    x = eval_transform(model)(image)
    assert x.shape == (3, 96, 96)
    # Deterministic, and train with no augmentation equals eval exactly.
    assert torch.equal(x, eval_transform(model)(image))
    assert torch.equal(x, train_transform(model, Augmentation())(image))


def test_train_transform_randomises(cnmc):
    model = create_model("mobilenetv2", pretrained=False, img_size=64)
    aug = train_transform(
        model,
        Augmentation(hflip=0.5, vflip=0.5, rotation=180, zoom=0.2, zoom_prob=0.7, color_jitter=0.2, hue=0.02),
    )
    image = cnmc["fold_0"][0]["image"]
    outs = [aug(image) for _ in range(4)]
    assert all(o.shape == (3, 64, 64) for o in outs)
    assert not all(torch.equal(outs[0], o) for o in outs[1:])


def test_pixel_batch_for_with_transform(cnmc):
    model = create_model("mobilenetv2", pretrained=False, img_size=64)
    ds = cnmc["fold_1"].with_transform(pixel_batch(eval_transform(model)))
    batch = ds[:3]
    assert [t.shape for t in batch["pixel_values"]] == [(3, 64, 64)] * 3
    assert batch["labels"] == cnmc["fold_1"]["label"][:3]


def test_backbone_names_resolve():
    assert resolve_backbone("ResNet101V2").timm_name == "resnetv2_101"
    assert resolve_backbone("inceptionv3").img_size == 299
    assert create_model("inceptionv3", pretrained=False).pretrained_cfg["input_size"] == (3, 299, 299)


def test_unknown_backbone_lists_the_choices():
    import pytest

    with pytest.raises(ValueError, match="mobilenetv2_100 \\(mobilenetv2\\)"):
        resolve_backbone("alexnet")
