"""The app's inference latency at batch 1 on 2 threads: eager PyTorch against ONNX Runtime, in alternating rounds.

    python -m benchmarks.app_latency [--rounds 30]

The four models as models/*/config.json configures them (architecture, its arguments, input size, transform): a
shipped model with its weights, the others built by timm from their config with random weights (latency doesn't
depend on weight values). Per model: the bare forward pass of a transformed cell, and the app's path for one cell
(``serving.predict.predict``: transform, forward, calibration), single-view and flip-averaged (the 4 flips as one
batch). Compare: the four in a row as the Compare tab runs them, with its ratio to the sum of the four bare forward
passes of the same runtime in the same run, against the target of a single-view p50 of at most 150 ms.

Runtimes: eager PyTorch fp32 (and bf16 where the CPU has it) and ONNX Runtime fp32 as ``serving.onnx_runtime``
serves it (exported now, to an empty cache, so the export's time is what a first start pays). Each round times
every runtime once, in an order that alternates between rounds, so that the load of a shared CPU falls on all alike;
the load average at the start and end is recorded. Parity: ONNX Runtime's logits and probabilities against eager
fp32's on every fixture cell. Writes benchmarks/results/app_latency.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import onnxruntime
import torch

from benchmarks.configured import CELLS, configured
from benchmarks.report import percentiles, save
from cnmc.calibration import calibrated
from cnmc.load import LoadedModel
from serving import fast, onnx_runtime
from serving.images import load_image
from serving.predict import ServedModel, predict
from serving.registry import MODELS

THREADS = 2
TARGET_MS = 150  # Compare's single-view p50 for the four models, transforms included
CELL = CELLS / "training_data/fold_0/all/UID_3_2_1_all.webp"
OUTPUT = Path(__file__).resolve().parent / "results" / "app_latency.json"
EAGER, ONNX = "PyTorch fp32", "ONNX Runtime fp32"
VIEWS = ("bare forward", "single view", "flip-averaged")


def _onnx(loaded: LoadedModel, cache: Path) -> tuple[fast.Runner, dict]:
    size = tuple(loaded.model.pretrained_cfg["input_size"])
    start = time.perf_counter()
    path = onnx_runtime.export(loaded.model, size, cache)
    exported = time.perf_counter()
    runner = fast.Runner(onnx_runtime.PRECISION, onnx_runtime.session(path, THREADS))
    timing = {"export_s": round(exported - start, 1), "session_s": round(time.perf_counter() - exported, 2)}
    return runner, timing | {"file_mb": round(path.stat().st_size / 1e6, 1)}


def _parity(loaded: LoadedModel, runner: fast.Runner, images: list) -> dict:
    x = torch.stack([loaded.transform(i) for i in images])
    reference, candidate = fast.fp32_runner(loaded.model)(x), runner(x)
    check = fast.parity(calibrated(reference, loaded.temperature), calibrated(candidate, loaded.temperature))
    return {
        "cells": len(images),
        "max_abs_logit_difference": float(f"{(reference - candidate).abs().max():.2g}"),
        "max_probability_difference": float(f"{check.max_difference:.2g}"),
        "same_labels": check.same_labels,
        "within_tolerance": check.ok,
    }


def _ratio(slow: dict, fast_: dict) -> float:
    return round(slow["p50_ms"] / fast_["p50_ms"], 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(THREADS)
    load_at_start = os.getloadavg()
    image = load_image(CELL).image
    images = [load_image(p).image for p in sorted(CELLS.rglob("UID_*"))]
    served = {EAGER: {}, ONNX: {}} | ({"PyTorch bf16": {}} if fast.bf16_supported() else {})
    about, bare_inputs = {}, {}
    with tempfile.TemporaryDirectory() as cache:
        for entry in MODELS:
            loaded, weights = configured(entry)
            name = entry.display_name
            onnx_runner, onnx_timing = _onnx(loaded, Path(cache))
            runners = {EAGER: fast.fp32_runner(loaded.model), ONNX: onnx_runner}
            if "PyTorch bf16" in served:
                runners["PyTorch bf16"] = fast.bf16_runner(loaded.model)
            for runtime, runner in runners.items():
                served[runtime][name] = ServedModel(name, weights, loaded, runner)
            bare_inputs[name] = loaded.transform(image).unsqueeze(0)
            about[name] = {
                "weights": weights,
                "input_size": loaded.model.pretrained_cfg["input_size"][-1],
                "parameters_m": round(sum(p.numel() for p in loaded.model.parameters()) / 1e6, 1),
                "onnx": onnx_timing | {"parity_on_fixture_cells": _parity(loaded, onnx_runner, images)},
            }
    # runtime -> what -> times; "what" is a model's bare forward, its app path, or the whole Compare.
    times = {runtime: {} for runtime in served}
    for step in range(args.warmup + args.rounds):
        for runtime in list(served)[:: 1 if step % 2 == 0 else -1]:
            record = times[runtime]
            for name, model in served[runtime].items():
                start = time.perf_counter()
                model.runner(bare_inputs[name])
                record.setdefault((name, "bare forward"), []).append((time.perf_counter() - start) * 1000)
            for flips, view in ((False, "single view"), (True, "flip-averaged")):
                start = time.perf_counter()
                for name, model in served[runtime].items():
                    record.setdefault((name, view), []).append(predict(model, image, flips=flips).latency_ms)
                record.setdefault(("Compare", view), []).append((time.perf_counter() - start) * 1000)
    stats = {
        runtime: {key: percentiles(values[args.warmup :], digits=2) for key, values in record.items()}
        for runtime, record in times.items()
    }
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {THREADS} threads",
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "rounds": args.rounds,
        "load_average_1min": {"start": round(load_at_start[0], 2), "end": round(os.getloadavg()[0], 2)},
        "note": "Models not shipped have random weights: latency doesn't depend on weight values.",
        "models": about,
        "per_model": {
            name: {runtime: {v: stats[runtime][(name, v)] for v in VIEWS} for runtime in served} for name in about
        },
        "compare": {},
    }
    for runtime in served:
        bare_sum = sum(stats[runtime][(name, "bare forward")]["p50_ms"] for name in about)
        single, flipped = stats[runtime][("Compare", "single view")], stats[runtime][("Compare", "flip-averaged")]
        report["compare"][runtime] = {
            "single view": single,
            "flip-averaged": flipped,
            "sum_of_bare_forward_p50_ms": round(bare_sum, 2),
            "single_view_p50_over_bare_sum": round(single["p50_ms"] / bare_sum, 2),
            f"single_view_p50_meets_{TARGET_MS}_ms": single["p50_ms"] <= TARGET_MS,
        }
    speedup = {name: {v: _ratio(stats[EAGER][(name, v)], stats[ONNX][(name, v)]) for v in VIEWS} for name in about}
    speedup["Compare"] = {v: _ratio(stats[EAGER][("Compare", v)], stats[ONNX][("Compare", v)]) for v in VIEWS[1:]}
    report["onnx_speedup_over_eager_p50"] = speedup
    save(report, OUTPUT)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
