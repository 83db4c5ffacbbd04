"""Would a bias on the logit, beside the temperature, serve unseen patients better? Cross-fitted, so honest.

    python -m benchmarks.calibration_crossfit \
        [--predictions results/cpu-mobilenetv2-zerohead-cv3/all/eval_predictions.csv.gz] \
        [--cv-split splits/cnmc_cv3_seed0.json]

Takes a cross-validation's pooled out-of-fold predictions (``training.crossval``). For each fold it fits the
calibration on the other folds' predictions only and applies it to this fold's, then scores all cells: raw,
temperature scaling (what ``training.calibrate`` fits now, which never changes a verdict at 0.5), and Platt
scaling (a temperature and a bias, i.e. a logistic regression on the logit, which also moves the threshold:
class-weighted training balances the classes, while ALL outnumbers HEM about 2:1).
Writes benchmarks/results/calibration_crossfit.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, recall_score

from benchmarks.report import save
from cnmc.calibration import calibrated_prob_all
from training.calibrate import ece, fit_temperature, logits, nll
from training.splits import load_assignment

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = Path(__file__).resolve().parent / "results" / "calibration_crossfit.json"


def _platt(train_logits: np.ndarray, train_labels: np.ndarray) -> LogisticRegression:
    return LogisticRegression(C=1e6).fit(train_logits[:, None], train_labels)


def _scores(labels: np.ndarray, p: np.ndarray) -> dict:
    called = (p > 0.5).astype(int)
    return {
        "f1_weighted": round(f1_score(labels, called, average="weighted"), 4),
        "accuracy": round(accuracy_score(labels, called), 4),
        "balanced_accuracy": round(balanced_accuracy_score(labels, called), 4),
        "sensitivity": round(recall_score(labels, called, pos_label=1), 4),
        "specificity": round(recall_score(labels, called, pos_label=0), 4),
        "nll": round(nll(labels, p), 4),
        "ece": round(ece(labels, p), 4),
    }


def crossfit(predictions: pd.DataFrame, assignment: dict[str, int]) -> dict:
    labels = predictions["label"].to_numpy()
    raw = predictions["prob_all"].to_numpy()
    fold = predictions["patient_id"].astype(str).map(assignment).to_numpy()
    temperature, platt = np.zeros_like(raw), np.zeros_like(raw)
    fitted = {}
    for k in sorted(set(fold)):
        fit, held = fold != k, fold == k
        t = fit_temperature(labels[fit], raw[fit])
        temperature[held] = calibrated_prob_all(raw[held], t)
        model = _platt(logits(raw[fit]), labels[fit])
        platt[held] = model.predict_proba(logits(raw[held])[:, None])[:, 1]
        fitted[f"fold {k}"] = {
            "temperature": round(t, 3),
            "platt_temperature": round(1 / model.coef_[0, 0], 3),
            "platt_bias": round(float(model.intercept_[0]), 3),
        }
    return {
        "cells": len(labels),
        "fitted on the other folds": fitted,
        "raw": _scores(labels, raw),
        "temperature": _scores(labels, temperature),
        "temperature + bias (Platt)": _scores(labels, platt),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shipped_then = ROOT / "results/cpu-mobilenetv2-zerohead-cv3/all/eval_predictions.csv.gz"
    parser.add_argument("--predictions", default=shipped_then)
    parser.add_argument("--cv-split", default=ROOT / "splits/cnmc_cv3_seed0.json")
    parser.add_argument("--output", default=OUTPUT)
    args = parser.parse_args(argv)
    report = {
        "predictions": Path(args.predictions).name,
        **crossfit(pd.read_csv(args.predictions), load_assignment(args.cv_split)),
    }
    save(report, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
