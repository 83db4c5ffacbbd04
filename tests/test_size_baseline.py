"""The cell-size baseline: area measured on the real fixture cells, fitted out of fold, and a model tested for size."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scripts.experiments.colour_norm import cell_pixels, standardise
from scripts.experiments.handcrafted import STATISTICS, statistics
from scripts.experiments.size_balanced import balanced_rows
from tests.conftest import FIXTURES
from training.data import CNMCDataError
from training.size_baseline import (
    add_cell_area,
    cell_area,
    cross_validate,
    large_cell_donors,
    log_area,
    main,
    matched_size_auc,
    size_bins,
    size_dependence,
)

SPLIT = Path(__file__).resolve().parents[1] / "splits" / "cnmc_cv3_seed0.json"


def test_cell_area_counts_pixels_off_the_black_field(cnmc):
    field = np.zeros((100, 100, 3), dtype=np.uint8)
    field[:20, :50] = (120, 60, 150)
    field[50:, :] = 8  # re-encoding noise on the black background is not cell
    assert cell_area(Image.fromarray(field)) == pytest.approx(0.1)
    areas = [cell_area(image) for image in cnmc["fold_0"]["image"]]
    assert all(0.05 < a < 0.35 for a in areas)  # a real cell covers a part of its 450 px field


@pytest.fixture(scope="module")
def baseline(cnmc):
    return cross_validate(add_cell_area(cnmc), SPLIT)


def test_baseline_scores_every_cell_once_with_a_fit_that_never_saw_its_patient(cnmc, baseline):
    result, rows = baseline
    pooled = [*cnmc["fold_0"]["path"], *cnmc["fold_1"]["path"]]
    assert sorted(r["path"] for r in rows) == sorted(pooled)
    assert len(result["folds"]) == 3 and result["fold_mean_sd"]["accuracy"]["n"] == 3
    assert "out of fold over the 3 folds of cnmc_cv3_seed0.json" in result["split"]
    for fold in result["folds"]:  # within one fit, a larger cell is always the likelier blast
        members = sorted((r["cell_area"], r["prob_all"]) for r in rows if r["patient_id"] in fold["patients"])
        assert all(a[1] <= b[1] for a, b in zip(members, members[1:], strict=False))
    assert result["roc_auc"] > 0.7  # blasts are larger, even on 40 cells
    assert result["confusion_matrix"] and 0 <= result["patient_accuracy"] <= 1


def test_each_fit_sees_only_the_patients_it_does_not_score(cnmc):
    seen = []

    def recording(dataset):  # called on each fold's training cells, then on the cells it scores
        seen.append(set(dataset["patient_id"]))
        return log_area(dataset)

    result, _ = cross_validate(add_cell_area(cnmc, shifts=()), SPLIT, features=recording)
    fitted, scored = seen[0::2], seen[1::2]
    assert [sorted(s) for s in scored] == [fold["patients"] for fold in result["folds"]]
    patients = {*cnmc["fold_0"]["patient_id"], *cnmc["fold_1"]["patient_id"]}
    for fit, score in zip(fitted, scored, strict=True):
        assert not fit & score and fit | score == patients


def test_size_dependence_tells_a_size_meter_from_a_model_that_sees_more():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 500)
    areas = rng.normal(0.13 + 0.04 * labels, 0.02).clip(0.05, 0.4)
    size_meter = size_dependence(1 / (1 + np.exp(-10 * np.log(areas / 0.15))), labels, areas)
    assert size_meter["rank_correlation_score_area"] == pytest.approx(1.0)
    assert size_meter["roc_auc_model"] == pytest.approx(size_meter["roc_auc_area_alone"])
    assert size_meter["roc_auc_model_at_matched_size"] < 0.65
    sees_more = size_dependence(np.where(labels == 1, 0.8, 0.2), labels, areas)
    assert sees_more["roc_auc_model_at_matched_size"] == 1.0
    with pytest.raises(ValueError, match="No bin of cell sizes holds both classes"):
        matched_size_auc(np.ones(40, dtype=int), areas[:40], areas[:40])


def test_large_cell_donors_are_the_third_of_healthy_donors_with_the_largest_cells():
    # Six healthy donors, two cells each, of growing size; two patients with ALL.
    patients = [f"H{d}" for d in range(6) for _ in range(2)] + ["1", "1", "2", "2"]
    areas = np.array([0.05 + 0.02 * d for d in range(6) for _ in range(2)] + [0.2, 0.2, 0.2, 0.2])
    labels = np.array([0] * 12 + [1] * 4)
    probs = np.array([0.1] * 8 + [0.9, 0.9, 0.1, 0.9] + [0.8, 0.8, 0.7, 0.7])  # H4 over-called, half of H5
    large = large_cell_donors(probs, labels, areas, patients)
    assert large["patients"] == ["H5", "H4"] and large["cells"] == 4
    assert large["specificity"] == 0.25  # one of the four cells called HEM
    assert large["roc_auc_against_all"] == 0.25  # three of their four cells ranked above every blast


def test_cli_writes_the_baseline_and_tests_a_model_for_size(tmp_path, cnmc, capsys):
    predictions = tmp_path / "eval_predictions.csv"
    with predictions.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "patient_id", "label", "prob_all"])
        for split in ("fold_0", "fold_1"):
            for row in cnmc[split].select_columns(["path", "patient_id", "label"]):
                writer.writerow([row["path"], row["patient_id"], row["label"], 0.9 if row["label"] else 0.1])
    output = tmp_path / "out"
    args = ["--data-dir", str(FIXTURES), "--no-verify", "--cv-split", str(SPLIT), "--output", str(output)]
    assert main([*args, "--predictions", str(predictions)]) == 0
    assert json.loads((output / "eval.json").read_text())["model"] == "cell area alone (logistic regression)"
    for name in ("eval_confusion_matrix.png", "eval_roc.png", "eval_predictions.csv"):
        assert (output / name).stat().st_size > 0
    assert (tmp_path / "patients_by_size.png").stat().st_size > 0  # beside the model's predictions
    dependence = json.loads((tmp_path / "size_dependence.json").read_text())
    assert dependence["cells"] == 40 and dependence["roc_auc_model_at_matched_size"] == 1.0
    large = dependence["large_cell_donors"]
    assert large["cells"] > 0 and large["specificity"] == 1.0 and large["roc_auc_against_all"] == 1.0
    out = capsys.readouterr().out
    assert "among cells of the same size 1.000" in out and "healthy donors with the largest cells (" in out

    with predictions.open("a") as handle:
        handle.write("elsewhere/UID_99_1_1_all.bmp,99,1,0.5\n")
    assert main([*args, "--output", str(tmp_path / "again"), "--predictions", str(predictions)]) == 2
    assert "1 cell(s) of" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the baseline's eval.json must not replace the model's
        main([*args[:-1], str(tmp_path), "--predictions", str(predictions)])
    assert "would overwrite the model's own eval.json" in capsys.readouterr().err


def test_a_cell_less_image_is_named_not_fitted(cnmc_copy, tmp_path, capsys):
    blank = cnmc_copy / "training_data" / "fold_0" / "hem" / "UID_H6_10_2_hem.webp"
    Image.new("RGB", (450, 450)).save(blank)
    args = ["--data-dir", str(cnmc_copy), "--cv-split", str(SPLIT), "--output", str(tmp_path / "out")]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert "1 image(s) are entirely black" in error and "UID_H6_10_2_hem.webp" in error


def test_size_balanced_copy_leaves_size_no_label_to_tell():
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], [300, 700])
    areas = rng.normal(0.13 + 0.04 * labels, 0.02).clip(0.05, 0.4)
    keep = balanced_rows(labels, areas)
    assert len(set(keep)) == len(keep) and (np.diff(keep) > 0).all()
    for b in range(20):
        kept = labels[keep][size_bins(areas)[keep] == b]
        assert (kept == 0).sum() == (kept == 1).sum()
    assert 100 < len(keep) < 600  # the classes overlap in size only in part
    assert abs(size_dependence(areas[keep], labels[keep], areas[keep])["roc_auc_model"] - 0.5) < 0.1


def test_handcrafted_statistics_of_a_drawn_cell():
    yy, xx = np.mgrid[:100, :100]
    disc = ((yy - 50) ** 2 + ((xx - 50) / 2) ** 2 < 20**2)[..., None] * np.array([200, 100, 150], dtype=np.uint8)
    stats = dict(zip(STATISTICS, statistics(Image.fromarray(disc), "drawn.png"), strict=True))
    assert stats["log_area"] == pytest.approx(np.log(np.pi * 20 * 40 / 100**2), abs=0.02)
    assert (stats["mean_r"], stats["mean_g"], stats["std_b"]) == pytest.approx((200 / 255, 100 / 255, 0), abs=1e-4)
    assert stats["elongation"] == pytest.approx(2.0, abs=0.05)  # an ellipse twice as wide as tall
    with pytest.raises(CNMCDataError, match="black.png is .* entirely black"):
        statistics(Image.new("RGB", (100, 100)), "black.png")


def test_colour_standardised_cells_share_their_tint_but_keep_their_outline(cnmc):
    mean, std = np.array([70.0, 30.0, 80.0]), np.array([12.0, 9.0, 11.0])
    cells = [cnmc["fold_0"][i]["image"] for i in range(0, 24, 4)]
    before, after = [], []
    for image in cells:
        pixels, cell = cell_pixels(image)
        out, out_cell = cell_pixels(standardise(image, mean, std))
        assert (out_cell == cell).all()  # the area the size test measures is untouched
        assert (out[~cell] == pixels[~cell]).all()
        assert out[cell].mean(0) == pytest.approx(mean, abs=1.0)
        assert out[cell].std(0) == pytest.approx(std, abs=1.0)
        before.append(pixels[cell].mean(0))
        after.append(out[cell].mean(0))
    assert np.ptp(after, axis=0).max() < 1.5 < np.ptp(before, axis=0).max()
