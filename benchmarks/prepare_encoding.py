"""Measure the prepared copy's size and decode cost per encoding, to pick `prepare`'s defaults.

    python -m benchmarks.prepare_encoding --data-dir PATH [--sample 300]

Prints a table and writes benchmarks/results/prepare_encoding.json. The 64 MiB budget of a GPU run
holds the code, the wheels and the data, so the whole 7,108-cell copy should stay near 40 MiB.
"""

import argparse
import io
import random
import time

import numpy as np
from PIL import Image

from benchmarks.report import save
from training.data import load_cnmc

OPTIONS = [
    ("WEBP", 90, 320),
    ("WEBP", 95, 320),
    ("WEBP", 95, 420),
    ("JPEG", 90, 320),
    ("JPEG", 95, 320),
    ("JPEG", 90, 256),
    ("PNG", 0, 320),
]


def psnr(a: Image.Image, b: Image.Image) -> float:
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return float(10 * np.log10(255**2 / max(np.mean(diff**2), 1e-12)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--sample", type=int, default=300)
    parser.add_argument("--output", default="benchmarks/results/prepare_encoding.json")
    args = parser.parse_args()
    dataset_dict = load_cnmc(args.data_dir, verify=False)
    total = sum(len(split) for split in dataset_dict.values())
    paths = [p for split in dataset_dict.values() for p in split["path"]]
    sample = random.Random(0).sample(paths, min(args.sample, len(paths)))
    originals = [Image.open(p).convert("RGB") for p in sample]
    results = []
    for fmt, quality, size in OPTIONS:
        blobs, fidelity = [], []
        for image in originals:
            buffer = io.BytesIO()
            resized = image.resize((size, size), Image.Resampling.BICUBIC)
            resized.save(buffer, format=fmt, quality=quality)
            blobs.append(buffer.getvalue())
            fidelity.append(psnr(resized, Image.open(io.BytesIO(blobs[-1])).convert("RGB")))
        start = time.perf_counter()
        for blob in blobs:
            Image.open(io.BytesIO(blob)).load()
        decode_ms = (time.perf_counter() - start) / len(blobs) * 1000
        mean_bytes = sum(map(len, blobs)) / len(blobs)
        results.append(
            {
                "format": fmt,
                "quality": quality,
                "size": size,
                "kib_per_image": round(mean_bytes / 1024, 1),
                "all_cells_mib": round(mean_bytes * total / 2**20, 1),
                "decode_ms": round(decode_ms, 3),
                "psnr_db": round(float(np.mean(fidelity)), 1),
            }
        )
        print(
            f"{fmt:5} q{quality:<3} {size}px  {mean_bytes / 1024:6.1f} KiB/img  "
            f"{mean_bytes * total / 2**20:6.1f} MiB for {total} cells  decode {decode_ms:.2f} ms  "
            f"PSNR {np.mean(fidelity):.1f} dB"
        )
    save({"cells": total, "sample": len(sample), "results": results}, args.output, show=False)


if __name__ == "__main__":
    main()
