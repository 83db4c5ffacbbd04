"""Load test: start the app, send concurrent gradio_client requests, report errors and latency percentiles.

    python -m benchmarks.app_load [--clients 20] [--requests 10] [--compare-every 4] [--concurrency 1 2] [--no-flips]
                                  [--during-batch 150]

The app (``app.build_demo``, its handlers and queue, launched by ``app.serve``) serves the four models as
models/*/config.json configures them (``benchmarks.configured``: the shipped weights, random ones for a model not
shipped), each through ONNX Runtime where it matches eager fp32 on the fixture cells, as ``python app.py`` serves
them. Each client sends /classify, and every ``--compare-every``-th request /compare with Compare's default members.
Each concurrency limit is one run.

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
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import torch
from gradio_client import Client, handle_file
from PIL import Image

import app
from benchmarks.configured import CELLS, configured
from benchmarks.report import percentiles, save
from cnmc.calibration import calibrated
from serving import batch, fast, images, onnx_runtime
from serving.images import load_image
from serving.predict import ServedModel, default_members
from serving.registry import MODELS

OUTPUT = Path(__file__).resolve().parent / "results" / "app_load.json"


def served(cache: Path) -> list[ServedModel]:
    """The four models, each through ONNX Runtime where it matches eager fp32 on the fixture cells, else fp32."""
    cells = [load_image(p).image for p in sorted(CELLS.rglob("UID_*"))]
    models = []
    for entry in MODELS:
        loaded, weights = configured(entry)
        x = torch.stack([loaded.transform(cell) for cell in cells])
        scale = partial(calibrated, temperature=loaded.temperature)
        runner, why_not = onnx_runtime.onnx_runner(loaded.model, x, scale, cache)
        runner = runner or fast.fp32_runner(loaded.model)
        models.append(ServedModel(entry.display_name, weights, loaded, runner, reason=why_not))
    return models


def client_session(
    url: str, requests: int, model: str, flips: bool, compare_every: int = 0, members: Sequence[str] = ()
) -> tuple[dict[str, list[float]], list[str]]:
    """``requests`` one after another: /classify with ``model``, and every ``compare_every``-th one /compare."""
    client = Client(url, verbose=False)
    times: dict[str, list[float]] = {}
    errors = []
    for i in range(requests):
        cell = handle_file(str(app.EXAMPLES[i % len(app.EXAMPLES)]))
        endpoint = "/compare" if compare_every and i % compare_every == compare_every - 1 else "/classify"
        start = time.perf_counter()
        try:
            if endpoint == "/compare":
                message, _ = client.predict(cell, flips, list(members), api_name=endpoint)
                failed = message.startswith("❌")
            else:
                label, message = client.predict(cell, model, flips, api_name=endpoint)
                failed = not label
            if failed:
                errors.append(message)
        except Exception as error:  # a load test counts every failure, whatever its kind
            errors.append(f"{type(error).__name__}: {error}")
        times.setdefault(endpoint, []).append((time.perf_counter() - start) * 1000)
    return times, errors


def _percentiles(times: Sequence[float]) -> dict:
    return {"requests": len(times), **percentiles(times)}


def run(
    models: list[ServedModel], concurrency: int, clients: int, requests: int, flips: bool, compare_every: int
) -> dict:
    demo = app.build_demo(models, concurrency_limit=concurrency)
    app.serve(demo, server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    members = [m.name for m in default_members(models)]
    try:
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            sessions = list(
                pool.map(
                    lambda _: client_session(demo.local_url, requests, models[0].name, flips, compare_every, members),
                    range(clients),
                )
            )
        wall = time.perf_counter() - start
    finally:
        demo.close()
    by_endpoint: dict[str, list[float]] = {}
    for session, _ in sessions:
        for endpoint, times in session.items():
            by_endpoint.setdefault(endpoint, []).extend(times)
    errors = [e for _, session in sessions for e in session]
    requests_sent = sum(len(t) for t in by_endpoint.values())
    return {
        "concurrency_limit": concurrency,
        "requests": requests_sent,
        "errors": len(errors),
        "first_errors": errors[:3],
        **{endpoint: _percentiles(times) for endpoint, times in sorted(by_endpoint.items())},
        "throughput_per_s": round(requests_sent / wall, 2),
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
            times += session["/classify"]
            errors += failures
        _, _, _, message = job.result()
        batch_s = time.perf_counter() - start + 3
    finally:
        demo.close()
    return {
        "upload_bytes": archive.stat().st_size,
        "batch_message": message,
        "batch_seconds": round(batch_s, 1),
        "errors": len(errors),
        "first_errors": errors[:3],
        **_percentiles(times),
        "max_ms": round(max(times), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--compare-every", type=int, default=4, help="every Nth request is /compare; 0: none")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--flips", action=argparse.BooleanOptionalAction, default=app.FLIPS_DEFAULT, help="as the app's switch"
    )
    parser.add_argument("--during-batch", type=float, default=150, help="seconds of /classify per worst-case batch")
    args = parser.parse_args(argv)
    # The CPU may be shared: a load average above its core count at the start means the numbers are disturbed.
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory() as folder:
        models = served(Path(folder))
        report = {
            "cpu_cores": os.cpu_count(),
            "load_average_at_start": load_at_start,
            "models": {
                m.name: {"weights": m.source, "runtime": m.runner.precision, "why_not_onnx": m.reason} for m in models
            },
            "clients": args.clients,
            "requests_per_client": args.requests,
            "classify_model": models[0].name,
            "compare_every": args.compare_every,
            "compare_members": [m.name for m in default_members(models)],
            "flips": args.flips,
            "runs": [
                run(models, c, args.clients, args.requests, args.flips, args.compare_every) for c in args.concurrency
            ],
            "during_worst_case_batch": {
                "target_p95_ms": 2000,
                **{
                    name: during_batch(models, archive, args.during_batch, args.flips)
                    for name, archive in worst_case_batches(Path(folder)).items()
                },
            },
        }
    save(report, OUTPUT)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
