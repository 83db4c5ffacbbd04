"""Every folder in models/ is what its Hub repo holds (the larger ones without their weights): timm must build its
architecture from config.json alone, with the preprocessing and labels the card describes."""

import json
import re
from pathlib import Path

import pytest
import timm
import torch
from conftest import CNMC_ROOT
from PIL import Image

from cnmc.cells import CLASS_NAMES
from cnmc.export import LABEL_NAMES, TRAINED_TAG
from cnmc.preprocessing import eval_transform
from hub.card import shipped_card
from serving.registry import MODELS

MODEL_DIRS = sorted(p.parent for p in (Path(__file__).parents[1] / "models").glob("*/config.json"))


def test_the_four_trained_backbones_have_folders():
    assert [p.name for p in MODEL_DIRS] == ["inceptionv3", "mobilenetv2", "resnet101v2", "vgg19"]


@pytest.mark.parametrize("folder", MODEL_DIRS, ids=lambda p: p.name)
def test_config_builds_the_model_that_classifies_a_real_cell(folder):
    config = json.loads((folder / "config.json").read_text())
    assert config["label_names"] == [LABEL_NAMES[name] for name in CLASS_NAMES] == ["HEM (healthy)", "ALL (leukaemia)"]
    assert config["pretrained_cfg"]["tag"] == TRAINED_TAG  # all four trained from scratch: no ImageNet tag
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
    assert (model.local_dir / "README.md").read_text() == str(shipped_card(model))


def test_shipped_mobilenetv2_card_reports_its_shift_measurement_on_cells_it_trained_on():
    """Its cross-validation predates the shift protocol; the card shows the protocol run on its training cells
    (results/shipped-mobilenetv2-shifts/) as such, and that it fails the rule, instead of "not measured"."""
    card = (MODELS[0].local_dir / "README.md").read_text()
    section = card.split("## Under a shift of size or stain")[1].split("\n## ")[0]
    assert (
        "scored on 3,581 cells of C-NMC 2019 fold_1 (includes 14 patient(s) seen in training), cells they trained on"
        in section
    )
    assert "| scale_1.33 | 0.6355 | -0.2652 | 0.1367 |" in section
    assert "It **fails** the project's adoption rule" in section
    assert "Not measured" not in section


def test_card_snippets_give_the_apps_numbers():
    """The card's cnmc.load and plain-timm snippets, run on the shipped folder, give the app's calibrated,
    flip-averaged probabilities; the transformers one gives a single view without the temperature."""
    from serving.predict import load_models, probabilities

    shipped = next(m for m in MODELS if m.display_name == "MobileNetV2")
    cell = sorted((CNMC_ROOT / "training_data" / "fold_0" / "all").glob("*"))[0]
    card = (shipped.local_dir / "README.md").read_text()
    snippets = re.findall(r"```python\n(.*?)```", card, re.DOTALL)
    assert len(snippets) == 3
    local = {
        f'"hf-hub:{shipped.repo_id}"': f'"local-dir:{shipped.local_dir}"',
        f'hf_hub_download("{shipped.repo_id}", "calibration.json")': f'"{shipped.local_dir / "calibration.json"}"',
        f'"{shipped.repo_id}"': f'"{shipped.local_dir}"',
        '"cell.bmp"': f'"{cell}"',
    }
    (served,) = load_models([shipped], precision="fp32")
    expected = probabilities(served, [Image.open(cell).convert("RGB")], flips=True)[0]
    for snippet in snippets[:2]:
        for hub, here in local.items():
            snippet = snippet.replace(hub, here)
        namespace = {}
        exec(snippet, namespace)  # noqa: S102 - the card's own code, on this repository's files
        assert torch.allclose(namespace["probabilities"], expected, atol=1e-5)
    for hub, here in local.items():
        snippets[2] = snippets[2].replace(hub, here)
    namespace = {}
    exec(snippets[2].replace('classifier("', 'scores = classifier("'), namespace)  # noqa: S102
    single = {p["label"]: p["score"] for p in namespace["scores"]}
    assert set(single) == set(LABEL_NAMES.values())
    assert abs(single[LABEL_NAMES["all"]] - expected[1].item()) < 0.2  # close to the app's, not equal


