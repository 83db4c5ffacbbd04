"""How steady a model's calibrated P(ALL) stays under changes that should not matter to it.

    python -m benchmarks.model_robustness [--model models/mobilenetv2] \
        [--data-dir PATH [--cv-split splits/cnmc_cv3_seed0.json --cv-fold 0 | --split prelim_test]] [--max-cells N]

Cells have no orientation, and users upload JPEGs and crops that are off by a pixel or two, so flips, a quarter
turn, a 2-pixel shift, JPEG re-encoding and +-0.5 grey levels of noise should leave the verdict alone. For each,
it reports how far P(ALL) moves (mean, p95, max) and how many verdicts (P(ALL) > 0.5) change: on single views
(the app's flip switch off), and averaged over the four flips, as the app serves by default and as
``training.evaluate --tta`` does. Without --data-dir
it uses the repository's fixture cells. Writes benchmarks/results/model_robustness.json.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from benchmarks.report import save
from cnmc.calibration import calibrated
from cnmc.load import LoadedModel, load_model
from cnmc.preprocessing import flip_averaged
from serving.images import load_image
from serving.predict import ALL_INDEX
from training.data import load_cnmc
from training.evaluate import evaluation_split, training_overlap
from training.splits import split_cv_fold

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_CELLS = ROOT / "tests/fixtures/cnmc/C-NMC_Leukemia/training_data"
OUTPUT = Path(__file__).resolve().parent / "results" / "model_robustness.json"


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(buffer).convert("RGB")


PERTURBATIONS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "horizontal flip": lambda image: image.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    "vertical flip": lambda image: image.transpose(Image.Transpose.FLIP_TOP_BOTTOM),
    "quarter turn": lambda image: image.transpose(Image.Transpose.ROTATE_90),
    "2-pixel shift": lambda image: image.transform(image.size, Image.Transform.AFFINE, (1, 0, 2, 0, 1, 0)),
    "JPEG quality 95": lambda image: _jpeg(image, 95),
    "JPEG quality 75": lambda image: _jpeg(image, 75),
}
NOISE = "+-0.5 grey levels of noise"  # added to the transformed tensor, where no rounding can undo it


@torch.inference_mode()
def probabilities(loaded: LoadedModel, images: list[Image.Image], change: str | None, tta: bool) -> np.ndarray:
    """Calibrated P(ALL) of every image after ``change`` (a PERTURBATIONS key, NOISE or None)."""
    std = torch.tensor(loaded.model.pretrained_cfg["std"]).view(1, 3, 1, 1)
    generator = torch.Generator().manual_seed(0)
    out = []
    for start in range(0, len(images), 64):
        batch = images[start : start + 64]
        if change in PERTURBATIONS:
            batch = [PERTURBATIONS[change](image) for image in batch]
        x = torch.stack([loaded.transform(image) for image in batch])
        if change == NOISE:
            x = x + (torch.rand(x.shape, generator=generator) - 0.5) / 255 / std
        p = (
            flip_averaged(lambda v: calibrated(loaded.model(v), loaded.temperature), x)
            if tta
            else calibrated(loaded.model(x), loaded.temperature)
        )
        out.append(p[:, ALL_INDEX])
    return torch.cat(out).numpy()


def _cells(args: argparse.Namespace, loaded: LoadedModel) -> tuple[list[Image.Image], str]:
    if args.data_dir is None:
        return [load_image(p).image for p in sorted(FIXTURE_CELLS.glob("*/*/*"))], "the repository's fixture cells"
    dataset_dict = load_cnmc(args.data_dir, verify=False)
    if args.split:
        dataset, where = evaluation_split(dataset_dict, args.split), f"C-NMC 2019 {'+'.join(args.split)}"
    else:
        _, dataset, where = split_cv_fold(dataset_dict, args.cv_split, args.cv_fold)
    if args.max_cells and args.max_cells < len(dataset):
        dataset = dataset.shuffle(seed=0).select(range(args.max_cells))
    return [image.convert("RGB") for image in dataset["image"]], where + training_overlap(loaded, dataset["patient_id"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/mobilenetv2", help="model folder or Hub id")
    parser.add_argument("--data-dir", help="C-NMC download or prepared copy (default: the fixture cells)")
    parser.add_argument("--cv-split", default=str(ROOT / "splits" / "cnmc_cv3_seed0.json"))
    parser.add_argument("--cv-fold", type=int, default=0, help="whose patients to use (default: cv fold 0) ...")
    parser.add_argument("--split", nargs="+", help="... or these, e.g. prelim_test for a model trained on both folds")
    parser.add_argument("--max-cells", type=int)
    parser.add_argument("--output", default=str(OUTPUT))
    args = parser.parse_args(argv)
    loaded = load_model(args.model)
    loaded.model.eval()
    images, where = _cells(args, loaded)
    report = {"model": args.model, "cells": len(images), "data": where}
    for tta in (False, True):
        reference = probabilities(loaded, images, None, tta)
        rows = {}
        for change in tqdm([*PERTURBATIONS, NOISE], desc="flip-averaged" if tta else "single view"):
            changed = probabilities(loaded, images, change, tta)
            moved = np.abs(changed - reference)
            rows[change] = {
                "mean": round(float(moved.mean()), 4),
                "p95": round(float(np.percentile(moved, 95)), 4),
                "max": round(float(moved.max()), 4),
                "verdicts_changed": int(((changed > 0.5) != (reference > 0.5)).sum()),
            }
        report["averaged over the four flips" if tta else "single view"] = rows
    save(report, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
