"""Load test: start the app, send concurrent gradio_client requests, report errors and latency percentiles.

    python -m benchmarks.app_load [--clients 20] [--requests 10] [--concurrency 1 2] [--no-flips] [--during-batch 150]

The app (``app.build_demo``, its handlers and queue, launched by ``app.serve``) serves randomly initialised models
of the chosen backbones (weights don't change speed). Random weights have nothing to match fp32 on, so each runs in
bf16 where the CPU supports it, the fastest path ``python app.py`` can pick. Each concurrency limit is one run.

Then, for each worst-case batch, one client sends /classify one request after another while the batch runs (for at
most ``--during-batch`` seconds), against the target of a p95 of at most 2 s: a .zip of 1,000 one-bit PNGs of the
largest size accepted (under a kilobyte each, 4 megapixels decoded), and a .zip of 1,000 real cells (which runs into
the batch's time limit). Writes benchmarks/results/app_load.json.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from gradio_client import Client, handle_file
from PIL import Image

import app
from benchmarks.report import save
from cnmc.backbones import create_model, resolve_backbone
from cnmc.load import LoadedModel
from cnmc.preprocessing import eval_transform
from serving import batch, fast, images
from serving.predict import ServedModel

OUTPUT = Path(__file__).resolve().parent / "results" / "app_load.json"


def served(name: str) -> ServedModel:
    backbone = resolve_backbone(name)
    model = create_model(backbone.timm_name, pretrained=False).eval()
    runner = fast.bf16_runner(model) if fast.bf16_supported() else fast.fp32_runner(model)
    loaded = LoadedModel(model, eval_transform(model), ["hem", "all"], Path("."), None)
    return ServedModel(backbone.display_name, "random", loaded, runner)


def client_session(url: str, requests: int, model: str, flips: bool) -> tuple[list[float], list[str]]:
    client = Client(url, verbose=False)
    times, errors = [], []
    for i in range(requests):
        start = time.perf_counter()
        try:
            label, message = client.predict(
                handle_file(str(app.EXAMPLES[i % len(app.EXAMPLES)])), model, flips, api_name="/classify"
            )
            if not label:
                errors.append(message)
        except Exception as error:  # a load test counts every failure, whatever its kind
            errors.append(f"{type(error).__name__}: {error}")
        times.append((time.perf_counter() - start) * 1000)
    return times, errors


def run(models: list[ServedModel], concurrency: int, clients: int, requests: int, flips: bool) -> dict:
    demo = app.build_demo(models, concurrency_limit=concurrency)
    app.serve(demo, server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    try:
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            sessions = list(
                pool.map(lambda _: client_session(demo.local_url, requests, models[0].name, flips), range(clients))
            )
        wall = time.perf_counter() - start
    finally:
        demo.close()
    times = [t for session, _ in sessions for t in session]
    errors = [e for _, session in sessions for e in session]
    return {
        "concurrency_limit": concurrency,
        "requests": len(times),
        "errors": len(errors),
        "first_errors": errors[:3],
        "p50_ms": round(float(np.percentile(times, 50)), 1),
        "p95_ms": round(float(np.percentile(times, 95)), 1),
        "throughput_per_s": round(len(times) / wall, 2),
    }


def worst_case_batches(folder: Path) -> dict[str, Path]:
    """The two batches that hold the server longest: cheap uploads that decode big, and many real cells."""
    side = math.isqrt(images.MAX_PIXELS)
    png = io.BytesIO()
    Image.new("1", (side, side)).save(png, "PNG")
    one_bit = (".png", png.getvalue())
    cells = [(p.suffix, p.read_bytes()) for p in app.EXAMPLES]
    contents = {
        f"{batch.MAX_FILES} one-bit {side}x{side} PNGs ({len(one_bit[1])} bytes each)": lambda i: one_bit,
        f"{batch.MAX_FILES} real 450x450 cells": lambda i: cells[i % len(cells)],
    }
    archives = {}
    for index, (name, content) in enumerate(contents.items()):
        archives[name] = folder / f"batch_{index}.zip"
        with zipfile.ZipFile(archives[name], "w", zipfile.ZIP_DEFLATED) as z:
            for i in range(batch.MAX_FILES):
                suffix, data = content(i)
                z.writestr(f"{i}{suffix}", data)
    return archives


def during_batch(models: list[ServedModel], archive: Path, seconds: float, flips: bool) -> dict:
    """/classify latency, one request after another, while ``archive`` runs as a batch."""
    demo = app.build_demo(models)
    app.serve(demo, server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    try:
        job = Client(demo.local_url, verbose=False).submit([handle_file(str(archive))], flips, api_name="/batch")
        time.sleep(3)  # the upload is done and the batch is running
        start = time.perf_counter()
        times, errors = [], []
        while not job.done() and time.perf_counter() - start < seconds:
            session, failures = client_session(demo.local_url, 1, models[0].name, flips)
            times += session
            errors += failures
        _, _, _, message = job.result()
        batch_s = time.perf_counter() - start + 3
    finally:
        demo.close()
    return {
        "upload_bytes": archive.stat().st_size,
        "batch_message": message,
        "batch_seconds": round(batch_s, 1),
        "classify_requests": len(times),
        "errors": len(errors),
        "first_errors": errors[:3],
        "p50_ms": round(float(np.percentile(times, 50)), 1),
        "p95_ms": round(float(np.percentile(times, 95)), 1),
        "max_ms": round(max(times), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--backbones", nargs="+", default=["mobilenetv2"])
    parser.add_argument(
        "--flips", action=argparse.BooleanOptionalAction, default=app.FLIPS_DEFAULT, help="as the app's switch"
    )
    parser.add_argument("--during-batch", type=float, default=150, help="seconds of /classify per worst-case batch")
    args = parser.parse_args(argv)
    models = [served(name) for name in args.backbones]
    report = {
        # The CPU may be shared: a load average above its core count at the start means the numbers are disturbed.
        "cpu_cores": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "clients": args.clients,
        "requests_per_client": args.requests,
        "endpoint": "/classify",
        "model": models[0].name,
        "flips": args.flips,
        "runs": [run(models, c, args.clients, args.requests, args.flips) for c in args.concurrency],
    }
    with tempfile.TemporaryDirectory() as folder:
        report["during_worst_case_batch"] = {
            "target_p95_ms": 2000,
            **{
                name: during_batch(models, archive, args.during_batch, args.flips)
                for name, archive in worst_case_batches(Path(folder)).items()
            },
        }
    save(report, OUTPUT)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
