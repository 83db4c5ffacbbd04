"""C-NMC 2019 metrics as a local ``evaluate`` module, cell- and patient-level.

Metrics on the Hub are scripts that ``evaluate.load`` downloads; this one ships with the project, so evaluation
works offline. Use :func:`cnmc_metric` to get an instance.
"""

from __future__ import annotations

from collections import defaultdict

import datasets
import evaluate
import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from cnmc.cells import CLASS_NAMES, UNKNOWN_LABEL
from cnmc.decision import diagnoses_all

ALL_LABEL = CLASS_NAMES.index("all")
HEM_LABEL = CLASS_NAMES.index("hem")
LABELS = [HEM_LABEL, ALL_LABEL]

_DESCRIPTION = """Metrics for ALL (label 1) vs HEM (label 0) white-blood-cell classification on C-NMC 2019.
Cell level: accuracy, weighted F1 (the challenge's ranking metric), macro F1, precision and recall (sensitivity)
for ALL, specificity (recall of HEM), balanced accuracy, ROC AUC and the confusion matrix.
Patient level: each patient gets one call, ALL if the mean ALL probability of its cells is >= 0.5, else HEM."""

_CITATION = """Gupta, A., & Gupta, R. (2019). ALL Challenge dataset of ISBI 2019 [Data set].
The Cancer Imaging Archive. https://doi.org/10.7937/tcia.2019.dc64i46r"""

_INPUTS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted class per cell, 0 = HEM, 1 = ALL.
    references (`list` of `int`): true class per cell, 0 = HEM, 1 = ALL (-1, unlabelled, is refused).
    scores (`list` of `float`): predicted probability of ALL per cell, in [0, 1].
    patient_ids (`list` of `str`): the patient each cell comes from.
Returns:
    accuracy, f1_weighted, f1_macro, precision, recall, specificity, balanced_accuracy, roc_auc (None if the
    references hold one class only), confusion_matrix (rows true [hem, all], columns predicted [hem, all]),
    patient_accuracy, mean_patient_cell_accuracy, per_patient, num_cells, num_patients.
