"""The cell-size baseline: how well the cell's area alone tells ALL from HEM, on the same patient folds.

    python -m training.size_baseline --data-dir PATH --cv-split splits/cnmc_cv3_seed0.json --output DIR
    python -m training.size_baseline ... --predictions runs/X-all/eval_predictions.csv

Lymphoblasts are larger than normal lymphocytes, and the best preset's fixed crop keeps a cell's size, so a
model can score well by measuring size alone. For each fold of the committed assignment this fits a logistic
regression on the log of the cell's area on the other folds' patients, class-weighted as the best preset's
loss is, and predicts the fold's cells; the pooled out-of-fold predictions are scored with the project's
metrics (DIR/eval.json, with its plots and predictions beside it).

With --predictions (a model's pooled out-of-fold predictions, e.g. the ``eval_predictions.csv`` that
``training.crossval`` writes into the final run) it also measures how far that model's score follows the area,
and plots each patient's mean cell area against the model's mean P(ALL): ``size_dependence.json`` and
``patients_by_size.png`` beside the predictions, where the model card finds them. A model that learned more than
size keeps a ROC-AUC well above 0.5 among cells of the same size.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import datasets
import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.base import ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from cnmc import runs
from cnmc.cells import cell_mask
from cnmc.decision import calls_all
from training import atomic
from training.compare import METRICS, mean_sd
from training.data import CNMCDataError, add_data_arguments, load_from_args
from training.evaluate import report, run_relative, summary, write_rows_report
from training.plots import plot_patients_by_size
from training.shifts import COLUMN_PREFIX, SHIFT_NAMES, SHIFTS, Shift, columns_of, shift_report
from training.splits import load_assignment, split_cv_fold

MODEL_NAME = "cell area alone (logistic regression)"
# Cells are compared with cells of about the same size: 20 equal-count bins of ~5 % of the cells each.
SIZE_BINS = 20
# The share of healthy donors, by mean cell area, whose cells stand in for a new acquisition batch's larger healthy
# cells (results/large-donors/): the synthetic rescales of the shift protocol can't show how a model does on them.
LARGE_CELL_SHARE = 1 / 3


def cell_area(image) -> float:
    """The fraction of the image the cell covers: pixels whose brightest channel is off the black background."""
    return float(cell_mask(np.asarray(image.convert("RGB"))).mean())


def add_cell_area(
    dataset_dict: datasets.DatasetDict, num_proc: int | None = None, shifts: Sequence[Shift] = SHIFTS
) -> datasets.DatasetDict:
    """Each split with a ``cell_area`` column, and ``cell_area@NAME`` for each of ``shifts`` (the cell's area
    after that shift), decoding every image once, with a progress bar."""

    def measure(batch: dict) -> dict:
        measured = {"cell_area": [cell_area(image) for image in batch["image"]]}
        for shift in shifts:
            measured[f"cell_area@{shift.name}"] = [cell_area(shift(image)) for image in batch["image"]]
        return measured

    return dataset_dict.map(measure, batched=True, batch_size=64, num_proc=num_proc, desc="Measuring cell areas")


def shifted_view(dataset: datasets.Dataset, shift: str) -> datasets.Dataset:
    """``dataset`` with every measured column ``C`` replaced by ``C@shift``: a feature function reads it unchanged."""
    suffix = f"@{shift}"
    measured = [c.removesuffix(suffix) for c in dataset.column_names if c.endswith(suffix)]
    others = [c for c in dataset.column_names if "@" in c and not c.endswith(suffix)]
    view = dataset.remove_columns(measured + others)
    return view.rename_columns({f"{c}{suffix}": c for c in measured})


def shift_names(dataset: datasets.Dataset) -> list[str]:
    """The shifts whose measurements ``dataset`` holds, in the protocol's order."""
    held = {c.split("@", 1)[1] for c in dataset.column_names if "@" in c}
    return [name for name in SHIFT_NAMES if name in held]


def log_area(dataset: datasets.Dataset) -> np.ndarray:
    """The area baseline's one feature: the log of each cell's area, as an (n, 1) array."""
    area = np.asarray(dataset["cell_area"])
    empty = [p for p, a in zip(dataset["path"], area, strict=True) if a == 0]
    if empty:
        raise CNMCDataError(f"{len(empty)} image(s) are entirely black, so they hold no cell: {empty[:5]}")
    return np.log(area).reshape(-1, 1)


def area_classifier() -> LogisticRegression:
    return LogisticRegression(class_weight="balanced")


