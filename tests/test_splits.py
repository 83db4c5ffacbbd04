"""Patient-disjoint splitting: every helper refuses to put one patient on both sides."""

from pathlib import Path

import datasets
import pytest
from conftest import FIXTURES

from training.splits import (
    PatientLeakError,
    assert_patient_disjoint,
    load_assignment,
    main,
    make_cv_assignment,
    save_assignment,
    split_by_assignment,
    split_by_folds,
    split_random_cells,
)


def test_official_folds_are_patient_disjoint(cnmc):
    train, val = split_by_folds(cnmc, ["fold_0"], ["fold_1"])
    assert (len(train), len(val)) == (24, 16)
    with pytest.raises(PatientLeakError):
        split_by_folds(cnmc, ["fold_0", "fold_1"], ["fold_1"])
    with pytest.raises(ValueError, match="fold_2"):
        split_by_folds(cnmc, ["fold_0"], ["fold_2"])


def test_a_patient_in_two_official_folds_is_refused(cnmc):
    """Disjoint fold names are not enough: a data mistake can put one patient's cells in both folds."""
    stray = cnmc["fold_0"].filter(lambda row: row["patient_id"] == "11").select([0])
    mixed = datasets.DatasetDict(
        {"fold_0": cnmc["fold_0"], "fold_1": datasets.concatenate_datasets([cnmc["fold_1"], stray])}
    )
    with pytest.raises(PatientLeakError, match=r"in both train and validation: \['11'\]"):
        split_by_folds(mixed, ["fold_0"], ["fold_1"])


def test_leak_is_detected_and_named(cnmc):
    fold_0 = cnmc["fold_0"]
    with pytest.raises(PatientLeakError, match=r"\['11'\]"):
        assert_patient_disjoint(fold_0, fold_0.filter(lambda row: row["patient_id"] == "11"))


def test_grouped_stratified_cv_covers_each_patient_once(cnmc, tmp_path):
    pooled = datasets.concatenate_datasets([cnmc["fold_0"], cnmc["fold_1"]])
    assignment = make_cv_assignment(pooled, k=2, seed=0)
    assert set(assignment) == set(pooled["patient_id"]) and set(assignment.values()) == {0, 1}
    save_assignment(assignment, tmp_path / "cv.json", k=2, seed=0)
    assert load_assignment(tmp_path / "cv.json") == assignment
    seen = []
    for fold in range(2):
        train, val = split_by_assignment(pooled, assignment, fold)
        assert set(val["label"]) == {0, 1}  # stratified: both classes in every validation fold
        seen += val["path"]
    assert sorted(seen) == sorted(pooled["path"])
    assert make_cv_assignment(pooled, k=2, seed=0) == assignment


def test_assignment_must_cover_the_data(cnmc):
    with pytest.raises(ValueError, match="no fold in the assignment"):
        split_by_assignment(cnmc["fold_0"], {"3": 0}, 0)


def test_random_cell_split_needs_the_flag_and_warns(cnmc):
    with pytest.raises(PatientLeakError):
        split_random_cells(cnmc["fold_0"], 0.25, seed=0)
    with pytest.warns(UserWarning, match="overstate"):
        train, val = split_random_cells(cnmc["fold_0"], 0.25, seed=0, allow_patient_leak=True)
    assert len(train) + len(val) == 24


def test_make_cv_command_writes_the_assignment_it_prints(cnmc, tmp_path, capsys):
    output = tmp_path / "cv.json"
    main(["make-cv", "--data-dir", str(FIXTURES), "--no-verify", "--k", "2", "--seed", "0", "--output", str(output)])
    pooled = datasets.concatenate_datasets([cnmc["fold_0"], cnmc["fold_1"]])
    assert load_assignment(output) == make_cv_assignment(pooled, k=2, seed=0)
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in printed] == ["cv fold 0", "cv fold 1"]


def test_the_committed_assignment_puts_both_classes_in_every_fold():
    """splits/cnmc_cv3_seed0.json: all 42 patients of fold_0 and fold_1, each fold with ALL and healthy (H) donors."""
    assignment = load_assignment(Path(__file__).parents[1] / "splits" / "cnmc_cv3_seed0.json")
    assert len(assignment) == 42 and set(assignment.values()) == {0, 1, 2}
    for fold in range(3):
        patients = [p for p, f in assignment.items() if f == fold]
        assert any(p.startswith("H") for p in patients) and not all(p.startswith("H") for p in patients)
