"""Load test: start the app, send concurrent gradio_client requests, report errors and latency percentiles.

    python -m benchmarks.app_load [--clients 20] [--requests 10] [--concurrency 1 2] [--no-flips]

The app (``app.build_demo``, its handlers and queue) serves randomly initialised models of the chosen backbones
(weights don't change speed). Random weights have nothing to match fp32 on, so each runs in bf16 where the CPU
supports it, the fastest path ``python app.py`` can pick. Each concurrency limit is one run; writes
benchmarks/results/app_load.json.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from gradio_client import Client, handle_file

import app
from benchmarks.report import save
from cnmc.backbones import create_model, resolve_backbone
from cnmc.load import LoadedModel
from cnmc.preprocessing import eval_transform
from serving import fast
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
    demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--backbones", nargs="+", default=["mobilenetv2"])
    parser.add_argument(
        "--flips", action=argparse.BooleanOptionalAction, default=app.FLIPS_DEFAULT, help="as the app's switch"
    )
    args = parser.parse_args(argv)
    models = [served(name) for name in args.backbones]
    report = {
        "clients": args.clients,
        "requests_per_client": args.requests,
        "endpoint": "/classify",
        "model": models[0].name,
        "flips": args.flips,
        "runs": [run(models, c, args.clients, args.requests, args.flips) for c in args.concurrency],
    }
    save(report, OUTPUT)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
