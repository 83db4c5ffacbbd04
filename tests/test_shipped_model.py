"""The model folder the repository ships is what the app loads offline: it must load, and agree with timm."""

import gradio as gr
import pytest
import timm
import torch
from conftest import CNMC_ROOT
from PIL import Image

import app
from cnmc.calibration import calibrated
from cnmc.load import load_model
from serving import fast, onnx_runtime
from serving.images import load_image
from serving.predict import load_models, probabilities
from serving.registry import registered_model

SHIPPED = registered_model("MobileNetV2")


def test_registry_points_the_app_at_the_shipped_folder():
    assert SHIPPED.source == str(SHIPPED.local_dir)


def test_shipped_model_loads_offline_with_its_preprocessing_and_calibration():
    loaded = load_model(SHIPPED.source)
    assert loaded.label_names == ["HEM (healthy)", "ALL (leukaemia)"]
    assert loaded.temperature is not None and loaded.temperature > 0
    cells = sorted((CNMC_ROOT / "training_data" / "fold_0").glob("*/*"))
    x = torch.stack([loaded.transform(Image.open(p).convert("RGB")) for p in cells])
    size = loaded.model.pretrained_cfg["input_size"][-1]
    assert x.shape == (len(cells), 3, size, size)
    reference = timm.create_model(f"local-dir:{SHIPPED.local_dir}", pretrained=True).eval()
    with torch.inference_mode():
        assert torch.allclose(loaded.model(x), reference(x), atol=1e-5)


def test_shipped_model_serves_fp32s_answers_on_every_fixture_cell():
    """The app picks its fast path on the training fixture cells; it must hold on the other fixture cells too."""
    if not fast.bf16_supported():
        pytest.skip("this CPU has no bf16 path: the app serves fp32 itself")
    # "bf16" picks the path by parity alone; "auto" may keep fp32 on timing, and fp32 would be checked against itself.
    parity_images = [load_image(p).image for p in app.PARITY_CELLS]
    (served,) = load_models([SHIPPED], parity_images=parity_images, precision="bf16")
    assert served.available and served.runner.precision != "fp32", served.status
    images = [load_image(p).image for p in sorted(CNMC_ROOT.rglob("*")) if p.suffix in (".bmp", ".webp")]
    assert len(images) > len(app.PARITY_CELLS)
    x = torch.stack([served.loaded.transform(i) for i in images])
    reference = calibrated(fast.fp32_runner(served.loaded.model)(x), served.loaded.temperature)
    assert fast.parity(reference, probabilities(served, images)).ok, served.runner.precision


def test_the_app_starts_offline_with_the_shipped_models_and_says_why_the_others_are_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_runtime, "CACHE_DIR", tmp_path)  # its export, not the user's cache
    demo = app.build_demo()  # the registry, as `python app.py` builds it
    texts = [str(b.value) for b in demo.blocks.values() if isinstance(b, gr.Markdown)]
    assert any("3 of 4 models available: MobileNetV2, InceptionV3, ResNet101V2" in text for text in texts)
    (listing,) = [text for text in texts if text.startswith("- **")]  # the "Model status" accordion
    status = {line.split("**")[1]: line for line in listing.splitlines()}
    assert sorted(status) == ["InceptionV3", "MobileNetV2", "ResNet101V2", "VGG19"]
    # ONNX Runtime is the default where it gives PyTorch's answers
    for name in ("MobileNetV2", "InceptionV3", "ResNet101V2"):
        assert status[name].startswith(f"- **{name}**: available (ONNX Runtime fp32, T = "), status[name]
    assert "unavailable: not published yet: " in status["VGG19"], status["VGG19"]  # no weights, no pinned revision
    cards = {t.split("**")[1] for t in texts if "_Its card as committed to this repository" in t}
    assert cards == {"VGG19"}
