"""The comparison: runs of one backbone and preset pool into mean ± sd beside the thesis's numbers."""

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest

from training.compare import main
from training.presets import PRESETS


def make_run(folder: Path, backbone: str, f1: float, split: str, seconds: list[float], **recipe) -> Path:
    folder.mkdir(parents=True)
    (folder / "run_config.json").write_text(
        json.dumps(
            {**asdict(PRESETS["best"]), "backbone": backbone, "preset": "best", "pretrained": False, "img_size": 224}
            | recipe
        )
    )
    metrics = {"f1_weighted": f1, "accuracy": f1 + 0.01, "roc_auc": 0.9, "patient_accuracy": 1.0}
    (folder / "eval.json").write_text(json.dumps({"split": split, **metrics}))
    (folder / "eval_predictions.csv").write_text(
        "path,patient_id,label,prob_all\na.bmp,1,1,0.9\nb.bmp,H1,0,0.2\nc.bmp,1,1,0.4\n"
    )
    rows = "".join(f"{i + 1},{s},{100 * (i + 1)}\n" for i, s in enumerate(seconds))
    (folder / "metrics.csv").write_text("epoch,epoch_seconds,train_img_per_s\n" + rows)
    return folder


def test_folds_pool_into_mean_and_sd(tmp_path):
    runs = [
        make_run(tmp_path / "m0", "mobilenetv2_100", 0.80, "cv fold 0", [60, 60]),
        make_run(tmp_path / "m1", "mobilenetv2_100", 0.70, "cv fold 1", [30, 30]),
        make_run(tmp_path / "v0", "vgg19_bn", 0.60, "cv fold 0", [120]),
    ]
    assert main([*map(str, runs), "--output", str(tmp_path / "out")]) == 0
    rows = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert [r["display_name"] for r in rows] == ["MobileNetV2", "VGG19"]  # the thesis's order
    mobile = rows[0]
    assert mobile["f1_weighted"]["mean"] == pytest.approx(0.75)
    assert mobile["f1_weighted"]["sd"] == pytest.approx(0.0707, abs=1e-4)  # sample sd of 0.80 and 0.70
    assert mobile["wall_seconds"]["mean"] == pytest.approx(90)
    assert (mobile["thesis_accuracy"], mobile["thesis_f1"]) == (82.75, 82.48)
    table = (tmp_path / "out" / "comparison.md").read_text()
    assert "| MobileNetV2 | best | scratch | 224 | not recorded | 2 | 0.750 ± 0.071 |" in table
    assert "| 77.40 % | 76.37 % |" in table and "cv fold 0; cv fold 1" in table
    assert (tmp_path / "out" / "roc_overlay.png").read_bytes()[:4] == b"\x89PNG"


def test_runs_that_changed_the_recipe_get_their_own_row(tmp_path):
    best = PRESETS["best"]
    plain = make_run(tmp_path / "a", "mobilenetv2_100", 0.80, "cv fold 0", [60], epochs=best.epochs)
    zoom = {**asdict(best.augmentation), "zoom_out": 0.2}
    changed = [
        make_run(tmp_path / f"b{k}", "mobilenetv2_100", 0.7, f"cv fold {k}", [60], epochs=12, augmentation=zoom)
        for k in range(2)
    ]
    assert main([str(plain), *map(str, changed), "--output", str(tmp_path / "out")]) == 0
    rows = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert [(r["recipe"], len(r["runs"])) for r in rows] == [("best", 1), ("best, epochs 12, zoom_out 0.2", 2)]
    assert (
        "| MobileNetV2 | best, epochs 12, zoom_out 0.2 | scratch |" in (tmp_path / "out" / "comparison.md").read_text()
    )


def test_a_run_older_than_a_recipe_field_is_labelled_by_how_it_trained(tmp_path):
    """Runs written before ``zero_head`` existed kept timm's head init, though the best preset now zeroes it."""
    current = make_run(tmp_path / "new", "mobilenetv2_100", 0.80, "cv fold 0", [60])
    older = make_run(tmp_path / "old", "mobilenetv2_100", 0.78, "cv fold 0", [60])
    config = json.loads((older / "run_config.json").read_text())
    del config["zero_head"]
    (older / "run_config.json").write_text(json.dumps(config))
    assert main([str(current), str(older), "--output", str(tmp_path / "out")]) == 0
    rows = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert sorted(r["recipe"] for r in rows) == ["best", "best, zero_head False"]


