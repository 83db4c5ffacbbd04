"""Experiment: how much do simple colour, texture and shape statistics know beyond the cell's size?

    python -m scripts.experiments.handcrafted prepared --output results/handcrafted-baseline

For each cell, from the pixels off the black background: the log of its area, the mean and spread of each
colour channel, three grey-level quantiles, the mean gradient magnitude (texture) and the elongation of its
outline. Gradient-boosted trees are cross-validated on the committed patient folds exactly as the area baseline
is (``training.size_baseline``), and scored under the shift protocol (``training.shifts``): OUTPUT/eval.json,
its plots and predictions, for ``training.compare --baseline``. OUTPUT/size_dependence.json puts them to the
size test, beside the same trees without the area and each statistic's own ROC-AUC among cells of the same size
(either direction). If the statistics rank cells of
the same size well above chance, there is a signal beyond size that a CNN could learn.
"""

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from cnmc import runs
from cnmc.cells import cell_mask
from training import atomic
from training.data import CNMCDataError, load_cnmc
from training.shifts import SHIFTS
from training.size_baseline import cross_validate, matched_size_auc, size_dependence, write_baseline

NAME = "colour, texture and shape statistics (gradient-boosted trees)"
STATISTICS = ["log_area", "mean_r", "mean_g", "mean_b", "std_r", "std_g", "std_b"]
STATISTICS += ["grey_q10", "grey_q50", "grey_q90", "gradient", "elongation"]


def statistics(image, path: str) -> list[float]:
    """The cell's statistics, in the order of :data:`STATISTICS`."""
    rgb = np.asarray(image.convert("RGB"))
    cell = cell_mask(rgb)
    pixels = rgb.astype(np.float32) / 255
    if cell.sum() < 2:
        raise CNMCDataError(f"{path} is (almost) entirely black, so it holds no cell")
    colour, grey = pixels[cell], pixels.mean(-1)
    ys, xs = np.nonzero(cell)
    spread = np.linalg.eigvalsh(np.cov(np.stack([xs, ys])))  # ascending
    return [
        float(np.log(cell.mean())),
        *colour.mean(0).tolist(),
        *colour.std(0).tolist(),
        *np.quantile(grey[cell], [0.1, 0.5, 0.9]).tolist(),
        float(np.hypot(*np.gradient(grey))[cell].mean()),
        float(np.sqrt(spread[1] / max(spread[0], 1e-9))),
    ]


def trees() -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(class_weight="balanced", random_state=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_dir", help="C-NMC_Leukemia, or a prepared copy of it")
    parser.add_argument("--cv-split", default="splits/cnmc_cv3_seed0.json")
    parser.add_argument("--output", type=Path, required=True, help="the baseline's folder")
    args = parser.parse_args()

    def measure(batch: dict) -> dict:
        pairs = list(zip(batch["image"], batch["path"], strict=True))
        stats = [statistics(image, path) for image, path in pairs]
        measured = {"stats": stats, "cell_area": [float(np.exp(s[0])) for s in stats]}
        for shift in SHIFTS:  # the same cells after each shift of the protocol, scored by the same fits
            measured[f"stats@{shift.name}"] = [statistics(shift(image), path) for image, path in pairs]
        return measured

    data = load_cnmc(args.data_dir, verify=False).map(measure, batched=True, desc="Measuring cells")
    result, rows = cross_validate(
        data, args.cv_split, features=lambda split: np.array(split["stats"]), classifier=trees, name=NAME
    )
    write_baseline(result, rows, args.output)
    _, no_area = cross_validate(
        data, args.cv_split, features=lambda split: np.array(split["stats"])[:, 1:], classifier=trees
    )
    labels, areas = np.array([r["label"] for r in rows]), np.array([r["cell_area"] for r in rows])
    pooled = np.concatenate([np.array(data[s]["stats"]) for s in data])
    pooled_labels = np.concatenate([data[s]["label"] for s in data])
    each = {n: matched_size_auc(pooled_labels, pooled[:, i], np.exp(pooled[:, 0])) for i, n in enumerate(STATISTICS)}
    dependence = size_dependence(np.array([r["prob_all"] for r in rows]), labels, areas) | {
        "without_the_area": size_dependence(np.array([r["prob_all"] for r in no_area]), labels, areas),
        "each_statistic_at_matched_size": {n: round(max(auc, 1 - auc), 3) for n, auc in each.items()},
    }
    atomic.write_text(args.output / runs.SIZE_DEPENDENCE, json.dumps(dependence, indent=2) + "\n")
    for label, d in (("all statistics", dependence), ("without the area", dependence["without_the_area"])):
        print(
            f"{label}: ROC-AUC {d['roc_auc_model']:.3f}, among cells of the same size "
            f"{d['roc_auc_model_at_matched_size']:.3f}"
        )


if __name__ == "__main__":
    main()
