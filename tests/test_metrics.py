"""The C-NMC metric against numbers worked out by hand, and the plots written from it."""

import json
import warnings

import pytest

from training.metrics import cnmc_metric
from training.plots import plot_confusion_matrix, plot_roc, plot_training_curves

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Ten cells from four patients, interleaved. Scores are multiples of 1/16, exact in float32, and each
# prediction is score >= 0.5.
#   patient 3   (ALL): scores .875 .75 .625 .25 -> predicted 1 1 1 0: 3 TP, 1 FN; mean .625  -> ALL (right)
#   patient 7   (ALL): scores .375 .5           -> predicted 0 1:     1 TP, 1 FN; mean .4375 -> HEM (wrong)
#   patient H10 (HEM): scores .125 .25 .75      -> predicted 0 0 1:   2 TN, 1 FP; mean .375  -> HEM (right)
#   patient H22 (HEM): score 0                  -> predicted 0:       1 TN;       mean 0     -> HEM (right)
# Confusion matrix [[TN, FP], [FN, TP]] = [[3, 1], [2, 4]].
CELLS = [
    # (patient, reference, score)
    ("3", 1, 0.875),
    ("H10", 0, 0.125),
    ("7", 1, 0.375),
    ("3", 1, 0.75),
    ("H22", 0, 0.0),
    ("H10", 0, 0.25),
    ("3", 1, 0.625),
    ("7", 1, 0.5),
    ("H10", 0, 0.75),
    ("3", 1, 0.25),
]
INPUTS = {
    "predictions": [int(score >= 0.5) for _, _, score in CELLS],
    "references": [reference for _, reference, _ in CELLS],
    "scores": [score for _, _, score in CELLS],
    "patient_ids": [patient for patient, _, _ in CELLS],
}


def _batch(start: int, stop: int) -> dict:
    return {name: values[start:stop] for name, values in INPUTS.items()}


def test_cell_metrics_match_hand_arithmetic():
    result = cnmc_metric().compute(**INPUTS)
    assert result["confusion_matrix"] == [[3, 1], [2, 4]]
    assert result["num_cells"] == 10
    assert result["accuracy"] == pytest.approx(7 / 10)  # (TN 3 + TP 4) / 10
    assert result["precision"] == pytest.approx(4 / 5)  # TP 4 / (TP 4 + FP 1)
    assert result["recall"] == pytest.approx(4 / 6)  # TP 4 / (TP 4 + FN 2)
    assert result["specificity"] == pytest.approx(3 / 4)  # TN 3 / (TN 3 + FP 1)
    assert result["balanced_accuracy"] == pytest.approx((4 / 6 + 3 / 4) / 2)  # 17/24
    # F1 = 2TP / (2TP + FP + FN). ALL: 8 / (8 + 1 + 2) = 8/11. HEM (TN as its TP): 6 / (6 + 2 + 1) = 2/3.
    assert result["f1_macro"] == pytest.approx((8 / 11 + 2 / 3) / 2)  # 23/33
    assert result["f1_weighted"] == pytest.approx((6 * 8 / 11 + 4 * 2 / 3) / 10)  # by support 6 ALL, 4 HEM
    # AUC = share of (ALL, HEM) cell pairs where the ALL cell scores higher, ties counting 1/2.
    # Against the HEM scores .125 .25 .75 0, the ALL scores win: .875 -> 4, .75 -> 3.5 (tie with .75),
    # .625 -> 3, .25 -> 2.5 (tie with .25), .375 -> 3, .5 -> 3; 19 of 6 x 4 = 24 pairs.
    assert result["roc_auc"] == pytest.approx(19 / 24)


def test_roc_auc_of_four_scores():
    # ALL .35 beats HEM .1 but not HEM .4; ALL .8 beats both: 3 of 4 pairs.
    result = cnmc_metric().compute(
        predictions=[0, 0, 0, 1],
        references=[0, 0, 1, 1],
        scores=[0.1, 0.4, 0.35, 0.8],
        patient_ids=["H1", "H2", "1", "2"],
    )
    assert result["roc_auc"] == pytest.approx(3 / 4)


