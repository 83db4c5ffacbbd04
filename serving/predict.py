"""The served model set and its predictions: calibrated probabilities, verdicts, ensembles and latency.

Each model is loaded from its registry source (the shipped folder when it holds weights, else the Hub repo at its
pinned revision, served from the cache when offline). A model that can't be loaded stays in the set with the
reason, so the app can say so and still start; the log says for each where it came from, or why it is unavailable.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property, partial
from statistics import mean

import numpy as np
import torch
from PIL import Image

from cnmc import training_range
from cnmc.calibration import calibrated
from cnmc.decision import calls_all
from cnmc.load import LoadedModel, read_shift_protocol
from cnmc.preprocessing import flip_averaged
from serving import fast, onnx_runtime
from serving.registry import MODELS, RegisteredModel

_log = logging.getLogger(__name__)  # one line per model at start-up: where it came from and how it runs, or why not

ALL_INDEX = 1  # C-NMC's class order is ["hem", "all"]
# Calibrated P(ALL) inside this band is too close to call: the verdict defers to an expert.
UNCERTAIN_BAND = (0.35, 0.65)
UNCERTAIN = "uncertain: refer to an expert"
# For an image that fails serving.lookalike's check: its probability is shown, never called ALL or HEM.
NOT_A_CELL = "no verdict: this doesn't look like a C-NMC cell"
# Shown beside the verdict of every model whose cross-validation does not pass the shift protocol (training.shifts).
SHIFT_CAVEAT = (
    "⚠️ **Healthy cells from a new acquisition batch are over-called.** Not shown to hold under the shift test "
    "(a rescaled or restained cell keeps its verdict; Models & results): {names}. The shipped MobileNetV2 follows "
    "its training batch's cell size and stain: on 13 donors of another batch, whose healthy cells are larger and "
    "redder, it called 56 % of the healthy cells ALL. Read an ALL verdict on cells from another lab, stain or "
    "scanner as unproven."
)
# "fp32" forces eager fp32. "bf16" uses bf16 (after as few fp32 layers as it takes) wherever the CPU supports it
# and it matches fp32 on real cells; "auto" also requires it to be faster than fp32 here.
PRECISION = os.environ.get("CNMC_PRECISION", "auto")
PRECISIONS = ("auto", "bf16", "fp32")
# Under "auto", "onnx" serves through ONNX Runtime wherever it matches PyTorch on real cells (serving.onnx_runtime);
# "torch" keeps PyTorch. An explicit CNMC_PRECISION names a PyTorch path, so it runs PyTorch.
RUNTIME = os.environ.get("CNMC_RUNTIME", "onnx")
RUNTIMES = ("onnx", "torch")
# Compare's default ensemble, as measured on unseen patients (results/ensembles/shipped-*, docs/results.md): the
# four backbones' recipes together rank best (ROC-AUC 0.892) at the best balanced accuracy, and ResNet101V2 raises
# the ranking of whichever of the others it joins.
ENSEMBLE = ("MobileNetV2", "InceptionV3", "VGG19", "ResNet101V2")


@dataclass
class ServedModel:
    name: str
    source: str
    loaded: LoadedModel | None = None
    runner: fast.Runner | None = None
    reason: str | None = None  # why it is unavailable, or why it runs in fp32
    # One forward pass at a time: a batch runs beside single-cell requests, and Grad-CAM's hooks on the fp32 weights
    # must see only their own pass. Held per image, so a batch delays a single cell by one image at most.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def available(self) -> bool:
        return self.runner is not None

    @cached_property  # read once, not on every request that shows a verdict
    def holds_under_shift(self) -> bool:
        """Whether its cross-validation passed the shift protocol, as its folder's shift_protocol.json records."""
        protocol = read_shift_protocol(self.loaded.folder) if self.loaded else None
        return bool(protocol and protocol.get("passes"))

    @property
    def training_range(self) -> dict | None:
        """The range of cell size and stain among its training cells, if its config.json records it."""
        return self.loaded.training_range if self.loaded else None

    @property
    def status(self) -> str:
        if not self.available:
            return f"unavailable: {self.reason}"
        calibration = "uncalibrated" if self.loaded.temperature is None else f"T = {self.loaded.temperature:.2f}"
        note = f"; {self.reason}" if self.reason else ""
        return f"available ({self.runner.precision}, {calibration}{note})"


@dataclass
class Prediction:
    model: str
    prob_all: float  # calibrated
    latency_ms: float


def in_uncertain_band(prob_all: float | np.ndarray) -> bool | np.ndarray:
    """Whether a calibrated P(ALL), or each of an array of them, is too close to call (bounds included)."""
    return (UNCERTAIN_BAND[0] <= prob_all) & (prob_all <= UNCERTAIN_BAND[1])


def verdict(prob_all: float, looks_like_cell: bool = True) -> str:
    """ALL, HEM or uncertain; no verdict at all for an image that fails serving.lookalike's check."""
    if not looks_like_cell:
        return NOT_A_CELL
    if in_uncertain_band(prob_all):
        return UNCERTAIN
    return "ALL" if calls_all(prob_all) else "HEM"


