"""The shift protocol and the cell normalisation, on real fixture cells."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from conftest import FIXTURES
from PIL import Image

from cnmc.cells import cell_mask
from cnmc.export import CELL_NORMALIZATION_KEY, export_model
from cnmc.load import load_model
from cnmc.preprocessing import CellNormalization, eval_transform
from hub.card import model_card
from training import compare, crossval, evaluate, train
from training.shifts import MAX_F1_DROP, SHIFTS, Shift, columns_of, shift_report
from training.size_baseline import add_cell_area, cross_validate

SPLIT = Path(__file__).resolve().parents[1] / "splits" / "cnmc_cv3_seed0.json"
TINY = ["--backbone", "mobilenetv2", "--no-pretrained", "--img-size", "64", "--batch-size", "8", "--epochs", "1",
        "--num-workers", "0", "--no-verify", "--keep-epoch", "latest", "--data-dir", str(FIXTURES)]  # fmt: skip
SHIFT = {s.name: s for s in SHIFTS}


def _area(image: Image.Image) -> float:
    return float(cell_mask(np.asarray(image)).mean())


def _mean_inside(image: Image.Image) -> np.ndarray:
    pixels = np.asarray(image).astype(float)
    return pixels[cell_mask(pixels)].mean(0)


@pytest.fixture(scope="module")
def cells(cnmc) -> list[Image.Image]:
    return [image.convert("RGB") for image in cnmc["fold_0"]["image"][:6]]


@pytest.mark.parametrize("factor", [0.75, 0.87, 1.15, 1.33])
def test_scale_shift_rescales_the_cell_in_the_same_frame(cells, factor):
    for cell in cells:
        moved = SHIFT[f"scale_{factor:.2f}"](cell)
        assert moved.size == cell.size
        assert _area(moved) / _area(cell) == pytest.approx(factor**2, rel=0.06)
        corners = np.asarray(moved)[[0, 0, -1, -1], [0, -1, 0, -1]]
        assert corners.max() <= 10  # padded or cropped with black: still a cell on a black field


def test_stain_shifts_scale_their_channels_inside_the_cell_only(cells):
    for cell in cells:
        redder, brighter = SHIFT["red_1.12"](cell), SHIFT["brightness_1.10"](cell)
        r, g, b = _mean_inside(redder) / _mean_inside(cell)
        assert (
            r == pytest.approx(1.12, abs=0.01) and g == pytest.approx(1, abs=0.002) and b == pytest.approx(1, abs=0.002)
        )
        assert _mean_inside(brighter) / _mean_inside(cell) == pytest.approx([1.1] * 3, abs=0.01)
        background = ~cell_mask(np.asarray(cell))
        assert (np.asarray(redder)[background] == np.asarray(cell)[background]).all()


def test_cell_normalisation_sets_size_and_stain_and_undoes_every_shift(cells):
    norm = CellNormalization()
    for cell in cells:
        normalised = norm(cell)
        assert normalised.size == cell.size
        assert _area(normalised) == pytest.approx(norm.area, rel=0.03)
        assert _mean_inside(normalised) == pytest.approx(norm.channel_means, abs=1.5)
        ys, xs = np.nonzero(cell_mask(np.asarray(normalised)))
        assert abs(xs.mean() - cell.width / 2) < 3 and abs(ys.mean() - cell.height / 2) < 3
        for shift in SHIFTS:
            moved = shift(cell)
            # Mean absolute pixel difference (0-255): the normalisation takes most of the shift out.
            left = _difference(norm(moved), normalised)
            assert left < 1.0 and left < 0.35 * _difference(moved, cell), shift.name


def _difference(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a).astype(float) - np.asarray(b)).mean())


def test_cell_normalisation_leaves_an_image_without_a_cell_alone():
    black = Image.new("RGB", (64, 64))
    assert np.array_equal(np.asarray(CellNormalization()(black)), np.asarray(black))


def test_shift_report_flags_a_score_that_follows_the_shift():
    labels = [1] * 6 + [0] * 4
    patients = ["a"] * 6 + ["H1"] * 4
    scores = [0.9, 0.8, 0.7, 0.8, 0.9, 0.6, 0.2, 0.3, 0.1, 0.4]
    steady = shift_report(labels, patients, scores, {"red_1.12": scores})
    assert steady["passes"] and steady["max_f1_drop"] == 0
    assert steady["shifts"]["red_1.12"]["mean_abs_delta_p_all"] == 0
    follows = [min(1.0, s + 0.25) for s in scores]  # every healthy cell pushed towards ALL, as larger cells are
    report = shift_report(labels, patients, scores, {"red_1.12": scores, "scale_1.15": follows})
    assert not report["passes"] and report["worst_shift"] == "scale_1.15"
    assert report["shifts"]["scale_1.15"]["specificity"] == 0.5  # 0.4 and 0.3 cross 0.5; 0.2 and 0.1 do not
    assert report["max_f1_drop"] > MAX_F1_DROP
    assert report["shifts"]["scale_1.15"]["mean_abs_delta_p_all"] == pytest.approx(0.21)  # 0.25 but where capped at 1


def test_the_area_baseline_fails_the_shift_rule(cnmc):
    result, rows = cross_validate(add_cell_area(cnmc, shifts=[SHIFT["scale_0.75"], SHIFT["red_1.12"]]), SPLIT)
    protocol = result["shift_protocol"]
    assert set(protocol["shifts"]) == {"scale_0.75", "red_1.12"}
    assert not protocol["passes"] and protocol["worst_shift"] == "scale_0.75"
    # Shrunk cells look healthy to a size rule: every cell's P(ALL) falls; a stain change leaves the area alone.
    assert all(r["prob_all@scale_0.75"] < r["prob_all"] for r in rows)
    assert protocol["shifts"]["red_1.12"]["mean_abs_delta_p_all"] < 0.01


@pytest.fixture(scope="module")
def cellnorm_folds(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("cellnorm")
    folds = [root / f"cv{k}" for k in range(3)]
    for k, out in enumerate(folds):
        args = [*TINY, "--preset", "cellnorm", "--cv-split", str(SPLIT), "--cv-fold", str(k), "--output-dir", str(out)]
        assert train.main(args) == 0
    return folds


def test_a_fold_run_scores_its_validation_cells_under_every_shift(cellnorm_folds, cnmc):
    run = cellnorm_folds[0]
    result = json.loads((run / "eval.json").read_text())
    assert set(result["shift_protocol"]["shifts"]) == {s.name for s in SHIFTS}
    with (run / "eval_predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [k for k in rows[0] if "@" in k] == [f"prob_all@{s.name}" for s in SHIFTS]
    # The column is the saved model's own answer for the shifted cell, through its saved preprocessing.
    loaded = load_model(str(run / "model"))
    assert loaded.transform.transforms[0] == CellNormalization()
    row = rows[0]
    split = cnmc["fold_0"] if "fold_0" in row["path"] else cnmc["fold_1"]
    image = split[split["path"].index(row["path"])]["image"].convert("RGB")
    with torch.inference_mode():
        p = loaded.model(loaded.transform(SHIFT["scale_1.33"](image)).unsqueeze(0)).softmax(-1)[0, 1]
    assert float(p) == pytest.approx(float(row["prob_all@scale_1.33"]), abs=1e-5)


def test_crossval_and_compare_carry_the_shift_protocol(cellnorm_folds, tmp_path):
    output = tmp_path / "pooled.json"
    assert crossval.main([*map(str, cellnorm_folds), "--output", str(output)]) == 0
    pooled = json.loads(output.read_text())
    assert pooled["shift_protocol"]["unshifted"]["f1_weighted"] == pytest.approx(pooled["f1_weighted"])
    with output.with_name("pooled_predictions.csv").open() as handle:
        assert len([k for k in next(csv.DictReader(handle)) if "@" in k]) == len(SHIFTS)
    assert compare.main([*map(str, cellnorm_folds), "--output", str(tmp_path)]) == 0
    table = (tmp_path / "comparison.md").read_text()
    assert "Worst shift: wF1 drop" in table and "cellnorm" in table
    row = json.loads((tmp_path / "comparison.json").read_text())[0]
    drops = [json.loads((f / "eval.json").read_text())["shift_protocol"]["max_f1_drop"] for f in cellnorm_folds]
    assert row["shift_max_f1_drop"]["mean"] == pytest.approx(np.mean(drops))
    assert row["shift_rule"] == ("pass" if max(drops) <= MAX_F1_DROP else "fail")


def test_evaluate_without_shifts_scores_once(cellnorm_folds, tmp_path):
    output = tmp_path / "plain.json"
    args = ["--model", str(cellnorm_folds[1] / "model"), "--data-dir", str(FIXTURES), "--no-verify"]
    assert (
        evaluate.main([*args, "--num-workers", "0", "--folds", "fold_1", "--no-shifts", "--output", str(output)]) == 0
    )
    assert "shift_protocol" not in json.loads(output.read_text())


def test_the_normalisation_travels_in_config_json_to_timm_and_the_app(tmp_path, cells):
    model = timm.create_model("mobilenetv2_100", num_classes=2, pretrained=False).eval()
    norm = CellNormalization(area=0.18, channel_means=(70.0, 30.0, 80.0))
    folder = export_model(model, tmp_path / "m", cell_normalization=norm)
    config = json.loads((folder / "config.json").read_text())
    assert CellNormalization.from_config(config[CELL_NORMALIZATION_KEY]) == norm
    assert timm.create_model(f"local-dir:{folder}", pretrained=True) is not None  # timm ignores the extra key
    loaded = load_model(str(folder))
    expected = eval_transform(model, norm)(cells[0])
    assert torch.equal(loaded.transform(cells[0]), expected)
    assert not torch.equal(expected, eval_transform(model)(cells[0]))


def test_a_shift_is_a_plain_function_of_the_image(cells):
    shift = Shift("custom", "scale", 0.5)
    assert _area(shift(cells[0])) == pytest.approx(_area(cells[0]) / 4, rel=0.08)


def test_the_final_model_carries_its_recipes_shift_result_to_the_card_and_the_app(cellnorm_folds, tmp_path):
    final = tmp_path / "all"
    shutil.copytree(cellnorm_folds[0], final)  # stands in for the model trained on every fold, of the same recipe
    assert crossval.main([*map(str, cellnorm_folds), "--model-dir", str(final / "model")]) == 0
    pooled = json.loads((final / "eval.json").read_text())["shift_protocol"]
    recorded = json.loads((final / "model" / "shift_protocol.json").read_text())
    assert recorded["passes"] == pooled["passes"] and recorded["max_f1_drop"] == pooled["max_f1_drop"]
    assert "out of fold" in recorded["evaluated_on"]
    text = model_card(final / "model", repo_id="cnmc-test/cellnorm").text
    section = text.split("## Under a shift of size or stain")[1].split("\n## ")[0]
    assert all(f"| {s.name} |" in section for s in SHIFTS)
    assert ("It **passes**" if pooled["passes"] else "It **fails**") in section
    assert "covers 20% of the frame" in text and "Apply the cell normalisation first" in text


def test_a_shifted_score_of_exactly_zero_is_kept_and_a_column_with_a_gap_is_not():
    # Rows as the size baseline builds them (floats), and a CSV written before a shift was added (a blank cell).
    rows = [
        {"prob_all": 0.2, "prob_all@redder": 0.0, "prob_all@scale_1.25": 0.4},
        {"prob_all": 0.9, "prob_all@redder": 0.7, "prob_all@scale_1.25": ""},
    ]
    assert columns_of(rows) == {"redder": [0.0, 0.7]}