def test_patient_diagnosis_by_mean_score():
    result = cnmc_metric().compute(**INPUTS)
    assert result["num_patients"] == 4
    assert result["per_patient"] == {
        "3": {"label": "all", "cells": 4, "cell_accuracy": 3 / 4, "mean_score": 0.625, "diagnosis": "all"},
        "7": {"label": "all", "cells": 2, "cell_accuracy": 1 / 2, "mean_score": 0.4375, "diagnosis": "hem"},
        "H10": {
            "label": "hem",
            "cells": 3,
            "cell_accuracy": pytest.approx(2 / 3),
            "mean_score": 0.375,
            "diagnosis": "hem",
        },
        "H22": {"label": "hem", "cells": 1, "cell_accuracy": 1.0, "mean_score": 0.0, "diagnosis": "hem"},
    }
    assert result["patient_accuracy"] == pytest.approx(3 / 4)  # patient 7 is called HEM
    assert result["mean_patient_cell_accuracy"] == pytest.approx((3 / 4 + 1 / 2 + 2 / 3 + 1) / 4)  # 35/48


def test_a_mean_score_of_exactly_one_half_is_called_all():
    result = cnmc_metric().compute(predictions=[0, 1], references=[0, 0], scores=[0.25, 0.75], patient_ids=["H1"] * 2)
    assert result["per_patient"]["H1"]["diagnosis"] == "all"
    assert result["patient_accuracy"] == 0.0


def test_batches_add_up_to_one_shot():
    metric = cnmc_metric()
    metric.add_batch(**_batch(0, 6))
    metric.add_batch(**_batch(6, 10))
    assert metric.compute() == cnmc_metric().compute(**INPUTS)


@pytest.mark.parametrize("label", [0, 1])
def test_one_class_in_references(label):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # zero divisions are scored 0, without sklearn's warnings
        result = cnmc_metric().compute(
            predictions=[label, 1 - label, label], references=[label] * 3, scores=[0.5] * 3, patient_ids=["1"] * 3
        )
    assert result["roc_auc"] is None
    matrix = [[0, 0], [0, 0]]
    matrix[label] = [2, 1] if label == 0 else [1, 2]
    assert result["confusion_matrix"] == matrix
    assert result["balanced_accuracy"] == pytest.approx(2 / 3)  # the recall of the one class present


def test_result_is_plain_json():
    result = cnmc_metric().compute(**INPUTS)
    assert json.loads(json.dumps(result)) == result  # no numpy scalars, no tuples


def test_patient_with_both_labels_is_refused():
    inputs = _batch(0, 10)
    inputs["patient_ids"][1] = "3"  # a HEM cell filed under ALL patient 3
    with pytest.raises(ValueError, match="Patient '3' has cells labelled both"):
        cnmc_metric().compute(**inputs)


def test_unlabelled_cells_are_refused():
    inputs = _batch(0, 10)
    inputs["references"][0] = -1
    with pytest.raises(ValueError, match="unlabelled"):
        cnmc_metric().compute(**inputs)


def test_no_examples_is_refused():
    with pytest.raises(ValueError, match="No examples"):
        cnmc_metric().compute()
    with pytest.raises(ValueError, match="No examples"):
        cnmc_metric().compute(predictions=[], references=[], scores=[], patient_ids=[])


def _assert_png(path):
    assert path.is_file() and path.read_bytes()[:8] == PNG_SIGNATURE


def test_plots_write_png_files(tmp_path):
    result = cnmc_metric().compute(**INPUTS)
    _assert_png(plot_confusion_matrix(result["confusion_matrix"], tmp_path / "confusion.png", title="fold 0"))
    _assert_png(plot_roc({"model": (INPUTS["references"], INPUTS["scores"])}, tmp_path / "roc.png"))
    overlay = {
        "model a": (INPUTS["references"], INPUTS["scores"]),
        "model b": ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]),
        "one class": ([1, 1], [0.2, 0.9]),  # skipped, noted in the legend
    }
    _assert_png(plot_roc(overlay, tmp_path / "overlay" / "roc.png", title="fold 0"))
    rows = [
        {"epoch": 1, "train_loss": 0.7, "val_loss": 0.6, "train_accuracy": 0.6, "val_accuracy": None},
        {"epoch": 2, "train_loss": 0.5, "val_loss": 0.55, "train_accuracy": 0.7, "val_accuracy": 0.65},
        {"epoch": 3, "train_loss": 0.4, "val_loss": 0.5, "train_f1_weighted": 0.8, "val_f1_weighted": 0.7},
    ]
    _assert_png(plot_training_curves(rows, tmp_path / "curves.png"))
