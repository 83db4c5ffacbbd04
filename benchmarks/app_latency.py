"""The app's inference latency at batch 1: eager fp32 against the bf16 paths, in the same run.

    python -m benchmarks.app_latency [--repeats 30]

Each backbone alone (its eval transform and its forward pass timed apart, on a real cell), then the Compare
tab's four models in a row (transform and forward each, Grad-CAM excluded). Paths: fp32; all bf16; and bf16
after a quarter of the parametrised layers in fp32, the most that ``serving.fast.choose_runner`` would keep.
Models are randomly initialised (weights don't change speed). The shipped models (those with a local folder)
are also timed with their real weights, at their own input size, on the path the app picks for them, with its
parity against fp32 on every fixture cell, bf16's difference from fp32 by the number of leading fp32 layers, and,
for scale, how far +-0.5 grey levels of noise move fp32 itself. Writes benchmarks/results/app_latency.json.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.report import save
from cnmc.backbones import BACKBONES, create_model
from cnmc.calibration import calibrated
from cnmc.preprocessing import eval_transform
from serving import fast
from serving.images import load_image
from serving.predict import load_models
from serving.registry import MODELS

CELLS = Path(__file__).resolve().parents[1] / "tests/fixtures/cnmc/C-NMC_Leukemia/training_data"
CELL = CELLS / "fold_0/all/UID_3_2_1_all.webp"
OUTPUT = Path(__file__).resolve().parent / "results" / "app_latency.json"


def _stats(times: list[float]) -> dict:
    return {"p50_ms": round(float(np.percentile(times, 50)), 2), "p95_ms": round(float(np.percentile(times, 95)), 2)}


def _time(runner, x: torch.Tensor, warmup: int, repeats: int) -> dict:
    times = []
    for step in range(warmup + repeats):
        start = time.perf_counter()
        runner(x)
        if step >= warmup:
            times.append((time.perf_counter() - start) * 1000)
    return _stats(times)


def _quarter_fp32(model: torch.nn.Module) -> fast.Runner:
    return fast.bf16_runner(model, fp32_layers=len(fast.parametrised_layers(model)) // 4)


def _difference(reference: torch.Tensor, candidate: torch.Tensor) -> float:
    return round(fast.parity(reference, candidate).max_difference, 4)


def shipped(warmup: int, repeats: int) -> dict:
    """Each shipped model with its real weights, on the runner the app picks, and that runner's parity."""
    images = [load_image(p).image for p in sorted(CELLS.glob("*/*/*"))]
    report = {}
    for entry in MODELS:
        if entry.source != str(entry.local_dir):
            continue
        (served,) = load_models([entry], parity_images=images)
        loaded = served.loaded
        x = torch.stack([loaded.transform(i) for i in images])
        reference = fast.fp32_runner(loaded.model)
        expected = calibrated(reference(x), loaded.temperature)
        check = fast.parity(expected, calibrated(served.runner(x), loaded.temperature))
        std = torch.tensor(loaded.model.pretrained_cfg["std"]).view(1, 3, 1, 1)
        noisy = reference(x + (torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) - 0.5) / 255 / std)
        report[entry.display_name] = {
            "input_size": loaded.model.pretrained_cfg["input_size"][-1],
            "served_precision": served.runner.precision,
            "transform": _time(loaded.transform, images[0], warmup, repeats),
            "fp32": _time(reference, x[:1], warmup, repeats),
            "served": _time(served.runner, x[:1], warmup, repeats),
            "parity": {
                "cells": len(images),
                "same_labels": check.same_labels,
                "max_probability_difference": round(check.max_difference, 4),
            },  # fmt: skip
            "bf16_difference_by_fp32_layers": {
                k: _difference(expected, calibrated(fast.bf16_runner(loaded.model, k)(x), loaded.temperature))
                for k in (0, 1, 2, 4, 8, 16, 32)
            },
            # For scale: how far the fp32 model itself moves under invisible noise of +-0.5 grey levels.
            "fp32_difference_under_half_grey_level_noise": _difference(expected, calibrated(noisy, loaded.temperature)),
        }
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)
    image = load_image(CELL).image
    models, transforms, runners = {}, {}, {}
    for backbone in BACKBONES:
        model = create_model(backbone.timm_name, pretrained=False).eval()
        name = backbone.display_name
        models[name], transforms[name] = model, eval_transform(model)
        runners[name] = {"fp32": fast.fp32_runner(model)}
        if fast.bf16_supported():
            runners[name] |= {"bf16": fast.bf16_runner(model), "bf16, first quarter fp32": _quarter_fp32(model)}
    alone = {}
    for name, paths in runners.items():
        x = transforms[name](image).unsqueeze(0)
        alone[name] = {"transform": _time(transforms[name], image, args.warmup, args.repeats)}
        alone[name] |= {path: _time(runner, x, args.warmup, args.repeats) for path, runner in paths.items()}
    # The Compare tab: each model's transform and forward in turn, so each model meets the caches the others left.
    in_a_row = {path: [] for path in next(iter(runners.values()))}
    for step in range(args.warmup + args.repeats):
        for path, times in in_a_row.items():
            start = time.perf_counter()
            for name, paths in runners.items():
                paths[path](transforms[name](image).unsqueeze(0))
            if step >= args.warmup:
                times.append((time.perf_counter() - start) * 1000)
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "repeats": args.repeats,
        "alone": alone,
        "four_models_in_a_row": {path: _stats(times) for path, times in in_a_row.items()},
        "shipped": shipped(args.warmup, args.repeats) if fast.bf16_supported() else {},
    }
    save(report, OUTPUT)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
