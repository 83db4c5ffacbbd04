"""Shared fixtures. Everything runs offline, on the CPU, on real C-NMC cells in tests/fixtures/."""

import os

# Before any Hugging Face library is imported: tests never touch the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

# The app's ONNX exports (serving.onnx_runtime) and gradio's uploads go to folders of this test session's: gradio
# keeps uploads by their content's hash, so another app on the machine sharing its cache could delete a test's.
for setting, prefix in (("CNMC_ONNX_CACHE", "cnmc-onnx-tests-"), ("GRADIO_TEMP_DIR", "cnmc-gradio-tests-")):
    os.environ[setting] = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, os.environ[setting], ignore_errors=True)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "cnmc"
CNMC_ROOT = FIXTURES / "C-NMC_Leukemia"
CELLS = sorted(p for p in CNMC_ROOT.rglob("*") if p.suffix in (".bmp", ".webp"))
ALL_CELL = CNMC_ROOT / "training_data" / "fold_0" / "all" / "UID_11_10_1_all.bmp"
HEM_CELL = CNMC_ROOT / "training_data" / "fold_0" / "hem" / "UID_H6_10_1_hem.webp"


@pytest.fixture
def cnmc_copy(tmp_path: Path) -> Path:
    """A writable copy of the fixture download (Kaggle layout), for tests that damage it."""
    target = tmp_path / "download"
    shutil.copytree(FIXTURES, target)
    return target / "C-NMC_Leukemia"


@pytest.fixture(scope="session")
def cnmc():
    from training.data import load_cnmc

    return load_cnmc(FIXTURES, progress=False)


def export_tiny(folder: Path, *, seed: int, gentle: bool = False, temperature: float | None = None) -> Path:
    """A tiny (64 px) random MobileNetV2 exported as training exports a model, for the app's tests."""
    import json

    import torch

    from cnmc.backbones import create_model
    from cnmc.export import export_model

    torch.manual_seed(seed)
    model = create_model("mobilenetv2", pretrained=False, img_size=64).eval()
    if gentle:  # small logits with a clear margin, like a trained model's, so bf16 parity can hold
        with torch.no_grad():
            model.classifier.weight.mul_(0.01)
            model.classifier.bias.copy_(torch.tensor([0.0, 1.0]))
    extra = []
    if temperature is not None:
        extra = [folder.parent / f"{folder.name}-calibration" / "calibration.json"]
        extra[0].parent.mkdir(parents=True)
        extra[0].write_text(json.dumps({"temperature": temperature}))
    return export_model(model, folder, extra_files=extra)


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """Two tiny models and one that can't load (neither its folder nor a cached Hub copy exists)."""
    from serving.registry import RegisteredModel

    root = tmp_path_factory.mktemp("models")
    return [
        RegisteredModel("Tiny A", "mobilenetv2_100", export_tiny(root / "a", seed=0), "cnmc-test/tiny-a"),
        RegisteredModel("Tiny B", "mobilenetv2_100", export_tiny(root / "b", seed=1, gentle=True), "cnmc-test/tiny-b"),
        RegisteredModel("Gone", "vgg19_bn", root / "missing", "cnmc-test/not-cached"),
    ]


@pytest.fixture(scope="module")
def models(registered):
    """The app's served models for ``registered``, with bf16 checked against fp32 on real cells."""
    from serving.images import load_image
    from serving.predict import load_models

    # "bf16" rather than "auto": the path then depends on parity alone, not on this machine's timings
    return load_models(registered, parity_images=[load_image(p).image for p in CELLS[:8]], precision="bf16")