def cross_validate(
    dataset_dict: datasets.DatasetDict,
    cv_split: str | Path,
    *,
    features: Callable[[datasets.Dataset], np.ndarray] = log_area,
    classifier: Callable[[], ClassifierMixin] = area_classifier,
    name: str = MODEL_NAME,
) -> tuple[dict, list[dict]]:
    """The pooled out-of-fold evaluation of a per-cell-feature classifier (by default the area baseline), fitted
    afresh on each fold's training patients, and its per-cell rows. The splits need a ``cell_area`` column.

    Where the splits also hold a measurement after a shift of the protocol (``C@NAME``, see :func:`add_cell_area`),
    each fold's fit also scores its cells after that shift (``prob_all@NAME``), and the result gets the protocol's
    section (``shift_protocol``)."""
    rows, folds = [], []
    for fold in sorted(set(load_assignment(cv_split).values())):
        train, val, where = split_cv_fold(dataset_dict, cv_split, fold)
        names = shift_names(val)
        fit = classifier().fit(features(train), train["label"])
        scores = fit.predict_proba(features(val))[:, 1]
        shifted = {f"{COLUMN_PREFIX}{n}": fit.predict_proba(features(shifted_view(val, n)))[:, 1] for n in names}
        labels = torch.tensor(val["label"])
        probs = torch.tensor(np.stack([1 - scores, scores], 1))
        folds.append(
            {"split": where, "patients": sorted(set(val["patient_id"]))} | report(probs, labels, val["patient_id"])
        )
        rows += [
            {"path": p, "patient_id": i, "label": y, "prob_all": float(s), "cell_area": a}
            | {column: float(values[row]) for column, values in shifted.items()}
            for row, (p, i, y, s, a) in enumerate(
                zip(val["path"], val["patient_id"], val["label"], scores, val["cell_area"], strict=True)
            )
        ]
    scores = torch.tensor([r["prob_all"] for r in rows], dtype=torch.float64)
    result = report(
        torch.stack([1 - scores, scores], 1),
        torch.tensor([r["label"] for r in rows]),
        [r["patient_id"] for r in rows],
        model=name,
        split=f"{folds[0]['split'].split(', cv fold')[0]}, out of fold over the {len(folds)} folds of "
        f"{Path(cv_split).name} (each patient scored by a fit that never saw it)",
    )
    result["folds"] = [{k: f[k] for k in ["split", "patients", *METRICS]} for f in folds]
    result["fold_mean_sd"] = {k: mean_sd([f[k] for f in folds]) for k in METRICS}
    shifted = columns_of(rows)
    if shifted:
        result["shift_protocol"] = shift_report(
            [r["label"] for r in rows], [r["patient_id"] for r in rows], [r["prob_all"] for r in rows], shifted
        )
    return result, rows


def _cell_key(path: str) -> str:
    # Cell file names are unique across C-NMC; folders and extensions differ between a download and a copy.
    return Path(path).stem


