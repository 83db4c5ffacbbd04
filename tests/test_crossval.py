"""Pooling a cross-validation's out-of-fold predictions into the final model's evaluation, on real fixture cells."""

import csv
import json
import shutil
from pathlib import Path

import pytest
from conftest import FIXTURES
from sklearn.metrics import f1_score

from hub.card import model_card
from training import calibrate, crossval, evaluate, size_baseline, train
from training.splits import load_assignment

SPLIT = Path(__file__).resolve().parents[1] / "splits" / "cnmc_cv3_seed0.json"
TINY = ["--backbone", "mobilenetv2", "--no-pretrained", "--img-size", "64", "--batch-size", "8", "--epochs", "1",
        "--num-workers", "0", "--no-verify", "--keep-epoch", "latest"]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[list[Path], Path]:
    root = tmp_path_factory.mktemp("cv")
    folds = []
    for k in range(3):
        folds.append(root / f"cv{k}")
        args = [*TINY, "--data-dir", str(FIXTURES), "--cv-split", str(SPLIT), "--cv-fold", str(k)]
        assert train.main([*args, "--output-dir", str(folds[-1])]) == 0
    final = root / "all"
    args = [*TINY, "--data-dir", str(FIXTURES), "--train-folds", "fold_0", "fold_1", "--val-folds"]
    assert train.main([*args, "--output-dir", str(final)]) == 0
    return folds, final


