"""The C-NMC loader on real fixture cells: both layouts, both formats, every bad-input path."""

import csv
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
from conftest import CNMC_ROOT, FIXTURES
from PIL import Image

from cnmc.cells import CLASS_NAMES, parse_cell_name
from training.data import CNMCDataError, load_cnmc, main, summarize


def test_kaggle_layout_loads_every_part(cnmc):
    assert list(cnmc) == ["fold_0", "fold_1", "prelim_test", "final_test"]
    assert [len(cnmc[s]) for s in cnmc] == [24, 16, 4, 2]
    features = cnmc["fold_0"].features
    assert isinstance(features["image"], datasets.Image)
    assert features["label"].names == CLASS_NAMES
    assert set(cnmc["fold_0"]["patient_id"]) == {"3", "11", "22", "H6", "H7", "H11"}


def test_labels_and_patients_come_from_names(cnmc):
    for row in cnmc["fold_1"]:
        patient, label = parse_cell_name(Path(row["path"]).name)
        assert (row["patient_id"], row["label"], row["fold"]) == (patient, label, "fold_1")
        assert row["label"] == (0 if row["patient_id"].startswith("H") else 1)


def test_both_formats_decode(cnmc):
    suffixes = {Path(p).suffix for p in cnmc["fold_0"]["path"]}
    assert suffixes == {".bmp", ".webp"}
    for row in cnmc["fold_0"]:
        assert row["image"].size == (450, 450) and row["image"].mode == "RGB"


def test_prelim_labels_come_from_csv_and_final_is_unlabelled(cnmc):
    prelim = cnmc["prelim_test"]
    assert sorted(zip(prelim["patient_id"], prelim["label"], strict=True)) == [
        ("23", 1),
        ("23", 1),
        ("H22", 0),
        ("H22", 0),
    ]
    assert cnmc["final_test"]["label"] == [-1, -1]
    assert cnmc["final_test"]["patient_id"] == [None, None]


def test_root_may_be_the_unpacked_folder_itself():
    assert len(load_cnmc(CNMC_ROOT, progress=False)["fold_1"]) == 16


def test_tcia_layout_loads_the_same(tmp_path, cnmc):
    root = tmp_path / "tcia"
    shutil.copytree(CNMC_ROOT / "training_data", root / "C-NMC_training_data")
    prelim = root / "C-NMC_test_prelim_phase_data"
    shutil.copytree(
        CNMC_ROOT / "validation_data" / "C-NMC_test_prelim_phase_data",
        prelim / "C-NMC_test_prelim_phase_data",
    )
    shutil.copy(CNMC_ROOT / "validation_data" / "C-NMC_test_prelim_phase_data_labels.csv", prelim)
    final = root / "C-NMC_test_final_phase_data"
    shutil.copytree(CNMC_ROOT / "testing_data" / "C-NMC_test_final_phase_data", final / "C-NMC_test_final_phase_data")
    tcia = load_cnmc(root, progress=False)
    assert {s: len(tcia[s]) for s in tcia} == {s: len(cnmc[s]) for s in cnmc}
    assert tcia["prelim_test"]["label"] == cnmc["prelim_test"]["label"]


def _damage(root: Path) -> dict[str, str]:
    """Plant one of each kind of bad file; return path -> the words its error must contain."""
    hem = root / "training_data" / "fold_0" / "hem"
    good = next(hem.glob("*.webp"))
    truncated = hem / "UID_H6_99_1_hem.bmp"
    Image.open(good).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:20000])
    not_image = hem / "UID_H6_99_2_hem.webp"
    not_image.write_text("not an image")
    unnamed = root / "training_data" / "fold_1" / "all" / "cell_17.webp"
    shutil.copy(good, unnamed)
    wrong_folder = root / "training_data" / "fold_1" / "all" / "UID_H6_99_3_hem.webp"
    shutil.copy(good, wrong_folder)
    return {
        str(truncated): "unreadable",
        str(not_image): "unreadable",
        str(unnamed): "UID_<patient>",
        str(wrong_folder): "suffix says 'hem'",
    }


def test_bad_files_are_all_named_in_one_error(cnmc_copy):
    planted = _damage(cnmc_copy)
    with pytest.raises(CNMCDataError) as caught:
        load_cnmc(cnmc_copy, progress=False)
    message = str(caught.value)
    for path, words in planted.items():
        line = next(line for line in message.splitlines() if path in line)
        assert words in line
    assert "Expected one of these C-NMC 2019 layouts" in message
    assert "--skip-bad" in message