@pytest.mark.parametrize("folder", MODEL_DIRS, ids=lambda p: p.name)
def test_card_front_matter_names_no_dataset_that_is_not_on_the_hub(folder):
    card = (folder / "README.md").read_text()
    front_matter = card.split("---\n")[1]
    assert "datasets:" not in front_matter  # C-NMC 2019 has no Hub id; the body links it
    assert "https://doi.org/10.7937/tcia.2019.dc64i46r" in card and "@article{gupta2022cnmc" in card
    assert "@software{cnmc_all_detector" in card
    # Each entry is "@type{key," then one indented "field = {...}," a line, then "}": what BibTeX tools parse.
    entries = re.findall(r"^@\w+\{\w+,\n(.*?)^\}$", card, flags=re.DOTALL | re.MULTILINE)
    assert len(entries) == 3
    for fields in entries:
        assert all(re.fullmatch(r"  \w+ *= \{.*\},?", line) for line in fields.splitlines()), fields


def test_card_images_resolve_in_the_apps_models_tab():
    """The card links its plots relative to itself (as the Hub resolves them); the app's tab serves the same files."""
    import gradio as gr
    from fastapi.testclient import TestClient
    from gradio.routes import App

    from serving import results
    from serving.predict import ServedModel

    vgg19 = next(m for m in MODELS if m.display_name == "VGG19")
    card = (vgg19.local_dir / "README.md").read_text()
    relative = re.findall(r"!\[[^\]]*\]\(([\w.-]+\.png)\)", card)
    assert len(relative) == 4 and all((vgg19.local_dir / name).is_file() for name in relative)
    shown = results.model_card_markdown(ServedModel("VGG19", vgg19.repo_id, reason="not published yet"))
    links = re.findall(r"!\[[^\]]*\]\((/gradio_api/file=[^)]+)\)", shown)
    assert len(links) == len(relative)
    with gr.Blocks() as demo:
        gr.Markdown(shown)
    client = TestClient(App.create_app(demo))
    for link, name in zip(links, relative, strict=True):
        response = client.get(link)
        assert response.status_code == 200 and response.content == (vgg19.local_dir / name).read_bytes()
    assert client.get(f"/gradio_api/file={vgg19.local_dir / 'config.json'}").status_code == 403  # only the plots


def test_half_precision_weights_load_unchanged_and_give_the_same_probabilities(tmp_path):
    """An fp16 export of the shipped model: timm and transformers load it as it is, computing in fp32, and the
    app's probabilities move by less than 0.005 on every fixture cell, single-view or flip-averaged."""
    from safetensors import safe_open
    from transformers import pipeline

    from cnmc.calibration import calibrated
    from cnmc.export import export_model
    from cnmc.load import load_model
    from cnmc.preprocessing import flip_averaged

    shipped = next(m for m in MODELS if m.display_name == "MobileNetV2")
    full = load_model(str(shipped.local_dir))
    assert next(full.model.parameters()).dtype == torch.float32
    folder = export_model(full.model, tmp_path / "fp16", extra_files=[shipped.local_dir / "calibration.json"])
    with safe_open(folder / "model.safetensors", "pt") as weights:
        assert {weights.get_tensor(k).dtype for k in weights.keys()} == {torch.float16, torch.int64}
    size = (folder / "model.safetensors").stat().st_size
    assert size < 0.51 * (shipped.local_dir / "model.safetensors").stat().st_size
    half = load_model(str(folder))
    from_timm = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    assert next(half.model.parameters()).dtype == next(from_timm.parameters()).dtype == torch.float32
    cells = sorted(CNMC_ROOT.glob("*/*/*/*"))
    images = [Image.open(p).convert("RGB") for p in cells]
    x = torch.stack([full.transform(image) for image in images])
    assert len(cells) >= 40 and torch.equal(x, torch.stack([half.transform(image) for image in images]))
    with torch.inference_mode():
        for flips in (False, True):
            full_p, half_p = (
                flip_averaged(lambda v, m=m: calibrated(m.model(v), m.temperature), x)
                if flips
                else calibrated(m.model(x), m.temperature)
                for m in (full, half)
            )
            assert (full_p - half_p).abs().max() < 0.005
        assert torch.allclose(from_timm(x), half.model(x))
    classifier = pipeline("image-classification", model=str(folder))
    assert classifier.model.dtype == torch.float32
    scores = {p["label"]: p["score"] for p in classifier(images[0])}
    assert abs(scores["ALL (leukaemia)"] - calibrated(full.model(x[:1]), None)[0, 1].item()) < 0.005