def _rows(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def _copy_run(run: Path, to: Path, **config_changes) -> Path:
    shutil.copytree(run, to)
    config = json.loads((to / "run_config.json").read_text()) | config_changes
    (to / "run_config.json").write_text(json.dumps({k: v for k, v in config.items() if v is not None}))
    return to


def test_pooled_out_of_fold_evaluation_becomes_the_final_models(runs, cnmc):
    folds, final = runs
    assert not (final / "eval.json").exists()  # trained on everything: nothing of its own to validate on
    assert crossval.main([*map(str, folds), "--model-dir", str(final / "model")]) == 0
    result = json.loads((final / "eval.json").read_text())
    patients = {p for s in ("fold_0", "fold_1") for p in cnmc[s]["patient_id"]}
    assert result["num_cells"] == len(cnmc["fold_0"]) + len(cnmc["fold_1"])
    assert result["num_patients"] == len(patients)
    assert result["split"].startswith("C-NMC 2019 fold_0+fold_1, out of fold over the 3 folds of cnmc_cv3_seed0")
    assert result["epoch_selection"] == "latest" and "note" not in result
    assert [f["run"] for f in result["folds"]] == ["cv0", "cv1", "cv2"]
    assert result["fold_mean_sd"]["accuracy"]["n"] == 3
    pooled = _rows(final / "eval_predictions.csv")
    fold_rows = [r for f in folds for r in _rows(f / "eval_predictions.csv")]
    assert sorted(r["path"] for r in pooled) == sorted(r["path"] for r in fold_rows)
    assignment = load_assignment(SPLIT)
    for fold, run in enumerate(folds):  # each cell comes from the fold model that validated on its patient
        assert {assignment[r["patient_id"]] for r in _rows(run / "eval_predictions.csv")} == {fold}
    labels, called = [int(r["label"]) for r in pooled], [int(float(r["prob_all"]) > 0.5) for r in pooled]
    assert result["f1_weighted"] == pytest.approx(f1_score(labels, called, average="weighted"), abs=1e-9)
    fit = calibrate.calibrate([final / "eval_predictions.csv"], final / "model")
    data = ["--data-dir", str(FIXTURES), "--no-verify", "--cv-split", str(SPLIT)]
    baseline = final.parent / "size-baseline"
    assert (
        size_baseline.main([*data, "--output", str(baseline), "--predictions", str(final / "eval_predictions.csv")])
        == 0
    )
    size = json.loads((final / "size_dependence.json").read_text())
    card = str(model_card(final / "model", repo_id="cnmc-test/final"))
    assert f"P(ALL) with the cell's area is {size['rank_correlation_score_area']:.2f} (Spearman)" in card
    assert "(patients_by_size.png)" in card
    assert f"T = {fit['temperature']:.2f}" in card and f"from {fit['ece_before']:.3f} to {fit['ece_after']:.3f}" in card
    assert "out of fold over the 3 folds" in card and "Each fold's model on its own validation patients" in card
    assert "This model trained on all of these patients" in card


def test_refuses_a_patient_scored_twice_or_mixed_recipes(runs, tmp_path, capsys):
    folds, final = runs
    assert crossval.main([str(folds[0]), str(folds[0]), "--output", str(tmp_path / "x.json")]) == 2
    assert "validated in both" in capsys.readouterr().err
    other = _copy_run(final, tmp_path / "other", lr=0.5)
    assert crossval.main([*map(str, folds), "--model-dir", str(other / "model")]) == 2
    assert "recipes differ in lr" in capsys.readouterr().err


def test_records_the_same_recipes_other_seeds_for_the_card(runs, tmp_path, capsys):
    folds, final = runs
    final = shutil.copytree(final, tmp_path / "all")
    seed1 = [_copy_run(f, tmp_path / "seed1" / f.name, seed=1) for f in folds]
    for run in seed1:  # a seed that gets every cell right, so its scores can't be the main folds'
        rows = _rows(run / "eval_predictions.csv")
        with (run / "eval_predictions.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows({**row, "prob_all": float(row["label"])} for row in rows)
    args = [*map(str, folds), "--model-dir", str(final / "model")]
    assert crossval.main([*args, "--other-seed", *map(str, seed1)]) == 0
    result = json.loads((final / "eval.json").read_text())
    (other,) = result["other_seeds"]
    assert other["seed"] == 1
    assert other["f1_weighted"] == 1.0 > result["f1_weighted"]
    card = str(model_card(final / "model", repo_id="cnmc-test/final"))
    assert "one draw of the recipe" in card and f"| seed 1 | {other['f1_weighted']:.4f} |" in card

    same_seed = [_copy_run(f, tmp_path / "seed0" / f.name) for f in folds]
    other_recipe = [_copy_run(f, tmp_path / "lr" / f.name, seed=2, lr=0.5) for f in folds]
    for group, message in [
        (same_seed, "one seed that no other runs use"),
        (other_recipe, "recipes differ in lr"),
        (seed1[:2], "scored other cells than the folds"),
    ]:
        assert crossval.main([*args, "--other-seed", *map(str, group)]) == 2
        assert message in capsys.readouterr().err


def test_pools_runs_that_differ_only_in_how_their_cells_reached_the_device(runs, tmp_path):
    """--device-cache trains on the same batches, so a fold decoded once pools with folds decoded every epoch."""
    folds, final = runs
    cached = _copy_run(folds[1], tmp_path / "cv1", device_cache=True)
    older = _copy_run(folds[2], tmp_path / "cv2", device_cache=None)  # written before the option existed
    assert crossval.main([str(folds[0]), str(cached), str(older), "--output", str(tmp_path / "pooled.json")]) == 0


def test_a_run_older_than_a_recipe_field_pools_with_runs_that_set_its_default(runs, tmp_path, capsys):
    folds, final = runs
    head_off = [_copy_run(f, tmp_path / f.name, zero_head=False) for f in folds]
    predated = _copy_run(final, tmp_path / "all", zero_head=None)  # written before the field existed
    assert crossval.main([*map(str, head_off), "--model-dir", str(predated / "model")]) == 0
    assert crossval.main([*map(str, folds), "--model-dir", str(predated / "model")]) == 2
    assert "recipes differ in zero_head" in capsys.readouterr().err


def test_says_when_folds_kept_their_best_epoch(runs, tmp_path):
    folds, _ = runs
    best = _copy_run(folds[0], tmp_path / "cv0", keep_epoch="best")
    assert crossval.main([str(best), *map(str, folds[1:]), "--output", str(tmp_path / "cv.json")]) == 0
    result = json.loads((tmp_path / "cv.json").read_text())
    assert result["epoch_selection"] == "best, latest" and "flatters" in result["note"]
    assert (tmp_path / "cv_roc.png").stat().st_size > 0 and (tmp_path / "cv_predictions.csv").is_file()


def test_pools_the_flip_averaged_evaluations_like_with_like(runs, tmp_path, capsys):
    folds, final = runs
    folds = [shutil.copytree(f, tmp_path / f.name) for f in folds]
    for k, run in enumerate(folds):
        data = ["--data-dir", str(FIXTURES), "--no-verify", "--num-workers", "0", "--cv-split", str(SPLIT)]
        args = ["--model", str(run / "model"), *data, "--cv-fold", str(k), "--tta"]
        assert evaluate.main([*args, "--output", str(run / "eval_tta.json")]) == 0
    assert crossval.main([*map(str, folds), "--output", str(tmp_path / "tta.json"), "--evaluation", "eval_tta"]) == 0
    result = json.loads((tmp_path / "tta.json").read_text())
    pooled = _rows(tmp_path / "tta_predictions.csv")
    assert sorted(r["prob_all"] for r in pooled) == sorted(
        r["prob_all"] for f in folds for r in _rows(f / "eval_tta_predictions.csv")
    )
    assert result["tta"] is True and result["num_cells"] == len(pooled)
    labels, called = [int(r["label"]) for r in pooled], [int(float(r["prob_all"]) > 0.5) for r in pooled]
    assert result["f1_weighted"] == pytest.approx(f1_score(labels, called, average="weighted"), abs=1e-9)
    final = shutil.copytree(final, tmp_path / "all")
    for evaluation in ("eval", "eval_tta"):
        assert crossval.main([*map(str, folds), "--model-dir", str(final / "model"), "--evaluation", evaluation]) == 0
    card = str(model_card(final / "model", repo_id="cnmc-test/final"))
    assert f"(the app's default), on the same cells: weighted F1 {result['f1_weighted']:.4f}, accuracy" in card
    (folds[0] / "eval_tta.json").write_text((folds[0] / "eval.json").read_text())  # a single-view one among them
    assert crossval.main([*map(str, folds), "--output", str(tmp_path / "x.json"), "--evaluation", "eval_tta"]) == 2
    assert "pool like with like" in capsys.readouterr().err


def test_keep_epoch_latest_keeps_the_last_epoch(tmp_path):
    out = tmp_path / "latest"
    args = [*TINY, "--data-dir", str(FIXTURES), "--epochs", "2", "--max-train-cells", "8", "--max-val-cells", "8"]
    assert train.main([*args, "--output-dir", str(out)]) == 0
    assert json.loads((out / "eval.json").read_text())["epoch"] == 2
    assert json.loads((out / "run_config.json").read_text())["keep_epoch"] == "latest"