def read_predictions(path: str | Path, areas: dict[str, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """A model's predictions CSV matched to cell areas: (P(ALL), labels, areas, patient ids)."""
    rows = runs.read_predictions(path)
    missing = [r["path"] for r in rows if _cell_key(r["path"]) not in areas]
    if missing:
        raise CNMCDataError(f"{len(missing)} cell(s) of {path} are not in the data, e.g. {missing[:3]}")
    probs = np.array([float(r["prob_all"]) for r in rows])
    labels = np.array([int(r["label"]) for r in rows])
    return probs, labels, np.array([areas[_cell_key(r["path"])] for r in rows]), [r["patient_id"] for r in rows]


def size_bins(areas: np.ndarray, bins: int = SIZE_BINS) -> np.ndarray:
    """Each cell's bin among ``bins`` equal-count bins of cell area (0 = smallest)."""
    return np.searchsorted(np.quantile(areas, np.linspace(0, 1, bins + 1)[1:-1]), areas)


def matched_size_auc(labels: np.ndarray, scores: np.ndarray, areas: np.ndarray, bins: int = SIZE_BINS) -> float:
    """ROC-AUC among cells of about the same size: within equal-count bins of cell area, weighted by cells."""
    which = size_bins(areas, bins)
    aucs, weights = [], []
    for b in range(bins):
        inside = which == b
        if len(set(labels[inside])) == 2:
            aucs.append(roc_auc_score(labels[inside], scores[inside]))
            weights.append(inside.sum())
    if not aucs:
        raise ValueError(f"No bin of cell sizes holds both classes among these {len(labels)} cells; score more cells.")
    return float(np.average(aucs, weights=weights))


def size_dependence(probs: np.ndarray, labels: np.ndarray, areas: np.ndarray) -> dict:
    """How far a model's score follows the cell's area, and what it knows about cells of the same size."""
    return {
        "cells": len(probs),
        # By rank: a Pearson r on logits hangs on how the few cells at P(ALL) near 0 or 1 are clipped.
        "rank_correlation_score_area": float(spearmanr(probs, areas).statistic),
        "roc_auc_model": float(roc_auc_score(labels, probs)),
        "roc_auc_area_alone": float(roc_auc_score(labels, areas)),
        "size_bins": SIZE_BINS,
        "roc_auc_model_at_matched_size": matched_size_auc(labels, probs, areas),
        "roc_auc_area_alone_at_matched_size": matched_size_auc(labels, areas, areas),
    }


def large_cell_donors(probs: np.ndarray, labels: np.ndarray, areas: np.ndarray, patients: Sequence[str]) -> dict:
    """How a model does on the healthy donors with the largest cells (the top :data:`LARGE_CELL_SHARE` by mean log
    cell area): its specificity on their cells, and the ROC-AUC of their cells against every ALL cell."""
    patients = np.asarray(patients)
    healthy = labels == 0
    donors = sorted(set(patients[healthy]), key=lambda d: np.log(areas[healthy & (patients == d)]).mean(), reverse=True)
    chosen = donors[: max(1, round(len(donors) * LARGE_CELL_SHARE))]
    theirs = healthy & np.isin(patients, chosen)
    against = theirs | (labels == 1)
    return {
        "patients": chosen,
        "cells": int(theirs.sum()),
        "specificity": float(1 - calls_all(probs[theirs]).mean()),
        "roc_auc_against_all": float(roc_auc_score(labels[against], probs[against])) if (labels == 1).any() else None,
    }


def write_baseline(result: dict, rows: list[dict], output: Path) -> None:
    """OUTPUT/eval.json with its plots and predictions, which ``training.compare --baseline`` reads."""
    write_rows_report(result, rows, output / "eval.json")
    print(summary(result, output / "eval.json"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.size_baseline", description=__doc__.split("\n")[0])
    add_data_arguments(parser)
    parser.add_argument(
        "--cv-split", required=True, help="the committed fold assignment, e.g. splits/cnmc_cv3_seed0.json"
    )
    parser.add_argument("--output", required=True, type=Path, help="the baseline's folder: eval.json and its plots")
    parser.add_argument("--predictions", type=Path, help="a model's out-of-fold eval_predictions.csv to test for size")
    parser.add_argument("--num-proc", type=int, help="processes that decode images")
    args = parser.parse_args(argv)
    if args.predictions and args.predictions.parent.resolve() == args.output.resolve():
        parser.error("--output would overwrite the model's own eval.json beside --predictions: choose another folder")
    try:
        dataset_dict = add_cell_area(load_from_args(args), args.num_proc)
        result, rows = cross_validate(dataset_dict, args.cv_split)
        if args.predictions:
            areas = {_cell_key(r["path"]): r["cell_area"] for r in rows}
            probs, labels, cell_areas, patients = read_predictions(args.predictions, areas)
            source = run_relative(args.predictions)  # the card and the Hub show it
            dependence = {"predictions": source} | size_dependence(probs, labels, cell_areas)
            if (labels == 0).any():
                dependence["large_cell_donors"] = large_cell_donors(probs, labels, cell_areas, patients)
    except (CNMCDataError, OSError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    write_baseline(result, rows, args.output)
    if args.predictions:
        atomic.write_text(args.predictions.parent / runs.SIZE_DEPENDENCE, json.dumps(dependence, indent=2) + "\n")
        plot_patients_by_size(
            patients,
            labels,
            cell_areas,
            probs,
            args.predictions.parent / runs.PATIENTS_BY_SIZE,
            title=f"P(ALL) against cell size, per patient\n{source}",
        )
        print(
            f"{source}: rank correlation of P(ALL) with cell area {dependence['rank_correlation_score_area']:.2f}; "
            f"ROC-AUC {dependence['roc_auc_model']:.3f}, area alone {dependence['roc_auc_area_alone']:.3f}, "
            f"among cells of the same size {dependence['roc_auc_model_at_matched_size']:.3f} "
            f"(area alone {dependence['roc_auc_area_alone_at_matched_size']:.3f})"
        )
        if "large_cell_donors" in dependence:
            large = dependence["large_cell_donors"]
            print(
                f"healthy donors with the largest cells ({', '.join(large['patients'])}; {large['cells']} cells): "
                f"specificity {large['specificity']:.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
