"""Temperature scaling fitted on validation patients, saved beside the model as calibration.json.

    python -m training.calibrate --predictions runs/X/eval_predictions.csv [more.csv ...] --model-dir runs/X/model

The predictions must come from patients the model never trained on: its own validation run, or for a
model trained on everything, the out-of-fold predictions of the cross-validation runs of the same recipe.
Training calls this on its own validation predictions at the end of every validated run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar

from cnmc import runs
from cnmc.calibration import calibrated_prob_all
from cnmc.export import CALIBRATION_NAME
from training import atomic
from training.evaluate import run_relative


def read_predictions(paths: list[str | Path]) -> tuple[np.ndarray, np.ndarray]:
    labels, scores = [], []
    for path in paths:
        for row in runs.read_predictions(path):
            labels.append(int(row["label"]))
            scores.append(float(row["prob_all"]))
    if not labels:
        raise ValueError(f"No predictions in {', '.join(map(str, paths))}")
    return np.asarray(labels), np.asarray(scores)


def logits(scores: np.ndarray) -> np.ndarray:
    p = np.clip(scores, 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)  # for two classes, the softmax is a sigmoid of the logit difference


def nll(labels: np.ndarray, scores: np.ndarray) -> float:
    p = np.clip(scores, 1e-7, 1 - 1e-7)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log1p(-p)))


def ece(labels: np.ndarray, scores: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of the predicted class's confidence."""
    confidence = np.maximum(scores, 1 - scores)
    correct = (scores >= 0.5) == (labels == 1)
    edges = np.linspace(0.5, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    return float(
        sum(
            abs(correct[which == b].mean() - confidence[which == b].mean()) * (which == b).mean()
            for b in range(bins)
            if (which == b).any()
        )
    )


def fit_temperature(labels: np.ndarray, scores: np.ndarray) -> float:
    result = minimize_scalar(
        lambda log_t: nll(labels, calibrated_prob_all(scores, math.exp(log_t))), bounds=(-3, 3), method="bounded"
    )
    return math.exp(result.x)


def calibrate(predictions: list[str | Path], model_dir: str | Path) -> dict:
    labels, scores = read_predictions(predictions)
    temperature = fit_temperature(labels, scores)
    after = calibrated_prob_all(scores, temperature)
    record = {
        "temperature": temperature,
        "fitted_on": [run_relative(p) for p in predictions],
        "cells": int(len(labels)),
        "nll_before": nll(labels, scores),
        "nll_after": nll(labels, after),
        "ece_before": ece(labels, scores),
        "ece_after": ece(labels, after),
    }
    atomic.write_text(Path(model_dir) / CALIBRATION_NAME, json.dumps(record, indent=2) + "\n")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.calibrate", description=__doc__.split("\n")[0])
    parser.add_argument("--predictions", nargs="+", required=True, help="eval_predictions.csv of unseen patients")
    parser.add_argument("--model-dir", required=True)
    args = parser.parse_args(argv)
    try:
        record = calibrate(args.predictions, args.model_dir)
    except (OSError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"temperature {record['temperature']:.3f} on {record['cells']} cells: NLL {record['nll_before']:.4f} -> "
        f"{record['nll_after']:.4f}, ECE {record['ece_before']:.4f} -> {record['ece_after']:.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