def test_one_recipe_on_two_devices_gets_a_row_each(tmp_path):
    cpu = make_run(tmp_path / "c", "mobilenetv2_100", 0.78, "cv fold 0", [4000], device="cpu")
    gpu = make_run(tmp_path / "g", "mobilenetv2_100", 0.78, "cv fold 0", [10], device="NVIDIA H100 80GB HBM3")
    assert main([str(cpu), str(gpu), "--output", str(tmp_path / "out")]) == 0
    rows = json.loads((tmp_path / "out" / "comparison.json").read_text())
    devices = sorted((r["device"], r["wall_seconds"]["mean"]) for r in rows)
    assert devices == [("NVIDIA H100 80GB HBM3", 10), ("cpu", 4000)]
    assert "| 224 | NVIDIA H100 80GB HBM3 | 1 |" in (tmp_path / "out" / "comparison.md").read_text()


def test_every_row_gets_its_own_roc_curve(tmp_path, monkeypatch):
    curves = {}
    monkeypatch.setattr("training.compare.plot_roc", lambda drawn, *args, **kwargs: curves.update(drawn))
    small = make_run(tmp_path / "a", "mobilenetv2_100", 0.80, "cv fold 0", [60], img_size=128, device="cpu")
    large = make_run(tmp_path / "b", "mobilenetv2_100", 0.78, "cv fold 0", [60], img_size=160, device="cpu")
    assert main([str(small), str(large), "--output", str(tmp_path / "out")]) == 0
    assert sorted(curves) == ["MobileNetV2 (best, scratch, 128 px, cpu)", "MobileNetV2 (best, scratch, 160 px, cpu)"]


def test_unfinished_run_is_named(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--output", str(tmp_path / "out")]) == 2
    assert "empty lacks run_config.json, eval.json" in capsys.readouterr().err


def test_baseline_is_the_last_row_and_joins_the_roc_overlay(tmp_path, capsys):
    run = make_run(tmp_path / "m0", "mobilenetv2_100", 0.80, "cv fold 0", [60])
    baseline = tmp_path / "size" / "eval.json"
    baseline.parent.mkdir()
    folds = [{"split": f"cv fold {k}"} for k in range(3)]
    fold_mean_sd = {k: {"mean": 0.7, "sd": 0.05, "n": 3} for k in ("f1_weighted", "accuracy", "roc_auc")}
    fold_mean_sd["patient_accuracy"] = {"mean": 0.8, "sd": 0.1, "n": 3}
    baseline.write_text(
        json.dumps({"model": "cell area alone", "split": "out of fold", "folds": folds, "fold_mean_sd": fold_mean_sd})
    )
    (baseline.parent / "eval_predictions.csv").write_text("path,patient_id,label,prob_all\na,1,1,0.7\nb,H1,0,0.3\n")
    assert main([str(run), "--output", str(tmp_path / "out"), "--baseline", str(baseline)]) == 0
    table = (tmp_path / "out" / "comparison.md").read_text()
    assert table.splitlines()[3] == (
        "| cell area alone | - | - | - | - | 3 | 0.700 ± 0.050 | 0.700 ± 0.050 | 0.700 ± 0.050 | 0.800 ± 0.100 "
        "| n/a | n/a | not scored | n/a | n/a | - | - |"
    )
    rows = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert rows[-1]["display_name"] == "cell area alone" and "labels" not in rows[-1]

    second = tmp_path / "trees" / "eval.json"
    shutil.copytree(baseline.parent, second.parent)
    second.write_text(json.dumps({**json.loads(baseline.read_text()), "model": "statistics (trees)"}))
    assert main([str(run), "--output", str(tmp_path / "out"), "--baseline", str(baseline), str(second)]) == 0
    rows = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert [r["display_name"] for r in rows] == ["MobileNetV2", "cell area alone", "statistics (trees)"]

    shifted = {"max_f1_drop": 0.2, "passes": False, "shifts": {"scale_0.75": {"specificity": 0.9}}}
    second.write_text(json.dumps({**json.loads(second.read_text()), "shift_protocol": shifted}))
    assert main([str(run), "--output", str(tmp_path / "out"), "--baseline", str(second)]) == 0
    assert (
        (tmp_path / "out" / "comparison.md")
        .read_text()
        .splitlines()[3]
        .endswith("| 0.200 | 0.900 | fail | n/a | n/a | - | - |")
    )

    assert main([str(run), "--output", str(tmp_path / "out"), "--baseline", str(tmp_path / "none.json")]) == 2
    assert "none.json is missing" in capsys.readouterr().err


def test_a_run_with_empty_predictions_is_named(tmp_path, capsys):
    run = make_run(tmp_path / "m0", "mobilenetv2_100", 0.80, "cv fold 0", [60])
    (run / "eval_predictions.csv").write_text("path,patient_id,label,prob_all\n")
    assert main([str(run), "--output", str(tmp_path / "out")]) == 2
    assert "No predictions in" in capsys.readouterr().err
