"""The four backbones as cnmc.backbones builds them: VGG19's narrow classifier, and what travels in config.json."""

import json

import timm
import torch
from transformers import AutoModelForImageClassification

from cnmc.backbones import create_model, resolve_backbone
from cnmc.export import export_model


def _parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_vgg19_keeps_its_16_convolutions_and_3_classifier_layers_at_a_seventh_of_the_parameters(tmp_path):
    model = create_model("vgg19", pretrained=False, img_size=64)
    convolutions = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    assert len(convolutions) == 16
    assert [model.pre_logits.fc1.out_channels, model.pre_logits.fc2.out_channels] == [64, 4096]
    full = timm.create_model("vgg19_bn", num_classes=2)
    assert 21.5e6 < _parameters(model) < 22.5e6 and _parameters(full) > 6 * _parameters(model)

    folder = export_model(model.eval(), tmp_path / "vgg19")
    config = json.loads((folder / "config.json").read_text())
    assert config["model_args"]["mlp_ratio"] == 1 / 64
    assert (folder / "model.safetensors").stat().st_size < 45e6  # half precision; the full model's is 279 MB
    # timm and transformers rebuild the narrow classifier from config.json alone, and load the weights into it.
    from_timm = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    from_transformers = AutoModelForImageClassification.from_pretrained(folder).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        expected = model.half().float()(x)
        assert torch.allclose(from_timm(x), expected, atol=1e-5)
        assert torch.allclose(from_transformers(x).logits, expected, atol=1e-5)


def test_vgg19_from_imagenet_weights_keeps_their_convolutions_and_starts_the_reshaped_classifier(tmp_path, monkeypatch):
    """A stand-in for timm's ImageNet checkpoint, in a local file as timm's pretrained_cfg "file" allows: the real
    convolutions' shapes, and a classifier for 1,000 classes whose first layer is 128 wide (ImageNet's is 4096, too
    large a file for a test): any width but 64 fails to load unless those layers are dropped."""
    imagenet = timm.create_model("vgg19_bn", num_classes=1000, mlp_ratio=1 / 32).state_dict()
    checkpoint = tmp_path / "vgg19_bn.pth"
    torch.save(imagenet, checkpoint)
    build = timm.create_model

    def from_local_file(name, **kwargs):
        kwargs["pretrained_cfg_overlay"] = kwargs["pretrained_cfg_overlay"] | {"file": str(checkpoint)}
        return build(name, **kwargs)

    monkeypatch.setattr(timm, "create_model", from_local_file)
    model = create_model("vgg19", pretrained=True, img_size=64)
    state = model.state_dict()
    kept = [k for k in imagenet if not k.startswith(resolve_backbone("vgg19").reshaped_layers)]
    assert kept and all(torch.equal(state[k], imagenet[k]) for k in kept)
    assert state["pre_logits.fc1.weight"].shape[0] == 64 and state["head.fc.weight"].shape == (2, 4096)
    assert model.pretrained_cfg["tag"].endswith("_ft_cnmc")
