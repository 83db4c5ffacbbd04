"""Every folder in models/ is what its Hub repo holds (the larger ones without their weights): timm must build its
architecture from config.json alone, with the preprocessing and labels the card describes."""

import json
from pathlib import Path

import pytest
import timm
import torch
from conftest import CNMC_ROOT
from PIL import Image

from cnmc.preprocessing import eval_transform
from hub.card import model_card, shipped_run
from serving.registry import MODELS

MODEL_DIRS = sorted(p.parent for p in (Path(__file__).parents[1] / "models").glob("*/config.json"))


def test_the_four_trained_backbones_have_folders():
    assert [p.name for p in MODEL_DIRS] == ["inceptionv3", "mobilenetv2", "resnet101v2", "vgg19"]


@pytest.mark.parametrize("folder", MODEL_DIRS, ids=lambda p: p.name)
def test_config_builds_the_model_that_classifies_a_real_cell(folder):
    config = json.loads((folder / "config.json").read_text())
    assert config["label_names"] == ["hem", "all"]
    model = timm.create_model(f"local-dir:{folder}", pretrained=False).eval()  # the architecture, random weights
    assert model.num_classes == 2
    cell = Image.open(sorted((CNMC_ROOT / "training_data" / "fold_0" / "all").glob("*"))[0]).convert("RGB")
    x = eval_transform(model)(cell).unsqueeze(0)
    assert x.shape[-2:] == tuple(config["pretrained_cfg"]["input_size"][1:])
    with torch.inference_mode():
        assert model(x).shape == (1, 2)


@pytest.mark.parametrize("folder", MODEL_DIRS, ids=lambda p: p.name)
def test_card_states_the_calibration_it_ships_with(folder):
    temperature = json.loads((folder / "calibration.json").read_text())["temperature"]
    preprocessing = json.loads((folder / "config.json").read_text())["pretrained_cfg"]
    card = (folder / "README.md").read_text()
    assert f"T = {temperature:.2f}" in card
    size = preprocessing["input_size"][-1]
    assert f"resized ({preprocessing['interpolation']}) to {size} x {size} px" in card


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.local_dir.name)
def test_card_is_what_hub_card_writes_from_the_committed_run(model):
    """A card edited by hand, or left behind by a change to the template, fails here: `python -m hub.card` fixes it."""
    card = model_card(model.local_dir, repo_id=model.repo_id, run_dir=shipped_run(model.local_dir))
    assert (model.local_dir / "README.md").read_text() == str(card)
