"""The Gradio app and serving/: every tab's handler on real cells, every bad input, the API, and the fast path.

Models are tiny (64 px) MobileNetV2s exported to temporary folders (conftest.py) and injected with
``build_demo(models)``; nothing touches the network.
"""

import csv
import io
import json
import os
import struct
import threading
import time
import zipfile
import zlib
from dataclasses import replace
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ALL_CELL, CELLS, CNMC_ROOT, HEM_CELL, export_tiny
from gradio_client import Client, handle_file
from PIL import Image, ImageDraw

import app
from cnmc import training_range
from cnmc.backbones import create_model
from cnmc.cells import cell_mask
from cnmc.export import TRAINING_RANGE_KEY, export_model
from serving import batch, cache, fast, gradcam, results
from serving.images import load_batch, load_image
from serving.lookalike import check_lookalike
from serving.predict import NOT_A_CELL, UNCERTAIN, default_members, load_models, probabilities, verdict
from serving.registry import RegisteredModel

# --- Bad input ------------------------------------------------------------------------------------------


def _png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims another size: a decompression bomb without the memory."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr))
    return bytes(data)


def _saved(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (64, 64), colour) for colour in ("red", "green", "blue")]
    return _saved(frames[0], "GIF", save_all=True, append_images=frames[1:])


REFUSED = {
    "not-an-image.bmp": (lambda: b"just some text, not pixels\n" * 10, "not an image"),
    "corrupt.png": (lambda: b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "corrupt"),
    "truncated.bmp": (lambda: ALL_CELL.read_bytes()[:30_000], "corrupt or truncated"),
    "bomb.png": (lambda: _png_claiming(100_000, 100_000), "too large"),
    "huge.png": (lambda: _png_claiming(8000, 8000), "the limit is"),
    "one-pixel.png": (lambda: _saved(Image.new("RGB", (1, 1)), "PNG"), "only 1x1 pixels"),
    "animated.gif": (_animated_gif, "3 frames"),
    "vector.svg": (lambda: b'<svg xmlns="http://www.w3.org/2000/svg"/>', "not an image"),
}


def _cell(mode: str) -> Image.Image:
    return Image.open(ALL_CELL).convert("RGB").convert(mode)


def _sixteen_bit() -> Image.Image:
    return Image.fromarray((np.asarray(_cell("L"), dtype=np.uint16) * 257).astype(np.uint16))


CONVERTED = {
    "gray.png": (lambda: _saved(_cell("L"), "PNG"), "grayscale"),
    "rgba.png": (lambda: _saved(_cell("RGBA"), "PNG"), "transparent"),
    "sixteen.png": (lambda: _saved(_sixteen_bit(), "PNG"), "16-bit"),
    "cmyk.jpg": (lambda: _saved(_cell("CMYK"), "JPEG"), "CMYK"),
    "cmyk.tiff": (lambda: _saved(_cell("CMYK"), "TIFF"), "CMYK"),
    "palette.png": (lambda: _saved(_cell("P"), "PNG"), "palette"),
}


