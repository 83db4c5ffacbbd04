"""The app's inference latency at batch 1: eager fp32 against the bf16 path, in the same run.

    python -m benchmarks.app_latency [--repeats 30]

Per backbone and for the Compare tab's four models in a row (Grad-CAM excluded): each model's own eval transform
plus its forward pass on a real cell. Models are randomly initialised (weights don't change speed); accuracy
parity is checked on real cells at app start-up and in tests/test_app.py. The shipped models (those with a
local folder) are also timed as they are, at their own input size, with their bf16 parity on every fixture
cell. Writes benchmarks/results/app_latency.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from hub.load import load_model
from hub.registry import MODELS
from serving import fast
from serving.images import load_image
from training.backbones import BACKBONES, create_model
from training.transforms import eval_transform

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


def shipped(warmup: int, repeats: int) -> dict:
    """Each shipped model with its real weights: latency per precision, and bf16's parity on real cells."""
    images = [load_image(p).image for p in sorted(CELLS.glob("*/*/*"))]
    report = {}
    for entry in MODELS:
        if entry.source != str(entry.local_dir):
            continue
        loaded = load_model(entry.source)
        x = torch.stack([loaded.transform(i) for i in images])
        reference, candidate = fast.fp32_runner(loaded.model), fast.bf16_runner(loaded.model)
        check = fast.parity(reference(x).softmax(-1), candidate(x).softmax(-1))
        report[entry.display_name] = {
            "input_size": loaded.model.pretrained_cfg["input_size"][-1],
            "fp32": _time(reference, x[:1], warmup, repeats),
            "bf16": _time(candidate, x[:1], warmup, repeats),
            "bf16_parity": {
                "cells": len(images),
                "same_labels": check.same_labels,
                "max_probability_difference": round(check.max_difference, 4),
            },  # fmt: skip
        }
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)
    image = load_image(CELL).image
    runners = {}
    for backbone in BACKBONES:
        model = create_model(backbone.timm_name, pretrained=False).eval()
        transform = eval_transform(model)
        runners[backbone.display_name] = {"fp32": (fast.fp32_runner(model), transform)}
        if fast.bf16_supported():
            runners[backbone.display_name]["bf16"] = (fast.bf16_runner(model), transform)
    times = {name: {precision: [] for precision in paths} for name, paths in runners.items()}
    for step in range(args.warmup + args.repeats):
        for name, paths in runners.items():
            for precision, (runner, transform) in paths.items():
                start = time.perf_counter()
                runner(transform(image).unsqueeze(0))
                if step >= args.warmup:
                    times[name][precision].append((time.perf_counter() - start) * 1000)
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "repeats": args.repeats,
        "models": {name: {p: _stats(t) for p, t in paths.items()} for name, paths in times.items()},
        "shipped": shipped(args.warmup, args.repeats) if fast.bf16_supported() else {},
        "four_models": {
            p: _stats([sum(times[name][p][i] for name in times) for i in range(args.repeats)])
            for p in next(iter(times.values()))
        },
    }
    OUTPUT.parent.mkdir(exist_ok=True)
    OUTPUT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
