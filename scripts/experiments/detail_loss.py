"""Does a model read the cell's fine detail? Its out-of-fold cells scored as they are and after losing detail.

    python -m scripts.experiments.detail_loss prepared runs/mobilenetv2-cellnorm-cv{0,1,2}/model \
        --output results/large-donors/detail_loss.json   # about 6 minutes on one core

A cell is brought down to 0.75x or 0.5x of its size and back up (bicubic): the same cell, in the same place, at the
detail a camera of coarser resolution would give. A model that normalises each cell to one size sees a large cell
shrunk, with more detail per pixel, and a small one enlarged, with less; if it learned that detail as a sign of
ALL, its P(ALL) falls when detail is lost, and falls most for the cells it over-calls. The shift protocol's
rescaling can't show this: a rescaled copy keeps the detail of the cell it came from. Each fold model (in
``--cv-split`` order) scores :data:`CELLS_PER_FOLD` of its own fold's cells, drawn with seed 0.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from cnmc.calibration import calibrated
from cnmc.decision import calls_all
from cnmc.load import load_model
from training.data import load_prepared
from training.splits import load_assignment

CELLS_PER_FOLD = 500
DETAIL = {"none": None, "detail_0.75": 0.75, "detail_0.5": 0.5}


def soften(image: Image.Image, factor: float) -> Image.Image:
    """``image`` at ``factor`` of its detail: shrunk by ``factor`` and enlarged back to its size."""
    width, height = image.size
    small = image.resize((round(width * factor), round(height * factor)), Image.Resampling.BICUBIC)
    return small.resize((width, height), Image.Resampling.BICUBIC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", help="the prepared copy the fold models trained on")
    parser.add_argument("models", nargs="+", type=Path, help="the fold models' folders, fold 0 first")
    parser.add_argument("--cv-split", default="splits/cnmc_cv3_seed0.json")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    assignment = load_assignment(args.cv_split)
    cells = [
        row
        for split in load_prepared(args.data_dir).values()
        for row in split.select_columns(["image", "patient_id", "label"])
    ]
    random.seed(0)
    scores: dict[str, list[float]] = {name: [] for name in DETAIL}
    labels: list[int] = []
    for fold, folder in enumerate(args.models):
        loaded = load_model(str(folder))
        chosen = [c for c in cells if assignment[c["patient_id"]] == fold]
        chosen = random.sample(chosen, min(CELLS_PER_FOLD, len(chosen)))
        images = [c["image"].convert("RGB") for c in chosen]
        for name, factor in DETAIL.items():
            x = torch.stack([loaded.transform(i if factor is None else soften(i, factor)) for i in images])
            with torch.inference_mode():
                scores[name] += calibrated(loaded.model(x), loaded.temperature)[:, 1].tolist()
        labels += [c["label"] for c in chosen]
    y = np.array(labels)
    base = np.array(scores["none"])
    result = {}
    for name, values in scores.items():
        p = np.array(values)
        called = calls_all(p)
        result[name] = {
            "cells": len(p),
            "roc_auc": float(roc_auc_score(y, p)),
            "specificity": float(1 - called[y == 0].mean()),
            "sensitivity": float(called[y == 1].mean()),
            "mean_change_p_all_hem": float(np.mean(p[y == 0] - base[y == 0])),
            "mean_change_p_all_all": float(np.mean(p[y == 1] - base[y == 1])),
        }
        r = result[name]
        print(
            f"{name}: ROC-AUC {r['roc_auc']:.3f}, specificity {r['specificity']:.3f}, "
            f"sensitivity {r['sensitivity']:.3f}, "
            f"mean change of P(ALL): HEM {r['mean_change_p_all_hem']:+.3f}, ALL {r['mean_change_p_all_all']:+.3f}"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    models = [str(m) for m in args.models]
    args.output.write_text(
        json.dumps({"models": models, "cells_per_fold": CELLS_PER_FOLD, "detail": result}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
