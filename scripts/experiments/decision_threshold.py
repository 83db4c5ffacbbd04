"""Experiment: how much of a model's weighted F1 is where it puts the decision threshold?

    python -m scripts.experiments.decision_threshold results/cpu-mobilenetv2-mixup-cv3/all ... \
        --output results/decision-threshold

Each RUN folder holds a pooled out-of-fold ``eval_predictions.csv`` (``training.crossval``, a baseline, an
ensemble). The class-weighted recipes learn P(ALL) as if both classes were equally common, so 0.5 is their
balanced-prior threshold, while weighted F1, the challenge's ranking metric, rewards calling the larger class
(ALL, 68 % of the cells) more often. For each run it scores the cells at 0.5 and at a threshold chosen without
looking at the scored patients: for each fold of the committed split, the threshold with the best weighted F1
on the other two folds' predictions. The best threshold chosen on all of them is shown too, as an upper bound.
Patients are called from the mean P(ALL) of their cells at the same threshold. Writes OUTPUT/thresholds.json and
OUTPUT/thresholds.png (weighted F1 and balanced accuracy against the threshold, one line per run).
"""

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score  # noqa: E402

from cnmc import runs  # noqa: E402
from training import atomic  # noqa: E402
from training.plots import save_figure  # noqa: E402
from training.splits import load_assignment  # noqa: E402

THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.01), 2)


def read_run(run: Path, assignment: dict[str, int]) -> dict[str, np.ndarray]:
    path = runs.predictions_file(runs.report_file(run))
    rows = runs.read_predictions(path)
    missing = sorted({r["patient_id"] for r in rows} - assignment.keys())
    if missing:
        raise ValueError(f"{path}: patients {missing} are in no fold of the split")
    return {
        "label": np.array([int(r["label"]) for r in rows]),
        "score": np.array([float(r["prob_all"]) for r in rows]),
        "patient": np.array([r["patient_id"] for r in rows]),
        "fold": np.array([assignment[r["patient_id"]] for r in rows]),
    }


def weighted_f1(labels: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    return float(f1_score(labels, scores >= threshold, average="weighted"))


def best_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    return float(THRESHOLDS[np.argmax([weighted_f1(labels, scores, t) for t in THRESHOLDS])])


def scores_at(cells: dict[str, np.ndarray], thresholds: np.ndarray) -> dict:
    """Cell metrics with each cell's own threshold, and patients called from their mean P(ALL) at it."""
    labels, called = cells["label"], cells["score"] >= thresholds
    right = [
        (cells["score"][mask].mean() >= thresholds[mask][0]) == bool(labels[mask][0])
        for mask in (cells["patient"] == p for p in np.unique(cells["patient"]))
    ]
    return {
        "f1_weighted": float(f1_score(labels, called, average="weighted")),
        "balanced_accuracy": float(balanced_accuracy_score(labels, called)),
        "recall": float(recall_score(labels, called)),
        "specificity": float(recall_score(labels, called, pos_label=0)),
        "patients_right": int(sum(right)),
        "patients": len(right),
    }


def analyse(cells: dict[str, np.ndarray]) -> dict:
    nested = np.empty(len(cells["label"]))
    chosen = {}
    for fold in np.unique(cells["fold"]):
        held = cells["fold"] == fold
        chosen[int(fold)] = best_threshold(cells["label"][~held], cells["score"][~held])
        nested[held] = chosen[int(fold)]
    best = best_threshold(cells["label"], cells["score"])
    return {
        "at_0.5": scores_at(cells, np.full(len(nested), 0.5)),
        "nested": {"thresholds_by_fold": chosen, **scores_at(cells, nested)},
        "best_in_hindsight": {"threshold": best, **scores_at(cells, np.full(len(nested), best))},
    }


def plot(curves: dict[str, dict[str, np.ndarray]], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    for name, cells in curves.items():
        f1 = [weighted_f1(cells["label"], cells["score"], t) for t in THRESHOLDS]
        balanced = [balanced_accuracy_score(cells["label"], cells["score"] >= t) for t in THRESHOLDS]
        (line,) = axes[0].plot(THRESHOLDS, f1, label=name)
        axes[1].plot(THRESHOLDS, balanced, color=line.get_color())
    for ax, title in zip(axes, ["weighted F1", "balanced accuracy"], strict=True):
        ax.axvline(0.5, color="grey", linestyle=":")
        ax.set(xlabel="threshold on P(ALL)", title=title, ylim=(0.5, 0.9))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower center")
    fig.suptitle("Out-of-fold predictions, 7,108 cells of 42 patients", fontsize=10)
    save_figure(fig, path)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="folders holding pooled eval_predictions.csv")
    parser.add_argument("--cv-split", default="splits/cnmc_cv3_seed0.json")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    assignment = load_assignment(args.cv_split)
    try:
        curves = {run.as_posix().removeprefix("results/"): read_run(run, assignment) for run in args.runs}
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result = {"cv_split": args.cv_split, "runs": {name: analyse(cells) for name, cells in curves.items()}}
    for name, scores in result["runs"].items():
        at, nested = scores["at_0.5"], scores["nested"]
        print(
            f"{name}: weighted F1 {at['f1_weighted']:.3f} at 0.5, {nested['f1_weighted']:.3f} nested "
            f"(thresholds {list(nested['thresholds_by_fold'].values())}); balanced accuracy "
            f"{at['balanced_accuracy']:.3f} -> {nested['balanced_accuracy']:.3f}; patients "
            f"{at['patients_right']} -> {nested['patients_right']}/{at['patients']}"
        )
    atomic.write_text(args.output / "thresholds.json", json.dumps(result, indent=2) + "\n")
    plot(curves, args.output / "thresholds.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
