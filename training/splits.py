"""Patient-disjoint train/validation splits. Every helper checks that no patient sits on both sides.

python -m training.splits make-cv --data-dir PATH --k 3 --seed 0 --output splits/cnmc_cv3_seed0.json
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import datasets
import numpy as np
from sklearn.model_selection import StratifiedGroupKFold


class PatientLeakError(ValueError):
    """The same patient's cells are on both sides of a split."""


def assert_patient_disjoint(train: datasets.Dataset, val: datasets.Dataset) -> None:
    shared = set(train["patient_id"]) & set(val["patient_id"])
    if shared:
        raise PatientLeakError(
            f"{len(shared)} patient(s) are in both train and validation: {sorted(shared)}. "
            "Cells of one patient are highly correlated, so such a split overstates accuracy on new patients."
        )


def split_by_folds(
    dataset_dict: datasets.DatasetDict, train_folds: list[str], val_folds: list[str]
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Train on some official folds, validate on others."""
    missing = [f for f in train_folds + val_folds if f not in dataset_dict]
    if missing:
        raise ValueError(f"Fold(s) {missing} not in the data; available: {list(dataset_dict)}")
    if set(train_folds) & set(val_folds):
        raise PatientLeakError(f"Fold(s) {sorted(set(train_folds) & set(val_folds))} are on both sides.")
    train = datasets.concatenate_datasets([dataset_dict[f] for f in train_folds])
    val = datasets.concatenate_datasets([dataset_dict[f] for f in val_folds])
    assert_patient_disjoint(train, val)
    return train, val


def make_cv_assignment(dataset: datasets.Dataset, k: int, seed: int) -> dict[str, int]:
    """Assign each patient to one of ``k`` label-stratified, patient-grouped folds."""
    labels = np.asarray(dataset["label"])
    if (labels < 0).any():
        raise ValueError("Cross-validation needs labelled cells; this data has unlabelled ones.")
    groups = np.asarray(dataset["patient_id"])
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    assignment = {}
    for fold, (_, val_index) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
        for patient in set(groups[val_index]):
            assignment[str(patient)] = fold
    return dict(sorted(assignment.items()))


def split_by_assignment(
    dataset: datasets.Dataset, assignment: dict[str, int], val_fold: int
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Validate on the patients assigned to ``val_fold``, train on the rest."""
    unassigned = sorted(set(dataset["patient_id"]) - set(assignment))
    if unassigned:
        raise ValueError(f"Patients {unassigned} have no fold in the assignment; remake it for this data.")
    in_val = [assignment[p] == val_fold for p in dataset["patient_id"]]
    val = dataset.select([i for i, v in enumerate(in_val) if v])
    train = dataset.select([i for i, v in enumerate(in_val) if not v])
    if len(val) == 0 or len(train) == 0:
        raise ValueError(f"Fold {val_fold} leaves an empty side (train {len(train)}, val {len(val)} cells).")
    assert_patient_disjoint(train, val)
    return train, val


def split_cv_fold(
    dataset_dict: datasets.DatasetDict, assignment_path: str | Path, val_fold: int
) -> tuple[datasets.Dataset, datasets.Dataset, str]:
    """Train and validation sets of one fold of a committed assignment, and a description of the validation side."""
    meta = json.loads(Path(assignment_path).read_text())
    missing = [s for s in meta["pooled_splits"] if s not in dataset_dict]
    if missing:
        raise ValueError(f"{assignment_path} pools {missing}, which the data lacks; available: {list(dataset_dict)}")
    pooled = datasets.concatenate_datasets([dataset_dict[s] for s in meta["pooled_splits"]])
    train, val = split_by_assignment(pooled, load_assignment(assignment_path), val_fold)
    where = f"C-NMC 2019 {'+'.join(meta['pooled_splits'])}, cv fold {val_fold} of {Path(assignment_path).name}"
    return train, val, where


def split_random_cells(
    dataset: datasets.Dataset, val_fraction: float, seed: int, *, allow_patient_leak: bool = False
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """A cell-level random split. It leaks patients, so it exists only behind an explicit flag."""
    if not allow_patient_leak:
        raise PatientLeakError(
            "A random cell split puts cells of the same patient on both sides. "
            "Use official folds or a patient-grouped k-fold; pass allow_patient_leak=True only to "
            "reproduce leaky published numbers."
        )
    warnings.warn(
        "Random cell-level split: the same patients are in train and validation, so validation "
        "scores overstate accuracy on new patients.",
        stacklevel=2,
    )
    parts = dataset.train_test_split(test_size=val_fraction, seed=seed, stratify_by_column="label")
    return parts["train"], parts["test"]


def save_assignment(assignment: dict[str, int], path: str | Path, **meta) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({**meta, "patients": assignment}, indent=2) + "\n")


def load_assignment(path: str | Path) -> dict[str, int]:
    return json.loads(Path(path).read_text())["patients"]


def main(argv: list[str] | None = None) -> None:
    from training.data import add_data_arguments, load_from_args

    parser = argparse.ArgumentParser(prog="python -m training.splits", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make_cv = commands.add_parser("make-cv", help="fix a patient-grouped, stratified k-fold assignment")
    add_data_arguments(make_cv)
    make_cv.add_argument("--splits", nargs="+", default=["fold_0", "fold_1"], help="data splits to pool")
    make_cv.add_argument("--k", type=int, default=3)
    make_cv.add_argument("--seed", type=int, default=0)
    make_cv.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    dataset_dict = load_from_args(args)
    pooled = datasets.concatenate_datasets([dataset_dict[s] for s in args.splits])
    assignment = make_cv_assignment(pooled, args.k, args.seed)
    save_assignment(assignment, args.output, k=args.k, seed=args.seed, pooled_splits=args.splits)
    for fold in range(args.k):
        val = [i for i, p in enumerate(pooled["patient_id"]) if assignment[p] == fold]
        labels = np.asarray(pooled["label"])[val]
        patients = sorted(p for p, f in assignment.items() if f == fold)
        print(
            f"cv fold {fold}: {len(patients)} patients, {int((labels == 1).sum())} ALL / "
            f"{int((labels == 0).sum())} HEM cells: {', '.join(patients)}"
        )


if __name__ == "__main__":
    main()
