"""Training images/s per backbone: the real input pipeline against synthetic in-GPU batches (the ceiling).

    python -m benchmarks.train_throughput --data-dir PREPARED_OR_RAW [--backbones mobilenetv2 ...] \
        [--batch-size 128] [--steps 40] [--rounds 3] [--num-workers 8 6] \
        [--output benchmarks/results/train_throughput.json]

The synthetic figure times the model step alone (forward, backward, optimizer; bf16 autocast and
channels_last on a GPU) on one batch already on the device. The pipeline figure feeds the same step as training
does, then the best preset's augmentation on the device, so it can only be lower. Both are measured in the same
run, so their ratio holds whichever card ran it: in ``--rounds`` pairs of windows of ``--steps`` steps, one of each
in turn, because a small model's step is bound by the host launching its kernels, and the host's speed drifts (on
an H200, MobileNetV2's ceiling moved between 4,350 and 6,540 img/s within one process). Each row gives the medians
and the median of the paired ratios. Each backbone gets a row per input:
- ``"input": "decoded every epoch"``, one row per ``--num-workers`` count: the DataLoader decodes on CPU workers
  (workers on every core can starve the main process that launches the GPU's work, so fewer may feed it faster);
- ``"input": "decoded once"``: the cells decoded once into device memory, batches gathered there
  (``training.device_cache``, what training does on a GPU by default); the decoding's seconds are reported once.
The batches alone (``loader_only``) and the augmentation alone are timed too, to show what costs the difference.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import time

import datasets
import torch
import torch.nn.functional as F
from accelerate import Accelerator

from benchmarks.report import save
from cnmc.backbones import BACKBONES, create_model, resolve_backbone
from training.data import load_cnmc
from training.device_cache import DecodedCells
from training.evaluate import make_loader
from training.presets import PRESETS
from training.transforms import BatchAugment, FixedSizeTensor


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _rate(batches, step, device, warmup: int, steps: int, batch_size: int) -> float:
    for batch in itertools.islice(batches, warmup):
        step(batch)
    _sync(device)
    start = time.perf_counter()
    for batch in itertools.islice(batches, steps):
        step(batch)
    _sync(device)
    return steps * batch_size / (time.perf_counter() - start)


def measure(
    name: str, train_set: datasets.Dataset, cells: DecodedCells, args: argparse.Namespace, quiet: bool = False
) -> list[dict]:
    """One row per loader worker count in ``args.num_workers`` and one for ``cells``, each beside the ceiling."""
    backbone = resolve_backbone(name)
    accelerator = Accelerator(mixed_precision="bf16" if torch.cuda.is_available() else "no")
    device = accelerator.device
    model = create_model(backbone.timm_name, pretrained=False, drop_rate=0.25)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    size = backbone.img_size
    augment = BatchAugment(accelerator.unwrap_model(model), PRESETS["best"].augmentation).to(device)

    def step(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        x, y = batch
        x = x.to(device, non_blocking=True)
        if x.dtype == torch.uint8:  # a real batch: augment on the device, as training does
            x = augment(x)
        x = x.contiguous(memory_format=torch.channels_last)
        with accelerator.autocast():
            loss = F.cross_entropy(model(x), y.to(device, non_blocking=True))
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    bs = args.batch_size
    fixed = (torch.randn(bs, 3, size, size, device=device), torch.randint(0, 2, (bs,), device=device))
    width = train_set[0]["image"].width
    inputs = [("decoded every epoch", workers) for workers in args.num_workers] + [("decoded once", 0)]
    rows = []
    for source, workers in inputs:
        if source == "decoded once":
            loader = cells.loader(bs, seed=0)
            # A new pass over the loader each epoch: itertools.cycle would replay its first epoch from memory.
            batches = (cells[index] for _ in itertools.count() for index in loader)
        else:
            loader = make_loader(train_set, FixedSizeTensor(width), bs, shuffle=True, num_workers=workers)
            batches = ((b["pixel_values"], b["labels"]) for _ in itertools.count() for b in loader)
        loader_only = _rate(batches, lambda b: None, device, args.warmup, args.steps, bs)
        # The device-side augmentation alone, on one decoded batch already on the device.
        decoded = next(batches)[0].to(device)
        augment_only = _rate(itertools.repeat(decoded), augment, device, args.warmup, args.steps, bs)
        for batch in itertools.islice(batches, args.warmup):  # this input's first steps start its loader
            step(batch)
        # Each pipeline window first uses up what the workers prefetched while the ceiling's window ran.
        prefetched = 2 * workers
        synthetic, pipeline = [], []
        for _ in range(args.rounds):
            synthetic.append(_rate(itertools.repeat(fixed), step, device, 2, args.steps, bs))
            pipeline.append(_rate(batches, step, device, 2 + prefetched, args.steps, bs))
        ratios = [p / c for p, c in zip(pipeline, synthetic, strict=True)]
        row = {
            "backbone": backbone.timm_name,
            "img_size": size,
            "input": source,
            "num_workers": workers,
            "synthetic_img_per_s": round(statistics.median(synthetic), 1),
            "pipeline_img_per_s": round(statistics.median(pipeline), 1),
            "pipeline_fraction_of_ceiling": round(statistics.median(ratios), 3),
            "fraction_range": [round(min(ratios), 3), round(max(ratios), 3)],
            "loader_only_img_per_s": round(loader_only, 1),
            "augment_only_img_per_s": round(augment_only, 1),
        }
        del batches, loader  # stop this input's workers before the next one's start
        if not quiet:
            print(json.dumps(row))
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--backbones", nargs="+", default=[b.thesis_name for b in BACKBONES])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=40, help="timed steps a window")
    parser.add_argument("--rounds", type=int, default=3, help="pairs of ceiling and pipeline windows per input")
    parser.add_argument("--num-workers", type=int, nargs="+", default=[8, 6])
    parser.add_argument("--output", default="benchmarks/results/train_throughput.json")
    args = parser.parse_args()
    dataset_dict = load_cnmc(args.data_dir, verify=False)
    train_set = datasets.concatenate_datasets([s for n, s in dataset_dict.items() if n.startswith("fold_")])
    # The first measurement of a process reads several times too low on a GPU (one-off start-up costs), so
    # a short untimed pass goes first. It did not always suffice on an H100: naming the first backbone again
    # at the end of --backbones shows whether its first row can be trusted.
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    started = time.perf_counter()
    cells = DecodedCells.decode(train_set, train_set[0]["image"].width, device, num_workers=max(args.num_workers))
    decode_seconds = time.perf_counter() - started
    warm_up = argparse.Namespace(
        **{**vars(args), "warmup": 2, "steps": 5, "rounds": 1, "num_workers": args.num_workers[:1]}
    )
    measure(args.backbones[0], train_set, cells, warm_up, quiet=True)
    output = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
        "torch": torch.__version__,
        "batch_size": args.batch_size,
        "precision": "bf16 autocast, channels_last" if torch.cuda.is_available() else "fp32",
        "decoded_once": {
            "cells": len(train_set),
            "seconds": round(decode_seconds, 1),
            "workers": max(args.num_workers),
        },
        "results": [],
    }
    for name in args.backbones:  # saved after each backbone, so a run cut short keeps what it measured
        output["results"] += measure(name, train_set, cells, args)
        save(output, args.output, show=False)


if __name__ == "__main__":
    main()
