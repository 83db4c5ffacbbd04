"""The decision-threshold experiment, on the shipped recipe's committed out-of-fold predictions."""

import json
from pathlib import Path

import pytest

from scripts.experiments.decision_threshold import analyse, read_run
from training.splits import load_assignment

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "results" / "cpu-mobilenetv2-mixup-cv3" / "all"


@pytest.fixture(scope="module")
def cells():
    return read_run(RUN, load_assignment(ROOT / "splits" / "cnmc_cv3_seed0.json"))


def test_at_one_half_it_scores_as_the_committed_evaluation(cells):
    committed = json.loads((RUN / "eval.json").read_text())
    at_half = analyse(cells)["at_0.5"]
    for name in ("f1_weighted", "balanced_accuracy", "recall", "specificity"):
        assert at_half[name] == pytest.approx(committed[name], abs=1e-6)
    assert at_half["patients_right"] / at_half["patients"] == pytest.approx(committed["patient_accuracy"])


def test_a_folds_threshold_is_chosen_without_its_own_cells(cells):
    chosen = analyse(cells)["nested"]["thresholds_by_fold"]
    # Turn fold 0's scores upside down: its own threshold must not move, the other folds' must see it.
    flipped = {**cells, "score": cells["score"].copy()}
    held = cells["fold"] == 0
    flipped["score"][held] = 1 - flipped["score"][held]
    moved = analyse(flipped)["nested"]["thresholds_by_fold"]
    assert moved[0] == chosen[0]
    assert moved[1] != chosen[1] or moved[2] != chosen[2]
