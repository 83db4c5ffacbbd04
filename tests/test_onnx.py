"""ONNX Runtime serves the shipped model only with PyTorch's answers on real cells, and otherwise says why not."""

import sys

import numpy as np
import onnx
import pytest
import torch
from conftest import CELLS, CNMC_ROOT

from cnmc.calibration import calibrated
from cnmc.preprocessing import flip_averaged
from serving import fast, onnx_runtime
from serving.images import load_image
from serving.predict import load_models, probabilities
from serving.registry import registered_model

SHIPPED = registered_model("MobileNetV2")
PARITY_CELLS = sorted((CNMC_ROOT / "training_data" / "fold_0").rglob("UID_*"))  # checked at start; all are served


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture
def served(cache, monkeypatch):
    """The shipped model as the app serves it by default, its export cached for the whole module."""
    monkeypatch.setattr(onnx_runtime, "CACHE_DIR", cache)
    (model,) = load_models([SHIPPED], parity_images=[load_image(p).image for p in PARITY_CELLS], precision="auto")
    return model


def test_onnx_runtime_serves_the_shipped_model_with_pytorchs_probabilities_on_every_fixture_cell(served):
    assert served.runner.precision == onnx_runtime.PRECISION and served.reason is None, served.status
    assert "ONNX Runtime fp32" in served.status
    images = [load_image(p).image for p in CELLS]
    assert len(images) > len(PARITY_CELLS)
    x = torch.stack([served.loaded.transform(i) for i in images])
    reference = fast.fp32_runner(served.loaded.model)

    def expected(batch):
        return calibrated(reference(batch), served.loaded.temperature)

    check = fast.parity(expected(x), probabilities(served, images))
    assert check.ok, check
    # The four flips go through the exported graph as one batch of 4n.
    check = fast.parity(flip_averaged(expected, x), probabilities(served, images, flips=True))
    assert check.ok, check


def test_a_second_start_reuses_the_export(served, cache, monkeypatch):
    (exported,) = cache.glob("*.onnx")
    before = exported.stat().st_mtime_ns
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: pytest.fail("exported again"))
    x = served.loaded.transform(load_image(CELLS[0]).image).unsqueeze(0)
    assert onnx_runtime.export(served.loaded.model, tuple(x.shape[1:])) == exported
    assert exported.stat().st_mtime_ns == before


def test_a_graph_that_disagrees_with_pytorch_falls_back_with_the_reason(served, cache, monkeypatch, tmp_path):
    """A cached graph whose classifier no longer matches the weights (a damaged or stale cache) is not served."""
    (exported,) = cache.glob("*.onnx")
    graph = onnx.load(exported)
    (bias,) = [t for t in graph.graph.initializer if t.name.endswith("classifier.bias")]
    bias.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(bias) + np.float32([0, 2]), bias.name))
    onnx.save(graph, tmp_path / exported.name)
    monkeypatch.setattr(onnx_runtime, "CACHE_DIR", tmp_path)
    (model,) = load_models([SHIPPED], parity_images=[load_image(p).image for p in PARITY_CELLS], precision="auto")
    assert model.available and model.runner.precision == "fp32"
    assert "ONNX Runtime differs from PyTorch by " in model.reason and model.reason.endswith("so PyTorch is used")


def test_without_onnxruntime_pytorch_serves_and_says_why(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    (model,) = load_models([SHIPPED], parity_images=[load_image(PARITY_CELLS[0]).image], precision="auto")
    assert model.runner.precision == "fp32" and "onnxruntime is not installed, so PyTorch is used" in model.status


def test_the_runtime_setting_keeps_pytorch_or_refuses_an_unknown_runtime():
    (model,) = load_models([SHIPPED], parity_images=[load_image(PARITY_CELLS[0]).image], runtime="torch")
    assert model.runner.precision != onnx_runtime.PRECISION
    with pytest.raises(ValueError, match="Unknown runtime 'tensorrt' \\(CNMC_RUNTIME\\): use one of onnx, torch"):
        load_models([SHIPPED], runtime="tensorrt")