def test_skip_bad_writes_a_report_and_keeps_every_good_cell(cnmc_copy, tmp_path):
    planted = _damage(cnmc_copy)
    report = tmp_path / "skipped.csv"
    loaded = load_cnmc(cnmc_copy, skip_bad=True, report_path=report, progress=False)
    with report.open() as handle:
        assert {row["path"] for row in csv.DictReader(handle)} == set(planted)
    assert [len(loaded[s]) for s in loaded] == [24, 16, 4, 2]
    assert not set(planted) & {p for s in loaded.values() for p in s["path"]}


def test_skip_bad_leaves_out_a_split_with_nothing_usable_and_loads_the_rest(cnmc_copy, tmp_path, caplog):
    labels = cnmc_copy / "validation_data" / "C-NMC_test_prelim_phase_data_labels.csv"
    labels.unlink()
    report = tmp_path / "skipped.csv"
    loaded = load_cnmc(cnmc_copy, skip_bad=True, report_path=report, progress=False)
    assert list(loaded) == ["fold_0", "fold_1", "final_test"] and [len(loaded[s]) for s in loaded] == [24, 16, 2]
    assert "labels CSV is missing" in report.read_text() and "prelim_test has no usable images" in caplog.text


def test_missing_and_empty_folders_fail_clearly(cnmc_copy, tmp_path):
    with pytest.raises(CNMCDataError, match="Data folder not found"):
        load_cnmc(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CNMCDataError, match="No C-NMC data found"):
        load_cnmc(tmp_path / "empty")
    hem = cnmc_copy / "training_data" / "fold_1" / "hem"
    shutil.rmtree(hem)
    hem.mkdir()
    shutil.rmtree(cnmc_copy / "training_data" / "fold_0" / "all")
    with pytest.raises(CNMCDataError) as caught:
        load_cnmc(cnmc_copy, progress=False)
    assert f"{hem}: class folder is empty" in str(caught.value)
    assert f"{cnmc_copy / 'training_data' / 'fold_0' / 'all'}: class folder is missing" in str(caught.value)


def test_prelim_csv_problems_are_named(cnmc_copy):
    labels = cnmc_copy / "validation_data" / "C-NMC_test_prelim_phase_data_labels.csv"
    rows = labels.read_text().splitlines()
    rows[1] = rows[1][:-1] + "0"  # an ALL cell labelled HEM
    labels.write_text("\n".join(rows[:-1]) + "\n")  # and 4.bmp loses its row
    with pytest.raises(CNMCDataError) as caught:
        load_cnmc(cnmc_copy, progress=False)
    message = str(caught.value)
    assert f"{labels}:2: label 0 contradicts the name UID_23_10_1_all.bmp" in message
    assert "4.bmp: no row in C-NMC_test_prelim_phase_data_labels.csv" in message


def test_summary_counts_cells_and_patients(cnmc, capsys):
    rows = {r["split"]: r for r in summarize(cnmc)}
    assert rows["fold_0"] == {
        "split": "fold_0",
        "hem_cells": 12,
        "hem_patients": 3,
        "all_cells": 12,
        "all_patients": 3,
        "unlabelled_cells": 0,
    }
    assert main(["summary", "--data-dir", str(FIXTURES)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == [
        "split",
        "ALL",
        "cells",
        "ALL",
        "patients",
        "HEM",
        "cells",
        "HEM",
        "patients",
        "unlabelled",
    ]
    assert out[2].split() == ["fold_1", "8", "2", "8", "2", "0"]


def test_cli_reports_bad_data_without_a_traceback(tmp_path, capsys):
    assert main(["summary", "--data-dir", str(tmp_path)]) == 2
    assert "No C-NMC data found" in capsys.readouterr().err


def test_prepare_round_trip(cnmc, tmp_path):
    out = tmp_path / "prepared"
    assert main(["prepare", "--data-dir", str(FIXTURES), "--output", str(out), "--size", "64"]) == 0
    prepared = load_cnmc(out)
    assert list(prepared) == list(cnmc)
    for split in cnmc:
        for column in ("label", "patient_id", "fold"):
            assert prepared[split][column] == cnmc[split][column]
        # paths are kept relative to the download, so no machine's folders travel with the copy
        assert not any(Path(p).is_absolute() for p in prepared[split]["path"])
        assert [str(FIXTURES / p) for p in prepared[split]["path"]] == cnmc[split]["path"]
    assert prepared["fold_0"].features == cnmc["fold_0"].features
    assert prepared["fold_0"][0]["image"].size == (64, 64)
    for original, copy in zip(cnmc["fold_0"]["image"], prepared["fold_0"]["image"], strict=True):
        whole = original.convert("RGB").resize((64, 64), Image.Resampling.BICUBIC)  # no crop: models crop themselves
        difference = np.abs(np.asarray(copy.convert("RGB"), float) - np.asarray(whole, float)).mean()
        assert difference < 1.5  # grey levels of WebP re-encoding; a 70 % centre crop differs by 5-9
