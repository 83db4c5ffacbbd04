"""Healthy donors with large cells: the natural shift inside fold_0/fold_1 that the synthetic protocol can't make.

    python -m scripts.experiments.large_donors prepared --output results/large-donors   # about a minute

On the 13 donors of the new acquisition batch, healthy cells are larger than in fold_0/fold_1 (mean log area
-1.82 against -2.10), and the shipped model over-called them. Our own healthy donors differ in size too: the third
of them with the largest cells come close to that batch (``training.size_baseline.large_cell_donors`` picks
them). This scores every committed out-of-fold predictions file of :data:`RECIPES` on those donors' cells
(specificity, and ROC-AUC against all ALL cells) beside the other healthy donors', and measures how far P(ALL)
follows the cell's area within each class (Spearman), which the shift protocol's rescaling of one image can't show:
a rescaled copy keeps the detail of the cell it came from.
Writes OUTPUT/large_donors.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from cnmc import runs
from cnmc.decision import calls_all
from training.data import load_prepared
from training.size_baseline import cell_area, large_cell_donors

# Recipe -> the folder of its pooled out-of-fold predictions (eval_predictions.csv.gz), as committed.
RECIPES = {
    "cell area alone": "results/size-baseline",
    "12 colour, texture and shape statistics, trees": "results/handcrafted-baseline",
    "shipped MobileNetV2 recipe, seed 0": "results/cpu-mobilenetv2-mildcolour-cv3/seed0/pooled",
    "InceptionV3, 12 epochs": "results/cpu-inceptionv3-cv3/e12-seed0/pooled",
    "VGG19, 224 px": "results/gpu-h200-vgg19-cv3/all",
    "mean of MobileNetV2, InceptionV3 and VGG19": "results/ensembles/mobilenetv2-inceptionv3-vgg19",
    "MobileNetV2 on size- and stain-normalised cells": "results/cpu-mobilenetv2-cellnorm-cv3/pooled",
    "14 nucleus features, trees": "results/nucleus-features",
    "mean of those two": "results/stacking",
}


def cell_areas(data_dir: str) -> dict[str, tuple[str, int, float]]:
    """Cell name -> (patient, label, the share of the frame the cell covers)."""
    areas = {}
    for split in load_prepared(data_dir).values():
        for row in split.select_columns(["path", "patient_id", "label", "image"]):
            areas[Path(row["path"]).stem] = (row["patient_id"], row["label"], cell_area(row["image"]))
    return areas


def score(folder: Path, areas: dict) -> dict:
    rows = runs.read_predictions(runs.predictions_file(runs.report_file(folder)))
    p = np.array([float(r["prob_all"]) for r in rows])
    y = np.array([int(r["label"]) for r in rows])
    patients = np.array([r["patient_id"] for r in rows])
    area = np.array([areas[Path(r["path"]).stem][2] for r in rows])  # by rank, as log area would be
    large = large_cell_donors(p, y, area, patients)
    called = calls_all(p)
    other = (y == 0) & ~np.isin(patients, large["patients"])
    within_patients = [
        spearmanr(p[patients == d], area[patients == d]).statistic
        for d in np.unique(patients)
        if (patients == d).sum() > 20
    ]
    return {
        "predictions": str(folder),
        "large_cell_donors": large,
        "specificity": float(1 - called[y == 0].mean()),
        "specificity_other_healthy_donors": float(1 - called[other].mean()),
        "sensitivity": float(called[y == 1].mean()),
        "rank_correlation_with_area_hem": float(spearmanr(p[y == 0], area[y == 0]).statistic),
        "rank_correlation_with_area_all": float(spearmanr(p[y == 1], area[y == 1]).statistic),
        "rank_correlation_with_area_within_patients_median": float(np.median(within_patients)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", help="a prepared copy of C-NMC (python -m training.data prepare)")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    areas = cell_areas(args.data_dir)
    results = {name: score(Path(folder), areas) for name, folder in RECIPES.items()}
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "large_donors.json").write_text(json.dumps(results, indent=2) + "\n")
    large = next(iter(results.values()))["large_cell_donors"]  # the same donors for every recipe: the same cells
    print(f"large-cell healthy donors: {', '.join(large['patients'])} ({large['cells']} cells)")
    print(
        "| recipe | specificity | large-cell donors | other healthy donors | sensitivity "
        "| AUC large-cell donors vs ALL | rho(P, area) HEM | ALL | within patients |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['specificity']:.3f} | {r['large_cell_donors']['specificity']:.3f} | "
            f"{r['specificity_other_healthy_donors']:.3f} | {r['sensitivity']:.3f} | "
            f"{r['large_cell_donors']['roc_auc_against_all']:.3f} | {r['rank_correlation_with_area_hem']:+.2f} | "
            f"{r['rank_correlation_with_area_all']:+.2f} | "
            f"{r['rank_correlation_with_area_within_patients_median']:+.2f} |"
        )


if __name__ == "__main__":
    main()
