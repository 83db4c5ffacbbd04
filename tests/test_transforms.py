"""Preprocessing comes from the model's own config; augmentation only adds random ops in front of it."""

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

from cnmc.backbones import create_model, resolve_backbone
from cnmc.preprocessing import data_config, eval_transform
from training.evaluate import stack_images
from training.transforms import Augmentation, BatchAugment, FixedSizeTensor, mix_batch, pixel_batch


def test_eval_transform_follows_the_model_config(cnmc):
    model = create_model("mobilenetv2", pretrained=False, img_size=96)
    assert data_config(model)["input_size"] == (3, 96, 96)
    image = cnmc["fold_0"][0]["image"]
    x = eval_transform(model)(image)
    assert x.shape == (3, 96, 96)
    assert torch.equal(x, eval_transform(model)(image))


@pytest.mark.parametrize(("size", "decoded"), [(96, 450), (224, 320), (299, 320)])  # antialiased first, or not
def test_batch_augment_without_augmentation_matches_eval(cnmc, size, decoded):
    """Training's batched path has the same geometry and normalisation as the eval transform."""
    model = create_model("inceptionv3" if size == 299 else "mobilenetv2", pretrained=False, img_size=size)
    images = cnmc["fold_0"][:8]["image"]
    expected = torch.stack([eval_transform(model)(i) for i in images])
    got = BatchAugment(model, Augmentation())(stack_images([FixedSizeTensor(decoded)(i) for i in images]))
    assert got.shape == expected.shape
    assert (got - expected).abs().mean() < 0.03  # interpolation differs by under 2 grey levels on average


def test_loader_batches_keep_each_image_layout(cnmc):
    """Decoded cells stack channels-last, without a transpose; transformed float images stack as they are."""
    model = create_model("mobilenetv2", pretrained=False, img_size=64)
    images = cnmc["fold_0"][:4]["image"]
    decoded = [FixedSizeTensor(128)(i) for i in images]
    batch = stack_images(decoded)
    assert torch.equal(batch, torch.stack(decoded))
    assert batch.is_contiguous(memory_format=torch.channels_last) and not batch.is_contiguous()
    assert stack_images([eval_transform(model)(i) for i in images]).is_contiguous()
    augment = BatchAugment(model, Augmentation())
    assert torch.equal(augment(batch), augment(torch.stack(decoded)))


def test_batch_augment_randomises_within_range(cnmc):
    model = create_model("mobilenetv2", pretrained=False, img_size=64)
    augment = BatchAugment(
        model, Augmentation(hflip=0.5, vflip=0.5, rotation=180, zoom=0.2, zoom_prob=0.7, color_jitter=0.2, hue=0.02)
    )
    x = torch.stack([FixedSizeTensor(128)(i) for i in cnmc["fold_0"][:4]["image"]])
    assert x.dtype == torch.uint8 and x.shape == (4, 3, 128, 128)
    outs = [augment(x) for _ in range(3)]
    assert all(o.shape == (4, 3, 64, 64) for o in outs)
    assert not torch.equal(outs[0], outs[1])
    low = (0 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    high = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    for o in outs:  # still valid normalised pixels
        assert (o >= low.view(1, 3, 1, 1) - 1e-5).all() and (o <= high.view(1, 3, 1, 1) + 1e-5).all()


def test_flip_only_augmentation_mirrors_exactly(cnmc):
    model = create_model("mobilenetv2", pretrained=False, img_size=64)
    x = torch.stack([FixedSizeTensor(128)(i) for i in cnmc["fold_0"][:2]["image"]])
    plain = BatchAugment(model, Augmentation())(x)
    flipped = BatchAugment(model, Augmentation(hflip=1.0))(x)
    assert torch.allclose(flipped, plain.flip(-1), atol=1e-5)


@pytest.mark.parametrize(("zoom", "zoom_out", "grows"), [(0.3, 0.0, True), (0.0, 0.3, False)])
def test_zoom_in_enlarges_and_zoom_out_shrinks_the_cell(cnmc, zoom, zoom_out, grows):
    model = create_model("mobilenetv2", pretrained=False, img_size=64)
    x = torch.stack([FixedSizeTensor(128)(i) for i in cnmc["fold_0"][:4]["image"]])
    black = ((0 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])).view(1, 3, 1, 1)

    def cell_area(batch):  # per image: the fraction of pixels off the black background
        return ((batch - black).abs().amax(1) > 0.2).float().mean((-1, -2))

    plain = cell_area(BatchAugment(model, Augmentation())(x))
    zoomed = cell_area(BatchAugment(model, Augmentation(zoom=zoom, zoom_out=zoom_out, zoom_prob=1.0))(x))
    assert ((zoomed > plain) if grows else (zoomed < plain)).all()