@pytest.fixture(scope="module")
def uploads(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("uploads")
    for name, (make, _) in {**REFUSED, **CONVERTED}.items():
        (folder / name).write_bytes(make())
    return folder


@pytest.mark.parametrize("name", REFUSED)
def test_bad_files_get_a_clear_message_in_every_tab(models, uploads, name):
    expected = REFUSED[name][1]
    path = str(uploads / name)
    for value, message in (
        app.classify(models, path, "Tiny A"),
        app.explain(models, path, "Tiny A"),
        app.explain_all(models, path),
    ):
        assert not value and message.startswith("❌") and expected in message and name in message
    message, table = app.compare(models, path)
    assert expected in message and table.empty


@pytest.mark.parametrize("name", CONVERTED)
def test_other_modes_are_converted_and_said_so(models, uploads, name):
    label, message = app.classify(models, str(uploads / name), "Tiny A")
    assert set(label) == {"ALL", "HEM"} and CONVERTED[name][1] in message
    assert load_image(uploads / name).image.mode == "RGB"


def test_transparent_pixels_become_the_black_background(tmp_path):
    image = Image.new("RGBA", (32, 32), (255, 255, 255, 0))
    image.putpixel((5, 5), (200, 100, 50, 255))
    checked = load_image(io.BytesIO(_saved(image, "PNG")))
    assert checked.image.getpixel((0, 0)) == (0, 0, 0) and checked.image.getpixel((5, 5)) == (200, 100, 50)


def test_no_upload_asks_for_one(models):
    assert app.classify(models, None, None) == (None, "❌ Upload or paste a cell image first.")


def test_zip_with_non_images_nested_folders_and_path_traversal(models, uploads, tmp_path):
    archive = tmp_path / "work" / "cells.zip"
    archive.parent.mkdir()
    escape = tmp_path / "escaped.bmp"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(ALL_CELL, "patient/day1/" + ALL_CELL.name)
        z.write(HEM_CELL, "../escaped.bmp")
        z.write(HEM_CELL, "/abs/" + HEM_CELL.name)  # zipfile stores it as abs/...
        z.writestr("notes.txt", "not an image")
        z.writestr("__MACOSX/._" + ALL_CELL.name, "resource fork")
        z.writestr("patient/", "")
    (tmp_path / "work" / "broken.zip").write_bytes(b"PK\x03\x04 not really")
    before = {p for p in tmp_path.rglob("*")}
    files = [str(archive), str(tmp_path / "work" / "broken.zip"), str(uploads / "corrupt.png"), str(HEM_CELL)]
    table, summary, csv, message = app.run_batch(models, files, False, progress=lambda *a, **k: None)
    assert {p for p in tmp_path.rglob("*")} == before and not escape.exists()  # nothing extracted anywhere
    rows = dict(zip(table["file"], table["error"], strict=True))
    assert rows["cells.zip/patient/day1/UID_11_10_1_all.bmp"] == ""
    assert rows["cells.zip/../escaped.bmp"] == "" and rows[f"cells.zip/abs/{HEM_CELL.name}"] == ""
    assert "not an image" in rows["cells.zip/notes.txt"]
    assert "not a readable zip" in rows["broken.zip"] and "corrupt" in rows["corrupt.png"]
    assert len(rows) == 7 and "4 files classified, 3 could not be read" in message
    assert set(summary["patient"]) == {"11", "H6"}
    assert Path(csv).read_text().splitlines()[0] == "file,Tiny A,Tiny B,ensemble,verdict,warning,error"


def test_zip_bomb_is_refused_by_its_declared_size(tmp_path, monkeypatch):
    """Too many members, too many bytes in all, or one member too large: refused from the index, before reading."""
    many, large, huge = tmp_path / "many.zip", tmp_path / "large.zip", tmp_path / "huge.zip"
    with zipfile.ZipFile(many, "w") as z:
        for i in range(3):
            z.writestr(f"{i}.png", b"x")
    with zipfile.ZipFile(large, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(2):
            z.writestr(f"{i}.png", bytes(600))  # compresses to almost nothing, as bombs do
    with zipfile.ZipFile(huge, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(HEM_CELL, HEM_CELL.name)
        z.write(ALL_CELL, ALL_CELL.name)  # a 594 KiB BMP
    monkeypatch.setattr("serving.images.MAX_ZIP_FILES", 2)
    monkeypatch.setattr("serving.images.MAX_ZIP_BYTES", 1000)
    for archive in (many, large):
        (item,) = load_batch([archive])
        assert item.image is None and "holds too much" in item.error, archive.name
    monkeypatch.setattr("serving.images.MAX_ZIP_BYTES", 2**30)
    monkeypatch.setattr("serving.images.MAX_FILE_BYTES", 2**19)
    hem, all_ = load_batch([huge])
    assert hem.error is None and all_.image is None
    assert all_.error.startswith(f"huge.zip/{ALL_CELL.name} is larger than")


# --- The tabs on real cells -----------------------------------------------------------------------------


def test_unavailable_models_say_why_and_the_app_still_builds(models, tmp_path):
    status = {m.name: m.status for m in models}
    assert status["Gone"].startswith("unavailable: not published yet: ")  # no weights, no pinned Hub revision
    gentle = "available (bf16" if fast.bf16_supported() else "available (fp32"
    assert status["Tiny A"].startswith("available (") and status["Tiny B"].startswith(gentle)
    assert app.build_demo(models, results_dir=tmp_path) is not None
    nothing = load_models([RegisteredModel("Gone", "vgg19_bn", None, "cnmc-test/not-cached")])
    assert app.classify(nothing, str(ALL_CELL), None) == (None, app.NO_MODEL)
    assert app.build_demo(nothing, results_dir=tmp_path) is not None


def test_damaged_weights_leave_that_model_unavailable_and_the_app_starting(tmp_path):
    folder = export_tiny(tmp_path / "damaged", seed=0)
    (folder / "model.safetensors").write_text("version https://git-lfs.github.com/spec/v1\nsize 9000000\n")
    (model,) = load_models([RegisteredModel("Damaged", "mobilenetv2_100", folder, "cnmc-test/d")], precision="fp32")
    assert model.status.startswith("unavailable: ") and app.build_demo([model], results_dir=tmp_path) is not None


def test_bf16_is_never_served_unchecked(tmp_path, monkeypatch):
    monkeypatch.setattr(fast, "bf16_supported", lambda: True)
    folder = export_tiny(tmp_path / "unchecked", seed=0)
    for precision in ("auto", "bf16"):  # no real cells to compare with fp32 on
        (model,) = load_models([RegisteredModel("U", "mobilenetv2_100", folder, "cnmc-test/u")], precision=precision)
        assert model.runner.precision == "fp32" and "no real cells to check bf16 against" in model.status


def test_a_named_model_that_cannot_serve_is_refused_not_replaced(models):
    label, message = app.classify(models, str(ALL_CELL), "Gone")
    assert label is None and "'Gone' is unavailable: " in message and "choose one of Tiny A, Tiny B" in message
    label, message = app.classify(models, str(ALL_CELL), "VGG19")
    assert label is None and "'VGG19' is not one of this app's models" in message
    overlay, message = app.explain(models, str(ALL_CELL), "VGG19")
    assert overlay is None and "VGG19" in message
    assert app.classify(models, str(ALL_CELL), None)[1].split("\n\n")[1].startswith("Tiny A: ")  # no name: the first


@pytest.mark.parametrize("cell", [ALL_CELL, HEM_CELL])
def test_classify_and_explain(models, cell, tmp_path, monkeypatch):
    label, message = app.classify(models, str(cell), "Tiny B")
    assert label["ALL"] + label["HEM"] == pytest.approx(1) and "Tiny B: P(ALL) = " in message and " ms (" in message
    assert "doesn't look like" not in message
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))  # gradio hands an upload over as a dict in its cache
    (tmp_path / "upload.webp").write_bytes(cell.read_bytes())
    overlay, caption = app.explain(models, {"path": str(tmp_path / "upload.webp"), "orig_name": cell.name}, "Tiny B")
    scale = gradcam.DISPLAY_SCALE  # the 64 px view beside its map, enlarged for the screen
    assert overlay.shape == (64 * scale, 128 * scale, 3) and overlay.dtype == np.uint8 and "Tiny B: " in caption
    assert "% of the map fell outside the cell" in caption
    overlay, message = app.explain(models, {"path": str(cell), "orig_name": cell.name}, "Tiny B")  # not uploaded
    assert overlay is None and message == "❌ The image must be a file uploaded to this app"


def test_verdict_defers_to_an_expert_in_the_uncertain_band():
    assert [verdict(p) for p in (0.1, 0.35, 0.5, 0.65, 0.9)] == ["HEM", UNCERTAIN, UNCERTAIN, UNCERTAIN, "ALL"]


def _shipped_predictions(root: Path, probs: list[float], labels: list[int], temperature: float) -> Path:
    """A results folder holding just the shipped model's pooled, flip-averaged predictions and its temperature."""
    run = root / results.SHIPPED_RUN
    (run / results.SHIPPED_SERVED).mkdir(parents=True)
    (run / results.SHIPPED_FINAL).mkdir(parents=True)
    rows = "".join(f"c{i}.bmp,P{i % 2},{label},{p}\n" for i, (p, label) in enumerate(zip(probs, labels, strict=True)))
    (run / results.SHIPPED_SERVED / "eval_predictions.csv").write_text("path,patient_id,label,prob_all\n" + rows)
    (run / results.SHIPPED_FINAL / "calibration.json").write_text(json.dumps({"temperature": temperature}))
    return root


def test_uncertain_band_share_is_counted_on_calibrated_out_of_fold_predictions(tmp_path):
    probs, labels = [0.1, 0.4, 0.5, 0.6, 0.9, 0.2], [0, 1, 0, 1, 1, 0]
    band = results.uncertain_band(_shipped_predictions(tmp_path / "plain", probs, labels, temperature=1.0))
    assert (band.cells, band.patients) == (6, 2)
    assert (band.share, band.share_all, band.share_hem) == pytest.approx((3 / 6, 2 / 3, 1 / 3))
    assert (band.right_outside, band.right_inside) == pytest.approx((1.0, 2 / 3))  # 0.4 is an ALL cell, called HEM
    sharper = results.uncertain_band(_shipped_predictions(tmp_path / "sharp", probs, labels, temperature=0.5))
    assert sharper.share == pytest.approx(1 / 6)  # 0.4 and 0.6 leave the band at T = 0.5; 0.5 stays
    assert results.uncertain_band(tmp_path / "none") is None


def test_the_app_says_how_often_unseen_cells_are_uncertain_and_what_that_means(tmp_path):
    band = results.uncertain_band()  # the committed pooled predictions of the shipped seed
    assert (band.cells, band.patients) == (7108, 42)
    n_all, n_hem = 4815, 2293  # C-NMC fold_0 + fold_1
    assert band.share == pytest.approx((band.share_all * n_all + band.share_hem * n_hem) / band.cells)
    assert band.right_inside < band.right_outside  # why no call is made there
    text = results.band_markdown(band)
    assert f"**{band.share:.0%} of cells**" in text and "haematologist" in text and "7,108 cells of 42" in text
    demo = app.build_demo(_undecided(tmp_path), results_dir=results.RESULTS_DIR)
    shown = [b.value for b in demo.blocks.values() if isinstance(b, gr.Markdown) and b.value]
    assert shown.count(text) == 2  # under Classify, and in Models & results


def _undecided(folder: Path) -> list:
    """A model whose P(ALL) is 0.5 for every cell: its verdict is always uncertain."""
    model = create_model("mobilenetv2", pretrained=False, img_size=64).eval()
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
    entry = RegisteredModel("Undecided", "mobilenetv2_100", export_model(model, folder / "u"), "cnmc-test/u")
    return load_models([entry], precision="fp32")


def test_an_uncertain_verdict_says_what_to_do_and_how_often_it_happens(tmp_path):
    undecided, band = _undecided(tmp_path), results.uncertain_band()
    _, message = app.classify(undecided, str(ALL_CELL), "Undecided", band=band)
    assert message.startswith(f"## {UNCERTAIN}") and results.uncertain_note(band) in message
    assert f"{band.share:.0%} of cells from patients the model never saw" in message
    message, table = app.compare(undecided, str(ALL_CELL), band=band)
    assert results.uncertain_note(band) in message and list(table.columns) == app.COMPARE_COLUMNS
    _, message = app.classify(undecided, str(ALL_CELL), "Undecided")  # without the committed results
    assert "needs a haematologist's reading._" in message


def test_temperature_from_calibration_json_scales_the_logits(tmp_path):
    folder = export_tiny(tmp_path / "calibrated", seed=0, temperature=4.0)
    (model,) = load_models([RegisteredModel("T", "mobilenetv2_100", folder, "cnmc-test/t")], precision="fp32")
    image = load_image(HEM_CELL).image
    logits = model.runner(model.loaded.transform(image).unsqueeze(0))
    assert model.loaded.temperature == 4.0 and "T = 4.00" in model.status
    assert torch.allclose(probabilities(model, [image]), (logits / 4.0).softmax(-1))


def test_compare_and_explain_all(models):
    message, table = app.compare(models, str(ALL_CELL))
    assert message.startswith("## Ensemble: ") and "Mean P(ALL) of 2 models" in message
    assert list(table["model"]) == ["Tiny A", "Tiny B"] and set(table["agrees with ensemble"]) <= {"yes", "no"}
    gallery, caption = app.explain_all(models, str(ALL_CELL))
    assert [name.split(": ")[0] for _, name in gallery] == ["Tiny A", "Tiny B"] and "Grad-CAM" in caption
    assert all(name.endswith("% of the map fell outside the cell") for _, name in gallery)


def test_a_model_that_fails_the_shift_test_carries_the_caveat(tmp_path):
    passing, failing = export_tiny(tmp_path / "passing", seed=0), export_tiny(tmp_path / "failing", seed=1)
    (passing / "shift_protocol.json").write_text(json.dumps({"passes": True, "max_f1_drop": 0.01}))
    (failing / "shift_protocol.json").write_text(json.dumps({"passes": False, "max_f1_drop": 0.12}))
    entries = [RegisteredModel(n, "mobilenetv2_100", f, f"cnmc-test/{n}") for n, f in (("P", passing), ("F", failing))]
    models = load_models(entries, precision="fp32")
    assert [m.holds_under_shift for m in models] == [True, False]
    _, alone = app.classify(models, str(HEM_CELL), "P")
    assert "over-called" not in alone
    _, message = app.classify(models, str(HEM_CELL), "F")
    assert "Healthy cells from a new acquisition batch are over-called" in message
    assert "Models & results): F." in message
    text, _ = app.compare(models, str(HEM_CELL))
    assert "Models & results): F." in text  # P passed, so only F is named


def test_batch_of_real_cells_with_patient_summary(models):
    table, summary, csv, message = app.run_batch(
        models, [str(p) for p in CELLS[:12]], False, progress=lambda *a, **k: None
    )
    assert len(table) == 12 and (table["error"] == "").all() and message == "12 files classified"
    mean = (table["Tiny A"] + table["Tiny B"]) / 2  # of the rounded columns: within a rounding step
    assert table["ensemble"].between(0, 1).all() and ((table["ensemble"] - mean).abs() <= 1e-4).all()
    assert (
        app.batch_basis(models)
        == "Verdicts on the ensemble: the mean P(ALL) of Tiny A and Tiny B, Compare's default ensemble."
    )
    assert summary["cells"].sum() == sum("UID_" in p.name for p in CELLS[:12])
    for _, row in summary.iterrows():
        assert row["patient call (mean P(ALL))"] == verdict(row["mean P(ALL)"])
        assert row["label (from file name)"] in ("all", "hem") and 0 <= row["cells uncertain"] <= row["cells"]
    assert app.run_batch(models, [], progress=None)[3] == "Upload images or a .zip of them first."


def test_batch_verdicts_rest_on_the_default_ensemble_and_without_one_on_the_one_model(models, monkeypatch):
    files = [str(p) for p in CELLS[:3]]
    monkeypatch.setattr("serving.predict.ENSEMBLE", ("Tiny B",))  # as if Tiny B alone were the measured best
    table, summary, _, _ = app.run_batch(models, files, False, progress=lambda *a, **k: None)
    assert list(table.columns) == ["file", "Tiny B", "verdict", "warning", "error"]  # no one-model "ensemble"
    assert list(table["verdict"]) == [verdict(p) for p in table["Tiny B"]]
    expected = "Verdicts on Tiny B's P(ALL), the only member of Compare's default ensemble available."
    assert app.batch_basis(models) == expected
    pooled = (summary["mean P(ALL)"] * summary["cells"]).sum() / summary["cells"].sum()
    named = table[table["file"].str.startswith("UID_")]  # the summary's cells: those named as C-NMC names them
    assert summary["cells"].sum() == len(named) > 0 and pooled == pytest.approx(named["Tiny B"].mean(), abs=1e-4)


def test_batch_decodes_one_file_at_a_time_and_stops_at_its_limit(models, monkeypatch):
    decoded = []

    def counting(*args, **kwargs):
        decoded.append(kwargs.get("name"))
        return load_image(*args, **kwargs)

    monkeypatch.setattr("serving.images.load_image", counting)
    monkeypatch.setattr("serving.batch.MAX_FILES", 2)
    files = [str(p) for p in CELLS[:3]]
    table, _, _, message = app.run_batch(models, files, False, progress=lambda *a, **k: None)
    assert len(table) == 2 and decoded == [p.name for p in CELLS[:2]]  # the third is never decoded
    assert message == "2 files classified (only the first 2 of 3 files are processed)"
    table, _, _, message = app.run_batch(models, files[:2], False, progress=lambda *a, **k: None)
    assert len(table) == 2 and message == "2 files classified"  # exactly the limit leaves nothing out


def test_batch_csv_folders_go_once_an_hour_old(tmp_path):
    old, recent = tmp_path / f"{batch.CSV_PREFIX}old", tmp_path / f"{batch.CSV_PREFIX}recent"
    for folder in (old, recent):
        folder.mkdir()
    hours_ago = time.time() - 2 * batch.CSV_MAX_AGE_S
    os.utime(old, (hours_ago, hours_ago))
    path = batch.write_csv(pd.DataFrame({"file": ["a.bmp"], "ensemble": [0.7]}), tmp_path)
    assert not old.exists() and recent.exists()
    assert path.parent.parent == tmp_path and path.read_text() == "file,ensemble\na.bmp,0.7\n"


def test_batch_csv_does_not_let_a_file_name_run_as_a_formula(models, tmp_path):
    names = ['=HYPERLINK("x","y").png', "+1.png", "@SUM(A1).png", "-2.png", "plain.png"]
    for name in names:
        Image.open(ALL_CELL).save(tmp_path / name)
    files = [str(tmp_path / n) for n in names]
    table, _, csv_path, _ = app.run_batch(models, files, False, progress=lambda *a, **k: None)
    with open(csv_path, newline="") as handle:
        files = [row["file"] for row in csv.DictReader(handle)]
    assert files == ["'" + n for n in names[:4]] + ["plain.png"]
    assert list(table["file"]) == names  # the table on screen shows the names as they are


def test_flip_averaging_gives_a_mirrored_cell_the_same_answer_in_every_tab(models, tmp_path):
    mirrored = tmp_path / "mirrored.png"
    Image.open(ALL_CELL).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(mirrored)
    label, message = app.classify(models, str(ALL_CELL), "Tiny B", True)
    mirrored_label, _ = app.classify(models, str(mirrored), "Tiny B", True)
    assert mirrored_label["ALL"] == pytest.approx(label["ALL"], abs=1e-3)
    assert "averaged over 4 flips" in message
    single, message = app.classify(models, str(ALL_CELL), "Tiny B", False)
    assert single["ALL"] != label["ALL"] and "flips" not in message  # the four views really are averaged
    message, table = app.compare(models, str(mirrored), True)
    assert table.set_index("model").loc["Tiny B", "P(ALL)"] == pytest.approx(label["ALL"], abs=1e-3)
    assert "averaged over 4 flips" in message
    table, _, _, message = app.run_batch(models, [str(ALL_CELL)], progress=lambda *a, **k: None)  # the default
    assert table.loc[0, "Tiny B"] == pytest.approx(label["ALL"], abs=1e-4)
    assert message == "1 file classified, averaged over 4 flips"


@pytest.mark.parametrize(
    ("architecture", "size", "layer"),
    [
        ("mobilenetv2", 64, "blocks.4"),
        ("vgg19", 64, "features.51"),
        ("inceptionv3", 96, "Mixed_6e"),
        ("resnet101v2", 64, "stages.2"),
    ],
)
def test_gradcam_takes_each_backbone_at_its_last_stride_16_map(architecture, size, layer):
    from cnmc.load import LoadedModel
    from cnmc.preprocessing import eval_transform

    model = create_model(architecture, pretrained=False, img_size=size).eval()
    loaded = LoadedModel(model, eval_transform(model), ["hem", "all"], Path("."), None)
    assert gradcam.target_layer(model) == layer
    found = gradcam.explain(loaded, load_image(ALL_CELL).image, 1)
    assert found.heat.shape == found.mask.shape == (size, size) and found.view.shape == (size, size, 3)
    assert found.picture().shape == (size * gradcam.DISPLAY_SCALE, 2 * size * gradcam.DISPLAY_SCALE, 3)


def _symmetric(model):
    """A model whose view is the image resized, uncropped: a flipped image gives exactly the flipped view."""
    from timm.data import create_transform

    from cnmc.load import LoadedModel
    from cnmc.preprocessing import data_config

    config = {**data_config(model), "crop_pct": 1.0}
    return LoadedModel(model, create_transform(**config), ["hem", "all"], Path("."), None)


def test_gradcam_averaged_over_flips_follows_the_cell_where_one_view_does_not():
    torch.manual_seed(0)
    loaded = _symmetric(create_model("mobilenetv2", pretrained=False, img_size=64).eval())
    cell = load_image(ALL_CELL).image
    upside_down = cell.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    averaged = gradcam.explain(loaded, cell, 1).heat
    assert np.allclose(gradcam.explain(loaded, upside_down, 1).heat, averaged[::-1], atol=1e-4)
    single = gradcam.explain(loaded, cell, 1, flips=False).heat
    assert not np.allclose(gradcam.explain(loaded, upside_down, 1, flips=False).heat, single[::-1], atol=1e-2)


def test_gradcam_is_kept_to_the_cell_and_says_how_much_fell_outside():
    torch.manual_seed(0)
    loaded = _symmetric(create_model("mobilenetv2", pretrained=False, img_size=64).eval())
    found = gradcam.explain(loaded, load_image(ALL_CELL).image, 1)
    assert found.mask.tolist() == cell_mask(found.view).tolist()
    outside = found.heat[~found.mask].sum() / found.heat.sum()
    assert found.outside_share == pytest.approx(outside) and 0 < found.outside_share < 1
    picture, scale = found.picture().astype(int), gradcam.DISPLAY_SCALE
    view, painted = picture[:, : 64 * scale], picture[:, 64 * scale :]
    assert np.abs(view - np.asarray(Image.fromarray(found.view).resize((64 * scale,) * 2))).max() <= 1  # as seen
    # Away from the cell's edge (where enlarging blends the two), the background is left as the model saw it and
    # the cell is painted over.
    from scipy import ndimage

    inside, background = (np.kron(m, np.ones((scale, scale), bool)) for m in (found.mask, ~found.mask))
    inside, background = ndimage.binary_erosion(inside, iterations=6), ndimage.binary_erosion(background, iterations=6)
    assert np.abs(painted[background] - view[background]).max() <= 2
    assert np.abs(painted[inside] - view[inside]).mean() > 20


# --- Look-alike warning, fast path, results tab ---------------------------------------------------------


def _photos() -> dict[str, Image.Image]:
    """Stand-ins for ordinary photos: a sky gradient, sensor noise, a drawn landscape, a cell off-centre."""
    y, x = np.mgrid[0:300, 0:400]
    gradient = np.stack([x * 255 // 400, y * 255 // 300, np.full_like(x, 180)], -1).astype(np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    scene = Image.new("RGB", (400, 300), (120, 170, 230))
    draw = ImageDraw.Draw(scene)
    draw.rectangle((0, 200, 400, 300), fill=(60, 140, 60))
    draw.ellipse((300, 30, 360, 90), fill=(255, 220, 80))
    draw.polygon([(50, 200), (150, 80), (250, 200)], fill=(110, 110, 120))
    cell = Image.open(ALL_CELL).convert("RGB")
    corner = Image.new("RGB", (900, 900))
    corner.paste(cell.crop((100, 100, 350, 350)), (620, 620))
    white = Image.new("RGB", (300, 300), "white")
    ImageDraw.Draw(white).ellipse((100, 100, 200, 200), fill=(120, 60, 160))
    return {
        "gradient": Image.fromarray(gradient),
        "noise": Image.fromarray(noise),
        "scene": scene,
        "corner": corner,
        "white": white,
        "black": Image.new("RGB", (450, 450)),
    }


def test_lookalike_passes_every_real_cell():
    failing = [p.name for p in CELLS if not check_lookalike(Image.open(p)).looks_like_cell]
    assert failing == []


def test_lookalike_warns_on_a_real_cell_at_another_magnification():
    """The models' verdicts follow cell size, so a real cell shown 1.6x larger must not pass silently."""
    cell = Image.open(CELLS[0]).convert("RGB")
    assert check_lookalike(cell).looks_like_cell
    side = cell.width
    enlarged = cell.resize((int(side * 1.6),) * 2, Image.Resampling.BICUBIC)
    margin = (enlarged.width - side) // 2
    result = check_lookalike(enlarged.crop((margin, margin, margin + side, margin + side)))
    assert not result.looks_like_cell
    assert any("another magnification" in reason for reason in result.reasons)


def _rescaled(cell: Path, scale: float) -> Image.Image:
    """A real cell as another magnification would show it, in a frame of the same size."""
    image = Image.open(cell).convert("RGB")
    side = image.width
    resized = image.resize((round(side * scale),) * 2, Image.Resampling.BICUBIC)
    frame = Image.new("RGB", (side, side))
    frame.paste(resized, ((side - resized.width) // 2,) * 2)  # a negative offset crops a larger cell
    return frame


def _all_idb_style(cell: Path) -> Image.Image:
    """A cell segmented onto black in ALL-IDB's look: a bright May-Grünwald-Giemsa stain, not C-NMC's dark one."""
    pixels = np.asarray(Image.open(cell).convert("RGB"), dtype=np.float64)
    mask = cell_mask(pixels.astype(np.uint8))
    brightness = pixels.mean(-1, keepdims=True) / 255
    nucleus, cytoplasm = np.array([120.0, 60, 160]), np.array([215.0, 190, 230])
    recoloured = nucleus + (cytoplasm - nucleus) * np.clip(brightness * 3, 0, 1)
    return Image.fromarray(np.where(mask[..., None], recoloured, 0).astype(np.uint8))


@pytest.fixture(scope="module")
def ranged(tmp_path_factory) -> list:
    """A tiny model whose config.json records the shipped model's training range, as export writes it."""
    shipped = json.loads((app.ROOT / "models" / "mobilenetv2" / "config.json").read_text())[TRAINING_RANGE_KEY]
    torch.manual_seed(0)
    model = create_model("mobilenetv2", pretrained=False, img_size=64).eval()
    folder = export_model(model, tmp_path_factory.mktemp("ranged"), training_range=shipped)
    return load_models([RegisteredModel("Ranged", "mobilenetv2_100", folder, "cnmc-test/r")], precision="fp32")


def test_the_shipped_model_records_the_range_of_its_training_cells():
    recorded = json.loads((app.ROOT / "models" / "mobilenetv2" / "config.json").read_text())[TRAINING_RANGE_KEY]
    assert recorded["cells"] == 7108 and set(training_range.MEASURES) <= set(recorded)
    inside = [p for p in CELLS if not training_range.outside(training_range.measure(Image.open(p)), recorded)]
    assert len(inside) >= len(CELLS) - 3  # the real cells lie inside, bar the few in its 1 % tails


def test_training_range_is_measured_from_a_folder_into_the_model_folder(tmp_path, capsys):
    folder = export_tiny(tmp_path / "model", seed=0)
    assert training_range.main([str(CNMC_ROOT), str(folder)]) == 0
    written = json.loads((folder / "config.json").read_text())[TRAINING_RANGE_KEY]
    measures = [training_range.measure(Image.open(p)) for p in CELLS]
    assert written["cells"] == len(CELLS) and written["percentiles"] == [0.5, 99.5]
    low, high = written["area"]
    assert min(m["area"] for m in measures) <= low < high <= max(m["area"] for m in measures)
    with pytest.raises(SystemExit):
        training_range.main([str(tmp_path / "empty"), str(folder)])
    assert "No cell images" in capsys.readouterr().err


@pytest.mark.parametrize("scale", [0.6, 1.3])
def test_a_rescaled_cell_gets_its_verdict_marked_unproven(ranged, tmp_path, scale):
    cell = CNMC_ROOT / "training_data" / "fold_0" / "all" / "UID_3_2_1_all.webp"
    _, message = app.classify(ranged, str(cell), "Ranged", False)
    assert "Read this verdict as unproven" not in message
    _rescaled(cell, scale).save(tmp_path / "rescaled.png")
    assert check_lookalike(Image.open(tmp_path / "rescaled.png")).looks_like_cell  # the look-alike check passes it
    label, message = app.classify(ranged, str(tmp_path / "rescaled.png"), "Ranged", False)
    assert label is not None and "⚠️ **Read this verdict as unproven**: the cell is unlike the cells Ranged" in message
    assert "the share of the image the cell covers is" in message and ("below" if scale < 1 else "above") in message
    text, _ = app.compare(ranged, str(tmp_path / "rescaled.png"), False)
    assert "Read this verdict as unproven" in text
    table, _, _, _ = app.run_batch(ranged, [str(tmp_path / "rescaled.png")], False, progress=lambda *a, **k: None)
    assert table.loc[0, "verdict"] != NOT_A_CELL and table.loc[0, "warning"].startswith("unlike the cells Ranged")


def test_an_all_idb_style_cell_on_black_is_warned_about(ranged, tmp_path):
    _all_idb_style(ALL_CELL).save(tmp_path / "all_idb.png")
    _, message = app.classify(ranged, str(tmp_path / "all_idb.png"), "Ranged", False)
    assert "Read this verdict as unproven" in message and "mean red" in message and "above the range" in message


@pytest.mark.parametrize("name", ["gradient", "noise", "scene", "corner", "white", "black"])
def test_lookalike_warns_on_photos(models, tmp_path, name):
    image = _photos()[name]
    result = check_lookalike(image)
    assert not result.looks_like_cell and result.reasons
    image.save(tmp_path / "photo.png")
    bars, message = app.classify(models, str(tmp_path / "photo.png"), "Tiny A")
    # No verdict, and its probability only as a footnote after the warning, not where a reading would be
    assert bars is None and message.startswith(f"## {NOT_A_CELL}\n\n⚠️ **This doesn't look like a C-NMC cell**")
    assert message.endswith("</small>") and "for reference only: Tiny A: P(ALL) = " in message
    message, table = app.compare(models, str(tmp_path / "photo.png"))
    assert message.startswith(f"## Ensemble: {NOT_A_CELL}\n\n⚠️") and set(table["verdict"]) == {NOT_A_CELL}
    assert "for reference only: Mean P(ALL) of 2 models = " in message
    files = [str(tmp_path / "photo.png"), str(ALL_CELL)]
    table, _, _, message = app.run_batch(models, files, False, progress=lambda *a, **k: None)
    assert list(table["verdict"] == NOT_A_CELL) == [True, False]
    assert list(table["warning"]) == ["; ".join(result.reasons), ""]
    assert message == "2 files classified, 1 of them unlike a C-NMC cell (no verdict, see warning)"


def test_compare_only_the_ticked_models(models):
    message, table = app.compare(models, str(ALL_CELL), False, ["Tiny B"])
    assert "Only Tiny B is ticked, so there is no ensemble" in message and list(table["model"]) == ["Tiny B"]
    alone, _ = app.compare([m for m in models if m.name == "Tiny B"], str(ALL_CELL), False)
    assert message.split("P(ALL) = ")[1][:5] == alone.split("P(ALL) = ")[1][:5]
    gallery, _ = app.explain_all(models, str(ALL_CELL), ["Tiny A"])
    assert [name.split(": ")[0] for _, name in gallery] == ["Tiny A"]
    assert app.compare(models, str(ALL_CELL), False, [])[0] == "❌ Tick at least one model."
    assert app.explain_all(models, str(ALL_CELL), [])[1] == "❌ Tick at least one model."
    message, table = app.compare(models, str(ALL_CELL), False, ["Tiny A", "Gone"])
    assert message.startswith("❌ Model 'Gone' is unavailable: ") and table.empty
    assert "'Nope' is not one of this app's models" in app.compare(models, str(ALL_CELL), False, ["Nope"])[0]


def test_compare_averages_the_measured_ensemble_unless_told_otherwise(models, monkeypatch):
    """By default Compare averages the available members of the measured ensemble (today all four backbones) and
    leaves out any other model, when any member is available; with none of them, every available model."""
    tiny_a, tiny_b = (m for m in models if m.available)
    renamed = [replace(tiny_a, name="MobileNetV2"), replace(tiny_b, name="ResNet101V2")]
    assert [m.name for m in default_members(renamed)] == ["MobileNetV2", "ResNet101V2"]
    monkeypatch.setattr("serving.predict.ENSEMBLE", ("MobileNetV2",))  # as if ResNet101V2 had lowered the ensemble
    assert [m.name for m in default_members(renamed)] == ["MobileNetV2"]
    _, table = app.compare(renamed, str(ALL_CELL), False)
    assert list(table["model"]) == ["MobileNetV2"]
    _, table = app.compare(renamed, str(ALL_CELL), False, ["MobileNetV2", "ResNet101V2"])
    assert list(table["model"]) == ["MobileNetV2", "ResNet101V2"]
    assert default_members(models) == [tiny_a, tiny_b]


def test_compare_with_one_model_does_not_claim_an_ensemble(models):
    one = [m for m in models if m.name == "Tiny A"]
    message, table = app.compare(one, str(ALL_CELL), False)
    assert message.startswith("## ") and "Only Tiny A is available, so there is no ensemble: P(ALL) = " in message
    assert "Ensemble" not in message and list(table["model"]) == ["Tiny A"]


def test_fast_path_matches_fp32_on_real_cells(models):
    """Whatever path each model serves with, it gives fp32's labels and probabilities within 0.02 on real cells."""
    images = [load_image(p).image for p in CELLS]
    for model in (m for m in models if m.available):
        x = torch.stack([model.loaded.transform(i) for i in images])
        reference = fast.fp32_runner(model.loaded.model)(x).softmax(-1)
        assert fast.parity(reference, probabilities(model, images)).ok, model.name
    gentle = next(m for m in models if m.name == "Tiny B")
    assert gentle.runner.precision == ("bf16" if fast.bf16_supported() else "fp32")


@pytest.mark.skipif(not fast.bf16_supported(), reason="this CPU has no bf16 support")
def test_bf16_runner_keeps_the_leading_layers_fp32_and_the_model_intact():
    model = create_model("mobilenetv2", pretrained=False, img_size=64).eval()
    x = torch.rand(2, 3, 64, 64)
    runner = fast.bf16_runner(model, fp32_layers=3)
    dtypes = [next(m.parameters(recurse=False)).dtype for m in runner.module.modules() if list(m.parameters(False))]
    assert dtypes[:3] == [torch.float32] * 3 and set(dtypes[3:]) == {torch.bfloat16}
    assert runner.precision == "bf16 after 3 fp32 layers"
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert runner(x).dtype == torch.float32 and runner(x).shape == (2, 2)


@pytest.mark.skipif(not fast.bf16_supported(), reason="this CPU has no bf16 support")
def test_choose_runner_keeps_fp32_unless_bf16_matches_and_is_faster(monkeypatch):
    model = create_model("mobilenetv2", pretrained=False, img_size=64).eval()
    x = torch.rand(4, 3, 64, 64)
    runner, reason = fast.choose_runner(model, x, lambda logits: logits * 1e3)  # magnifies any rounding
    assert runner.precision == "fp32" and "bf16 differs from fp32 by" in reason

    def probabilities(logits):
        return torch.zeros_like(logits)  # every path agrees

    runner, reason = fast.choose_runner(model, x, probabilities, require_speedup=False)
    assert (runner.precision, reason) == ("bf16", None)
    monkeypatch.setattr(fast, "latency_ms", lambda runner, x: 1.0 if runner.precision == "fp32" else 2.0)
    runner, reason = fast.choose_runner(model, x, probabilities)
    assert runner.precision == "fp32" and "bf16 matches fp32 but is not faster here (2.0 against 1.0 ms)" in reason
    monkeypatch.setattr(fast, "latency_ms", lambda runner, x: 2.0 if runner.precision == "fp32" else 1.0)
    assert fast.choose_runner(model, x, probabilities)[0].precision == "bf16"


def test_unknown_precision_is_refused_by_name(registered):
    with pytest.raises(ValueError, match="Unknown precision 'int4'.*auto, bf16, fp32"):
        load_models(registered, precision="int4")


def test_parity_flags_label_flips_and_drift():
    reference = torch.tensor([[0.9, 0.1], [0.45, 0.55]])
    assert fast.parity(reference, reference).ok
    assert not fast.parity(reference, torch.tensor([[0.9, 0.1], [0.55, 0.45]])).same_labels
    drift = fast.parity(reference, torch.tensor([[0.87, 0.13], [0.45, 0.55]]))
    assert drift.same_labels and not drift.ok and drift.max_difference == pytest.approx(0.03)


def test_results_tab_without_and_with_committed_results(models, tmp_path):
    assert "No results committed yet" in results.comparison_markdown(tmp_path)
    assert results.result_plots(tmp_path) == []
    (tmp_path / "comparison.md").write_text("| model | F1 |\n|---|---|\n| MobileNetV2 | 0.8 |\n")
    Image.new("RGB", (8, 8)).save(tmp_path / "roc_overlay.png")
    assert "| MobileNetV2 | 0.8 |" in results.comparison_markdown(tmp_path)
    assert results.result_plots(tmp_path) == [str(tmp_path / "roc_overlay.png")]
    tiny = next(m for m in models if m.name == "Tiny A")
    (tiny.loaded.folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n# Tiny A card\n")
    card = results.model_card_markdown(tiny)
    assert "# Tiny A card" in card and "license:" not in card and '"architecture": "mobilenetv2_100"' in card
    gone = next(m for m in models if m.name == "Gone")
    assert results.model_card_markdown(gone, cards_dir=tmp_path) == f"**Gone**: {gone.status}"
    (tmp_path / "gone").mkdir()
    (tmp_path / "gone" / "README.md").write_text("---\nlicense: apache-2.0\n---\n# Gone's card\n")
    card = results.model_card_markdown(gone, cards_dir=tmp_path)
    assert card.startswith("**Gone**: unavailable: ") and card.endswith("# Gone's card\n") and "license:" not in card
    assert "10.7937/tcia.2019.dc64i46r" in results.DATASET_CREDIT and "CC BY 3.0" in results.DATASET_CREDIT
    assert "not for diagnosis" in results.DISCLAIMER


def test_gradio_keeps_no_upload_past_an_hour_and_sends_no_telemetry(models, tmp_path):
    demo = app.build_demo(models, results_dir=tmp_path)  # uploads are patient-derived
    assert demo.delete_cache == (600, 3600) and demo.analytics_enabled is False


def test_the_served_app_keeps_its_cache_in_a_folder_of_its_own_and_clears_what_ended_processes_left(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    ended, alive = tmp_path / f"{cache.PREFIX}999999999", tmp_path / f"{cache.PREFIX}{os.getppid()}"
    for folder in (ended, alive):
        (folder / "upload").mkdir(parents=True)
    own = cache.private_cache()
    assert own == tmp_path / f"{cache.PREFIX}{os.getpid()}" and own.is_dir()
    assert os.environ["GRADIO_TEMP_DIR"] == str(own)  # where gradio's uploads and outputs go from now on
    assert not ended.exists() and alive.exists()  # another live app's cache stays


def test_batch_csv_goes_into_gradio_cache_which_prunes_it(models, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    _, _, csv_path, _ = app.run_batch(models, [str(ALL_CELL)], False, progress=lambda *a, **k: None)
    assert Path(csv_path).parent.parent == tmp_path and Path(csv_path).is_file()


def test_results_table_marks_the_shipped_recipe_and_says_its_figures_are_not_the_readmes():
    text = results.comparison_markdown()
    rows = [line for line in text.splitlines() if line.startswith("| ")][1:]
    (shipped,) = [row for row in rows if results.SHIPPED_MARK in row]
    cells = [c.strip() for c in shipped.split("|")[1:-1]]
    assert cells[0] == f"**{results.SHIPPED_MARK} MobileNetV2**"
    assert cells[1:6] == ["best", "scratch", "128", "cpu", "9"]  # the recipe's three seeds, each over three folds
    assert all(" ± " not in row for row in rows)  # each mean and its sd stay on one line
    caption = text.split("\n\n")[0]
    assert "mean ± sd over runs" in caption and "pooled out-of-fold" in caption
    assert "weighted F1 0.828 (0.836 averaged over the four flips" in caption  # the README's headline numbers


def test_compare_table_has_its_headers_before_any_run(models, tmp_path):
    demo = app.build_demo(models, results_dir=tmp_path)
    (table,) = [b for b in demo.blocks.values() if isinstance(b, gr.Dataframe) and b.label == "Per model"]
    assert table.value["headers"] == app.COMPARE_COLUMNS and table.value["data"] in ([], [[]])


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # the broken TIFF below
def test_a_tiff_upload_is_shown_as_a_png_copy_of_the_same_pixels(models, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    cell = Image.open(ALL_CELL)
    for name, image in {"rgb.tiff": cell, "gray.tif": cell.convert("L"), "cmyk.tiff": cell.convert("CMYK")}.items():
        image.save(tmp_path / name)
        upload = {"path": str(tmp_path / name), "orig_name": f"UID_11_10_1_all-{name}"}
        copy = Path(app.shown_upload(upload))
        assert copy.suffix == ".png" and copy.stem == Path(upload["orig_name"]).stem and copy.is_relative_to(tmp_path)
        assert Image.open(copy).format == "PNG"
        original, shown = load_image(tmp_path / name), load_image(copy)
        assert np.array_equal(np.asarray(original.image), np.asarray(shown.image))
        if name != "cmyk.tiff":  # PNG has no CMYK: that one is shown as the RGB the models see
            assert shown.notes == original.notes
        verdicts = [app.classify(models, str(p), "Tiny B", False)[1].split(" · ")[0] for p in (copy, tmp_path / name)]
        assert verdicts[0] == verdicts[1]  # the same verdict and P(ALL)
    (tmp_path / "cell.bmp").write_bytes(ALL_CELL.read_bytes())
    (tmp_path / "bad.tiff").write_bytes(b"II*\x00 not really a tiff")
    for kept in ("cell.bmp", "bad.tiff"):  # a browser shows a BMP; a broken file is left for the click to explain
        assert app.shown_upload({"path": str(tmp_path / kept), "orig_name": kept}) == gr.skip()


def test_results_tab_reports_the_new_batch_and_how_to_score_it(models, tmp_path):
    demo = app.build_demo(models, results_dir=tmp_path)
    shown = [b.value for b in demo.blocks.values() if isinstance(b, gr.Markdown) and b.value]
    (text,) = [v for v in shown if "new acquisition batch" in v]
    assert "specificity 0.437" in text and "13 donors" in text and "--folds fold_2" in text


# --- The API, over HTTP ---------------------------------------------------------------------------------


def test_gradio_client_calls_every_named_endpoint(models, uploads, tmp_path):
    demo = app.build_demo(models, results_dir=tmp_path)
    demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(demo.local_url, verbose=False)
        label, message = client.predict(handle_file(str(ALL_CELL)), "Tiny B", api_name="/classify")
        assert label["label"] in ("ALL", "HEM") and "Tiny B: P(ALL)" in message
        assert "averaged over 4 flips" in message  # the switch's default
        _, message = client.predict(handle_file(str(ALL_CELL)), "Tiny B", False, api_name="/classify")
        assert "flips" not in message
        ensemble, table = client.predict(handle_file(str(HEM_CELL)), api_name="/compare")
        assert ensemble.startswith("## Ensemble") and [row[0] for row in table["data"]] == ["Tiny A", "Tiny B"]
        _, table = client.predict(handle_file(str(HEM_CELL)), False, ["Tiny B"], api_name="/compare")
        assert [row[0] for row in table["data"]] == ["Tiny B"]
        _, message = client.predict(handle_file(str(uploads / "bomb.png")), "Tiny A", api_name="/classify")
        assert "too large" in message  # and the server keeps serving:
        overlay, _ = client.predict(handle_file(str(HEM_CELL)), "Tiny A", api_name="/explain")
        assert Path(overlay).is_file()
        gallery, _ = client.predict(handle_file(str(HEM_CELL)), api_name="/explain_all")
        assert len(gallery) == 2
        table, _, csv, message = client.predict([handle_file(str(p)) for p in CELLS[:3]], api_name="/batch")
        assert len(table["data"]) == 3 and Path(csv).is_file()
        assert message == "3 files classified, averaged over 4 flips"
    finally:
        demo.close()


def test_a_comparison_in_progress_does_not_hold_up_a_single_cell(models, tmp_path, monkeypatch):
    started, release = threading.Event(), threading.Event()
    compare = app.compare

    def held(*args, **kwargs):
        started.set()
        release.wait()
        return compare(*args, **kwargs)

    monkeypatch.setattr(app, "compare", held)
    demo = app.build_demo(models, results_dir=tmp_path)
    demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(demo.local_url, verbose=False)
        comparison = client.submit(handle_file(str(HEM_CELL)), api_name="/compare")
        assert started.wait(60)
        # Behind one queue this waits for the comparison, which waits for the release below: a timeout here.
        label, _ = client.submit(handle_file(str(ALL_CELL)), "Tiny B", api_name="/classify").result(timeout=60)
        assert label["label"] in ("ALL", "HEM") and not comparison.done()
        release.set()
        message, _ = comparison.result(timeout=60)
        assert message.startswith("## Ensemble")
    finally:
        release.set()
        demo.close()


def test_examples_are_captioned_with_their_true_classes():
    assert app._examples_label([str(p) for p in app.EXAMPLES]).startswith(
        "Real C-NMC cells, in order ALL, ALL, ALL, HEM, HEM, HEM"
    )