"""


class CNMCMetrics(evaluate.Metric):
    """Cell- and patient-level C-NMC metrics; every value in the result is plain JSON.

    Create it with ``keep_in_memory=True`` (or :func:`cnmc_metric`): by default ``evaluate`` stages the inputs in
    an Arrow file with a lock under the Hugging Face metrics cache, which parallel runs would contend for.
    """

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_INPUTS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("int64"),
                    "references": datasets.Value("int64"),
                    "scores": datasets.Value("float32"),
                    "patient_ids": datasets.Value("string"),
                }
            ),
            reference_urls=["https://doi.org/10.7937/tcia.2019.dc64i46r"],
        )

    def compute(self, **kwargs) -> dict:
        """Score everything added so far plus any inputs given here (all keyword arguments)."""
        # evaluate itself fails with an AttributeError when nothing was ever added.
        if self.writer is None and all(kwargs.get(name) is None for name in self._feature_names()):
            raise ValueError("No examples to score: add predictions, references, scores and patient_ids first.")
        return super().compute(**kwargs)

    def _compute(
        self,
        predictions: list[int],
        references: list[int],
        scores: list[float],
        patient_ids: list[str],
    ) -> dict:
        y_pred = np.asarray(predictions, dtype=np.int64)
        y_true = np.asarray(references, dtype=np.int64)
        # float32 on the way in; average in float64 so a patient's mean of exactly 0.5 stays 0.5.
        y_score = np.asarray(scores, dtype=np.float64)
        _check_inputs(y_pred, y_true, y_score, patient_ids)

        present = sorted(set(y_true.tolist()))
        result = {
            "accuracy": float(accuracy_score(y_true, y_pred)),
            "f1_weighted": float(f1_score(y_true, y_pred, labels=LABELS, average="weighted", zero_division=0)),
            "f1_macro": float(f1_score(y_true, y_pred, labels=LABELS, average="macro", zero_division=0)),
            "precision": float(precision_score(y_true, y_pred, pos_label=ALL_LABEL, zero_division=0)),
            "recall": float(recall_score(y_true, y_pred, pos_label=ALL_LABEL, zero_division=0)),
            "specificity": float(recall_score(y_true, y_pred, pos_label=HEM_LABEL, zero_division=0)),
            # What balanced_accuracy_score computes (mean recall over the classes present), minus its warning
            # when the predictions hold a class the references lack.
            "balanced_accuracy": float(recall_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
            "roc_auc": float(roc_auc_score(y_true, y_score)) if len(present) == 2 else None,
            "confusion_matrix": confusion_matrix(y_true, y_pred, labels=LABELS).tolist(),
        }
        per_patient = _per_patient(y_pred, y_true, y_score, patient_ids)
        result["patient_accuracy"] = float(np.mean([p["diagnosis"] == p["label"] for p in per_patient.values()]))
        result["mean_patient_cell_accuracy"] = float(np.mean([p["cell_accuracy"] for p in per_patient.values()]))
        result["per_patient"] = per_patient
        result["num_cells"] = len(y_true)
        result["num_patients"] = len(per_patient)
        return result


def cnmc_metric() -> CNMCMetrics:
    """A :class:`CNMCMetrics` that keeps its inputs in memory: no cache files, safe in several processes."""
    return CNMCMetrics(keep_in_memory=True)


def _check_inputs(y_pred: np.ndarray, y_true: np.ndarray, y_score: np.ndarray, patient_ids: list[str]) -> None:
    if len(y_true) == 0:
        raise ValueError("No examples to score: add predictions, references, scores and patient_ids first.")
    if not len(y_pred) == len(y_true) == len(y_score) == len(patient_ids):
        raise ValueError(
            f"Inputs differ in length: {len(y_pred)} predictions, {len(y_true)} references, "
            f"{len(y_score)} scores, {len(patient_ids)} patient_ids."
        )
    if (y_true == UNKNOWN_LABEL).any():
        raise ValueError(
            f"{int((y_true == UNKNOWN_LABEL).sum())} reference(s) are {UNKNOWN_LABEL} (unlabelled cells, e.g. the "
            "final test phase); they cannot be scored."
        )
    for name, values in (("references", y_true), ("predictions", y_pred)):
        if not np.isin(values, LABELS).all():
            raise ValueError(f"{name} must be 0 (HEM) or 1 (ALL); got {sorted(set(values.tolist()) - set(LABELS))}")
    if not ((y_score >= 0) & (y_score <= 1)).all():  # also catches NaN
        raise ValueError("scores must be probabilities of ALL in [0, 1] (softmax them if they are logits).")
    if any(not patient for patient in patient_ids):
        raise ValueError("Every cell needs a patient_id: patient-level metrics group cells by patient.")


def _per_patient(
    y_pred: np.ndarray, y_true: np.ndarray, y_score: np.ndarray, patient_ids: list[str]
) -> dict[str, dict]:
    rows: dict[str, list[int]] = defaultdict(list)
    for row, patient in enumerate(patient_ids):
        rows[patient].append(row)
    per_patient = {}
    for patient in sorted(rows):
        cells = rows[patient]
        labels = set(y_true[cells].tolist())
        if len(labels) > 1:
            raise ValueError(f"Patient {patient!r} has cells labelled both hem and all; a patient has one label.")
        mean_score = float(y_score[cells].mean())
        per_patient[patient] = {
            "label": CLASS_NAMES[labels.pop()],
            "cells": len(cells),
            "cell_accuracy": float((y_pred[cells] == y_true[cells]).mean()),
            "mean_score": mean_score,
            "diagnosis": CLASS_NAMES[ALL_LABEL if diagnoses_all(mean_score) else HEM_LABEL],
        }
    return per_patient
