"""What an input size costs each backbone on 2 CPU threads: the app's forward pass and a training step.

    python -m benchmarks.input_size [--backbones vgg19 resnet101v2] [--sizes 96 112 128 160 224]

For each backbone (as ``cnmc.backbones`` builds it, random weights: speed doesn't depend on weight values) and
input size: the batch-1 forward pass in ONNX Runtime fp32 as the app serves it (``serving.onnx_runtime``), p50 and
p95 over ``--repeats`` calls; and, up to ``--train-max-size``, training images/s at the recipe's batch on the CPU
(AdamW, fp32, no augmentation: the step alone). Compare's 150 ms single-view target is what the latency is read
against; the training rate decides what a CPU can train in one session. Writes benchmarks/results/input_size.json.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.report import percentiles, save
from cnmc.backbones import create_model
from serving import onnx_runtime
from training.presets import PRESETS

THREADS = 2
OUTPUT = Path(__file__).resolve().parent / "results" / "input_size.json"


def _latency(model: torch.nn.Module, size: int, cache: Path, repeats: int) -> dict:
    session = onnx_runtime.session(onnx_runtime.export(model, (3, size, size), cache), THREADS)
    x = torch.randn(1, 3, size, size)
    times = []
    for step in range(repeats + 3):
        start = time.perf_counter()
        session(x)
        if step >= 3:  # the first calls allocate
            times.append((time.perf_counter() - start) * 1000)
    return percentiles(times)


def _training_rate(model: torch.nn.Module, size: int, batch: int, steps: int) -> float:
    model.train()
    optimizer = torch.optim.AdamW(model.parameters())
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 2, (batch,))
    for step in range(steps + 1):
        if step == 1:  # the first step allocates
            start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return round(batch * steps / (time.perf_counter() - start), 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["vgg19", "resnet101v2"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[96, 112, 128, 160, 224])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--train-steps", type=int, default=2)
    parser.add_argument("--train-max-size", type=int, default=160, help="larger sizes: latency only")
    parser.add_argument("--output", default=str(OUTPUT))
    args = parser.parse_args(argv)
    torch.set_num_threads(THREADS)
    batch = PRESETS["best"].batch_size
    report = {
        "threads": THREADS,
        "torch": torch.__version__,
        "load_average_1min_at_start": round(os.getloadavg()[0], 2),
        "training_batch": batch,
        "backbones": {},
    }
    with tempfile.TemporaryDirectory() as cache:
        for name in args.backbones:
            rows = report["backbones"][name] = {}
            for size in args.sizes:
                model = create_model(name, pretrained=False, img_size=size).eval()
                row = rows[str(size)] = {"onnx_forward": _latency(model, size, Path(cache), args.repeats)}
                if size <= args.train_max_size:
                    row["train_img_per_s"] = _training_rate(model, size, batch, args.train_steps)
                print(name, size, row, flush=True)
    report["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    save(report, args.output, show=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