def test_colour_jitter_is_torchvisions_brightness_contrast_and_saturation(cnmc, monkeypatch):
    """The one colour map per image equals torchvision's three ops, applied one after another."""
    model = create_model("mobilenetv2", pretrained=False, img_size=64)
    x = torch.stack([FixedSizeTensor(128)(i) for i in cnmc["fold_0"][:4]["image"]])
    plain = BatchAugment(model, Augmentation())(x)
    jitter = BatchAugment(model, Augmentation(color_jitter=0.2))
    # Every draw at a quarter of its range: each factor 0.9, below 1, so torchvision's clamp after each op changes
    # nothing; no rotation, zoom or flip.
    monkeypatch.setattr(jitter, "_uniforms", lambda n: np.full((n, 9), 0.25))
    rgb = plain * jitter.std + jitter.mean
    expected = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(rgb, 0.9), 0.9), 0.9)
    assert torch.allclose(jitter(x) * jitter.std + jitter.mean, expected, atol=1e-5)
    assert (expected - rgb).abs().mean() > 0.01


def test_hue_shift_changes_colour_but_keeps_luminance(cnmc):
    model = create_model("mobilenetv2", pretrained=False, img_size=64)
    x = torch.stack([FixedSizeTensor(128)(i) for i in cnmc["fold_0"][:4]["image"]])
    augment = BatchAugment(model, Augmentation())
    plain, shifted = augment(x), BatchAugment(model, Augmentation(hue=0.5))(x)

    def rgb(normalised):
        return normalised * augment.std + augment.mean

    def luminance(image):
        return (augment.luma.view(1, 3, 1, 1) * image).sum(1)

    unclipped = ((rgb(shifted) > 1e-4) & (rgb(shifted) < 1 - 1e-4)).all(1)
    assert unclipped.float().mean() > 0.1  # the cell; the black background sits at 0
    assert torch.allclose(luminance(rgb(shifted))[unclipped], luminance(rgb(plain))[unclipped], atol=1e-4)
    assert (rgb(shifted) - rgb(plain)).abs().amax(1)[unclipped].mean() > 0.02


def test_mixup_blends_images_and_targets_by_the_same_weight(cnmc):
    """Odd batches too: an epoch's last batch can be odd, and its middle cell then mixes with itself."""
    x = torch.stack([FixedSizeTensor(64)(i) for i in cnmc["fold_0"][:5]["image"]]).float()
    labels = torch.tensor([1, 0, 1, 1, 0])  # the first and last cells (mirrors) differ, so lam shows in the target
    torch.manual_seed(0)
    mixed, target = mix_batch(x, labels, num_classes=2, mixup=0.4)
    assert mixed.shape == x.shape and target.shape == (5, 2)
    assert torch.allclose(target.sum(1), torch.ones(5))
    lam = target[0, 1]
    assert 0 < lam < 1
    assert torch.allclose(target[-1], torch.stack([lam, 1 - lam]))
    assert torch.allclose(mixed[0], x[0] * lam + x[-1] * (1 - lam), atol=1e-3)
    assert torch.allclose(mixed[2], x[2], atol=1e-3) and torch.equal(target[2], torch.tensor([0.0, 1.0]))


def test_cutmix_pastes_a_box_of_the_mirror_and_weights_targets_by_its_area(cnmc):
    cells = torch.stack([FixedSizeTensor(64)(i) for i in cnmc["fold_0"][:4]["image"]]).float()
    x = cells + 1000 * torch.arange(4).view(4, 1, 1, 1)  # no pixel equal across cells, so the box shows exactly
    labels = torch.tensor([1, 0, 0, 0])
    torch.manual_seed(0)
    np.random.seed(0)
    mixed, target = mix_batch(x, labels, num_classes=2, cutmix=1.0)
    pasted = (mixed != x).any(1)
    assert torch.equal(pasted, pasted[:1].expand(4, -1, -1))  # one box for the batch
    rows, cols = pasted[0].nonzero().unbind(1)
    box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert 0 < box < 64**2 and pasted[0].sum() == box  # a filled rectangle
    assert torch.equal(mixed[0][:, pasted[0]], x[-1][:, pasted[0]])
    assert target[0, 1] == pytest.approx(1 - box.item() / 64**2)
    assert torch.allclose(target.sum(1), torch.ones(4)) and torch.allclose(target[-1], target[0].flip(0))


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
