"""The stacking experiment on the real fixture cells and the committed CNN's out-of-fold predictions: the cache,
the join, what the averaging variants compute, and that every fit sees only patients it does not score, shifted
cells included."""

import csv
from pathlib import Path

import datasets
import numpy as np
import pytest
from scipy.special import expit

from cnmc import runs
from scripts.experiments import stacking
from tests.conftest import FIXTURES
from training.data import CNMCDataError
from training.shifts import COLUMN_PREFIX, SHIFT_NAMES

ROOT = Path(__file__).resolve().parents[1]
SPLIT = ROOT / "splits" / "cnmc_cv3_seed0.json"
CNN = ROOT / stacking.CNN_PREDICTIONS
POOLED = ["fold_0", "fold_1"]


@pytest.fixture(scope="module")
def committed() -> dict[str, dict]:
    return {Path(r["path"]).stem: r for r in runs.read_predictions(CNN)}


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> datasets.DatasetDict:
    return stacking.measured_cells(FIXTURES, tmp_path_factory.mktemp("cache"), POOLED)


@pytest.fixture(scope="module")
def data(measured) -> datasets.DatasetDict:
    return stacking.with_cnn_scores(measured, CNN)


def test_measurements_are_read_back_from_the_cache(tmp_path, monkeypatch, measured):
    first = stacking.measured_cells(FIXTURES, tmp_path, POOLED)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fold_0.parquet", "fold_1.parquet"]

    def no_measuring(batch):
        raise AssertionError("the cached cells were measured again")

    monkeypatch.setattr(stacking, "measure", no_measuring)
    again = stacking.measured_cells(FIXTURES, tmp_path, POOLED)
    for name in POOLED:
        assert again[name]["path"] == first[name]["path"] == measured[name]["path"]
        assert np.allclose(again[name]["features@red_1.12"], first[name]["features@red_1.12"], equal_nan=True)


def test_each_cell_gets_its_own_committed_cnn_score_and_shifted_scores(data, committed):
    cells = [stem for name in POOLED for stem in map(lambda p: Path(p).stem, data[name]["path"])]
    assert len(cells) == 40 and all(stem in committed for stem in cells)
    split = data["fold_0"]
    row = split["path"].index(next(p for p in split["path"] if Path(p).stem == "UID_11_10_1_all"))
    assert expit(split["cnn"][row]) == pytest.approx(0.811898, abs=1e-6)
    for name in SHIFT_NAMES:
        got = expit(np.array(split[f"cnn@{name}"]))
        want = [float(committed[Path(p).stem][COLUMN_PREFIX + name]) for p in split["path"]]
        assert np.allclose(got, want, atol=2e-6)


def test_a_cell_without_a_cnn_score_is_a_clear_data_error(measured, tmp_path, committed):
    lacking = tmp_path / "eval_predictions.csv"
    kept = [r for stem, r in committed.items() if stem != "UID_H6_10_1_hem"]
    with lacking.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(kept[0]))
        writer.writeheader()
        writer.writerows(kept)
    with pytest.raises(CNMCDataError, match="1 cell.* of fold_0 have no CNN score"):
        stacking.with_cnn_scores(measured, lacking)
    unshifted = tmp_path / "unshifted_predictions.csv"
    unshifted.write_text("path,patient_id,label,prob_all\n" + "".join(f"{r['path']},1,1,0.5\n" for r in kept))
    with pytest.raises(CNMCDataError, match="no CNN score for the shifts"):
        stacking.with_cnn_scores(measured, unshifted)


def test_the_cnn_variant_is_the_committed_cnn_and_the_mean_is_a_mean(data, committed):
    evaluated = stacking.evaluate_variants(data, SPLIT, ["cnn", "features-trees", "mean-cnn-trees"])
    scores = {name: {r["path"]: r["prob_all"] for r in rows} for name, (_, rows) in evaluated.items()}
    for path, p in scores["cnn"].items():
        assert p == pytest.approx(float(committed[Path(path).stem]["prob_all"]), abs=2e-6)
        assert scores["mean-cnn-trees"][path] == pytest.approx((p + scores["features-trees"][path]) / 2)
    result = evaluated["mean-cnn-trees"][0]
    assert set(result["shift_protocol"]["shifts"]) == set(SHIFT_NAMES)
    assert 0 <= result["roc_auc_at_matched_size"] <= 1


def test_each_fit_sees_only_patients_it_does_not_score_and_a_shifted_cell_is_scored_shifted(
    data, committed, monkeypatch
):
    calls = []

    def recording(split):
        calls.append((split["path"], set(split["patient_id"]), np.array(split["cnn"]), stacking.nucleus(split)))
        return stacking.cnn_and_nucleus(split)

    monkeypatch.setitem(stacking.VARIANTS, "probe", ("recorded", recording, stacking.logistic))
    result, _ = stacking.evaluate_variants(data, SPLIT, ["probe"])["probe"]
    everyone = {p for name in POOLED for p in data[name]["patient_id"]}
    per_fold = 2 + len(SHIFT_NAMES)  # the fit's cells, the fold's cells, then the fold's cells after each shift
    assert len(calls) == per_fold * len(result["folds"])
    columns = ["features", *(f"features@{s}" for s in SHIFT_NAMES)]
    measured = {
        (p, c): v for name in POOLED for c in columns for p, v in zip(data[name]["path"], data[name][c], strict=True)
    }
    for fold, start in zip(result["folds"], range(0, len(calls), per_fold), strict=True):
        (_, fitted, _, _), *scored = calls[start : start + per_fold]
        assert not fitted & set(fold["patients"]) and fitted | set(fold["patients"]) == everyone
        for (paths, patients, cnn, features), shift in zip(scored, [None, *SHIFT_NAMES], strict=True):
            assert patients == set(fold["patients"])
            column = "prob_all" if shift is None else COLUMN_PREFIX + shift
            want = [float(committed[Path(p).stem][column]) for p in paths]
            assert np.allclose(expit(cnn), want, atol=2e-6)
            want = [measured[p, "features" if shift is None else f"features@{shift}"] for p in paths]
            assert np.allclose(features, np.array(want, dtype=np.float64), equal_nan=True)