def shift_caveat(models: Sequence[ServedModel]) -> str:
    """:data:`SHIFT_CAVEAT` for those of ``models`` that don't hold under the shift protocol; empty if all do."""
    failing = [m.name for m in models if not m.holds_under_shift]
    return SHIFT_CAVEAT.format(names=", ".join(failing)) if failing else ""


def unlike_training(models: Sequence[ServedModel], image: Image.Image) -> str:
    """Why ``image``'s cell is unlike those the first of ``models`` that finds it so trained on; empty if none do."""
    cell = training_range.measure(image)
    for model in models:
        reasons = training_range.outside(cell, model.training_range) if model.training_range else []
        if reasons:
            return f"unlike the cells {model.name} trained on: {'; '.join(reasons)}"
    return ""


def load_models(
    registered: Sequence[RegisteredModel] = MODELS,
    *,
    parity_images: Sequence[Image.Image] = (),
    precision: str = PRECISION,
    runtime: str = RUNTIME,
) -> list[ServedModel]:
    """Load every registered model that can be; check ONNX Runtime or bf16 against fp32 on ``parity_images``."""
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r} (CNMC_PRECISION): use one of {', '.join(PRECISIONS)}")
    if runtime not in RUNTIMES:
        raise ValueError(f"Unknown runtime {runtime!r} (CNMC_RUNTIME): use one of {', '.join(RUNTIMES)}")
    served = []
    for entry in registered:
        model = ServedModel(entry.display_name, entry.origin)
        try:
            model.loaded = entry.load()
            model.runner, model.reason = _choose_runner(model.loaded, parity_images, precision, runtime)
        except Exception as error:  # whatever one model's files do (safetensors has its own errors), the app starts
            model.reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        _log.info("%s: %s", model.name, f"{model.status}, from {model.source}" if model.available else model.status)
        served.append(model)
    return served


def _choose_runner(
    loaded: LoadedModel, images: Sequence[Image.Image], precision: str, runtime: str
) -> tuple[fast.Runner, str | None]:
    """ONNX Runtime under "auto" where it matches fp32 on ``images``; else the PyTorch path, and why."""
    why_not_onnx = None
    if precision == "auto" and runtime == "onnx":
        if not images:
            why_not_onnx = "no real cells to check ONNX Runtime against"
        else:
            scale = partial(calibrated, temperature=loaded.temperature)
            runner, why_not_onnx = onnx_runtime.onnx_runner(loaded.model, _inputs(loaded, images), scale)
            if runner is not None:
                return runner, None
    runner, reason = _torch_runner(loaded, images, precision)
    return runner, "; ".join(filter(None, [why_not_onnx, reason])) or None


def _torch_runner(loaded: LoadedModel, images: Sequence[Image.Image], precision: str) -> tuple[fast.Runner, str | None]:
    if precision == "fp32" or not fast.bf16_supported():
        return fast.fp32_runner(loaded.model), None
    if not images:
        return fast.fp32_runner(loaded.model), "no real cells to check bf16 against"
    x = _inputs(loaded, images)
    scale = partial(calibrated, temperature=loaded.temperature)
    return fast.choose_runner(loaded.model, x, scale, require_speedup=precision == "auto")


def _inputs(loaded: LoadedModel, images: Sequence[Image.Image]) -> torch.Tensor:
    """The model's own eval transform, and nothing else."""
    return torch.stack([loaded.transform(image) for image in images])


def probabilities(model: ServedModel, images: Sequence[Image.Image], *, flips: bool = False) -> torch.Tensor:
    """Calibrated class probabilities, (n, classes), for RGB images; with ``flips``, averaged over their 4 flips.

    Averaging makes the answer the same for a mirrored cell, which single views of the shipped model are not
    (benchmarks/results/model_robustness.json), at about three times the compute: the flips go as one batch.
    """

    def run(x: torch.Tensor) -> torch.Tensor:
        return calibrated(model.runner(x), model.loaded.temperature)

    x = _inputs(model.loaded, images)
    return flip_averaged(run, x) if flips else run(x)


def predict(model: ServedModel, image: Image.Image, *, flips: bool = False) -> Prediction:
    start = time.perf_counter()
    with model.lock:
        prob_all = float(probabilities(model, [image], flips=flips)[0, ALL_INDEX])
    return Prediction(model.name, prob_all, (time.perf_counter() - start) * 1000)


def available(models: Sequence[ServedModel]) -> list[ServedModel]:
    return [m for m in models if m.available]


def default_members(models: Sequence[ServedModel]) -> list[ServedModel]:
    """The available models Compare averages unless told otherwise: those of :data:`ENSEMBLE`, or every available
    model when none of them is."""
    ready = available(models)
    return [m for m in ready if m.name in ENSEMBLE] or ready


def ensemble(predictions: Sequence[Prediction]) -> float:
    """The ensemble's P(ALL): the mean of the models' calibrated probabilities."""
    return mean(p.prob_all for p in predictions)
