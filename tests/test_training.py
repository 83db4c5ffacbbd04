"""Training and evaluation end to end on real fixture cells, on the CPU, at a small image size."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIXTURES
from safetensors.torch import load_file

from cnmc.calibration import calibrated_prob_all
from cnmc.export import STORED_DTYPE
from cnmc.load import load_model
from cnmc.preprocessing import flip_averaged
from training import ensemble, evaluate, train
from training.presets import PRESETS
from training.splits import load_assignment
from training.transforms import mix_batch

TINY = [
    "--backbone",
    "mobilenetv2",
    "--data-dir",
    str(FIXTURES),
    "--no-pretrained",
    "--img-size",
    "64",
    "--batch-size",
    "8",
    "--num-workers",
    "0",
    "--no-verify",
]
METRIC_KEYS = {
    "accuracy",
    "f1_weighted",
    "f1_macro",
    "precision",
    "recall",
    "specificity",
    "balanced_accuracy",
    "roc_auc",
    "confusion_matrix",
    "patient_accuracy",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "mobilenetv2"
    assert train.main([*TINY, "--output-dir", str(out), "--epochs", "1"]) == 0
    return out


def test_training_writes_a_complete_run(trained):
    config = json.loads((trained / "run_config.json").read_text())
    assert config["backbone"] == "mobilenetv2_100" and config["preset"] == "best" and config["pretrained"] is False
    assert config["val_patients"] == ["16", "2", "H10", "H14"]  # fold_1 only
    assert not set(config["train_patients"]) & set(config["val_patients"])
    model_config = json.loads((trained / "model" / "config.json").read_text())
    assert model_config["label_names"] == ["HEM (healthy)", "ALL (leukaemia)"]
    assert model_config["pretrained_cfg"]["input_size"] == [3, 64, 64]
    assert model_config["pretrained_cfg"]["crop_pct"] == pytest.approx(320 / 450)
    assert (trained / "model" / "model.safetensors").is_file()
    calibration = json.loads((trained / "model" / "calibration.json").read_text())
    assert calibration["cells"] == 16
    result = json.loads((trained / "eval.json").read_text())
    assert METRIC_KEYS <= set(result) and result["num_cells"] == 16 and result["epoch"] == 1
    # Records name files by their run folder, not by where this machine keeps them: they get committed and pushed.
    assert result["model"] == "mobilenetv2/model"
    assert calibration["fitted_on"] == ["mobilenetv2/eval_predictions.csv"]
    for name in ("training_curves.png", "eval_confusion_matrix.png", "eval_roc.png", "metrics.csv"):
        assert (trained / name).stat().st_size > 0


def run_evaluate(trained: Path, output: Path, *selection: str) -> int:
    model = str(trained / "model")
    return evaluate.main(["--model", model, "--data-dir", str(FIXTURES), "--no-verify", "--num-workers", "0",
                          "--output", str(output), *selection])  # fmt: skip


def test_the_ema_weights_are_what_is_scored_and_exported(trained):
    exported = load_file(trained / "model" / "model.safetensors")
    raw = load_file(trained / "checkpoints" / "last" / "model.safetensors")  # the optimizer's own weights
    ema = load_file(trained / "checkpoints" / "last" / train.EMA_STATE)
    # The export stores them in half precision (cnmc.export.STORED_DTYPE).
    assert all(torch.equal(exported[k], ema[f"module.{k}"].to(exported[k].dtype)) for k in exported)
    assert not all(torch.equal(exported[k], raw[k].to(exported[k].dtype)) for k in exported)


def test_evaluate_cli_scores_the_saved_model(trained, tmp_path):
    output = tmp_path / "prelim.json"
    assert run_evaluate(trained, output, "--split", "prelim_test", "--tta") == 0
    result = json.loads(output.read_text())
    assert METRIC_KEYS <= set(result)
    assert result["num_cells"] == 4 and result["num_patients"] == 2 and result["tta"] is True
    assert result["split"] == "C-NMC 2019 prelim_test, patients unseen in training"
    assert sum(map(sum, result["confusion_matrix"])) == 4
    assert 0 <= result["f1_weighted"] <= 1
    for suffix in ("_confusion_matrix.png", "_roc.png", "_predictions.csv"):
        assert (tmp_path / f"prelim{suffix}").stat().st_size > 0


def test_evaluate_tta_averages_each_cells_four_flips(trained, tmp_path, cnmc):
    probs = []
    for name, flags in (("single", []), ("tta", ["--tta"])):
        assert run_evaluate(trained, tmp_path / f"{name}.json", "--split", "prelim_test", *flags) == 0
        with (tmp_path / f"{name}_predictions.csv").open() as handle:
            probs.append({row["path"]: float(row["prob_all"]) for row in csv.DictReader(handle)})
    loaded = load_model(str(trained / "model"))
    cells = cnmc["prelim_test"]
    x = torch.stack([loaded.transform(image.convert("RGB")) for image in cells["image"]])
    with torch.no_grad():
        expected = flip_averaged(lambda v: loaded.model(v).softmax(-1), x)[:, 1].tolist()
    single, tta = ([p[path] for path in cells["path"]] for p in probs)
    # The one-epoch model sits near 0.5, so its views differ by ~1e-5; the CSV keeps six decimals.
    assert tta == pytest.approx(expected, abs=2e-6) and single != pytest.approx(expected, abs=2e-6)


def test_evaluate_flags_patients_seen_in_training(trained, tmp_path, caplog):
    """The model folder records its training patients, so the check travels with it (to models/ or the Hub)."""
    config = json.loads((trained / "model" / "config.json").read_text())
    assert config["train_patients"] == json.loads((trained / "run_config.json").read_text())["train_patients"]
    # So does the range of its training cells' size and stain, which the app checks a cell against.
    assert config["training_range"]["cells"] == json.loads((trained / "run_config.json").read_text())["train_cells"]
    moved = tmp_path / "moved"
    shutil.copytree(trained / "model", moved / "model")  # away from its run_config.json
    output = tmp_path / "train.json"
    assert run_evaluate(moved, output, "--folds", "fold_0") == 0
    assert "(includes 6 patient(s) seen in training)" in json.loads(output.read_text())["split"]
    del config["train_patients"]
    (moved / "model" / "config.json").write_text(json.dumps(config))
    assert run_evaluate(moved, output, "--folds", "fold_0") == 0
    assert json.loads(output.read_text())["split"] == "C-NMC 2019 fold_0"
    assert "does not record its training patients" in caplog.text


def test_evaluate_on_one_cross_validation_fold(trained, tmp_path, cnmc):
    split = Path(__file__).resolve().parents[1] / "splits" / "cnmc_cv3_seed0.json"
    assignment = load_assignment(split)
    patients = {p for s in ("fold_0", "fold_1") for p in cnmc[s]["patient_id"] if assignment[p] == 0}
    output = tmp_path / "cv0.json"
    assert run_evaluate(trained, output, "--cv-split", str(split), "--cv-fold", "0") == 0
    result = json.loads(output.read_text())
    assert result["num_patients"] == len(patients) > 0
    assert result["split"].startswith("C-NMC 2019 fold_0+fold_1, cv fold 0 of cnmc_cv3_seed0.json")
    with pytest.raises(SystemExit):
        run_evaluate(trained, output, "--cv-split", str(split))  # no fold


def test_evaluate_refuses_unlabelled_cells(trained, tmp_path, capsys):
    assert run_evaluate(trained, tmp_path / "x.json", "--split", "final_test") == 2
    assert "unlabelled" in capsys.readouterr().err


def test_ensemble_averages_calibrated_probabilities_of_the_same_cells(trained, tmp_path, capsys):
    """Two members: the mean of their calibrated P(ALL) per cell; a member that scored other cells is refused."""
    other = tmp_path / "other"
    other.mkdir()
    rows = list(csv.DictReader((trained / "eval_predictions.csv").open()))
    with (other / "eval_predictions.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "prob_all": str(1 - float(r["prob_all"]))} for r in rows)
    (other / "calibration.json").write_text(json.dumps({"temperature": 2.0}))
    (other / "eval.json").write_text((trained / "eval.json").read_text())
    output = tmp_path / "ensemble" / "eval.json"
    assert ensemble.main([str(trained), str(other), "--output", str(output)]) == 0
    temperature = json.loads((trained / "model" / "calibration.json").read_text())["temperature"]
    got = {r["path"]: float(r["prob_all"]) for r in csv.DictReader(output.with_name("eval_predictions.csv").open())}
    for r in rows:
        p = np.array([float(r["prob_all"])])
        expected = (calibrated_prob_all(p, temperature) + calibrated_prob_all(1 - p, 2.0)) / 2
        assert got[r["path"]] == pytest.approx(expected[0], abs=1e-6)
    result = json.loads(output.read_text())
    assert METRIC_KEYS <= set(result) and result["num_cells"] == len(rows)
    assert [m["temperature"] for m in result["members"]] == [pytest.approx(temperature), 2.0]
    assert result["members"][1]["run"] == "../other"  # named from the ensemble's folder, however deep the members
    with (other / "eval_predictions.csv").open("w", newline="") as handle:  # one cell fewer
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows[1:])
    assert ensemble.main([str(trained), str(other), "--output", str(output)]) == 2
    assert "other cells" in capsys.readouterr().err


def test_resume_continues_exactly(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    common = [*TINY, "--epochs", "2", "--max-train-cells", "16", "--max-val-cells", "8"]
    assert train.main([*common, "--output-dir", str(straight)]) == 0
    assert train.main([*common, "--output-dir", str(resumed), "--stop-after", "1"]) == 0
    assert json.loads((resumed / "checkpoints" / "last" / "trainer_state.json").read_text())["epoch"] == 1
    assert train.finished(straight) and not train.finished(resumed)  # a planned stop has its curves, not its epochs
    # Nothing in the checkpoint is unpickled on --resume: the EMA copy travels as safetensors.
    checkpoint = resumed / "checkpoints" / "last"
    assert (checkpoint / train.EMA_STATE).is_file() and not list(checkpoint.glob("custom_checkpoint*"))
    assert train.main([*common, "--output-dir", str(resumed), "--resume"]) == 0
    assert train.finished(resumed)
    a = load_file(straight / "checkpoints" / "last" / "model.safetensors")
    b = load_file(resumed / "checkpoints" / "last" / "model.safetensors")
    assert all(torch.allclose(a[k], b[k]) for k in a)
    rows = [(p / "metrics.csv").read_text().splitlines() for p in (straight, resumed)]
    assert len(rows[0]) == len(rows[1]) == 3
    # Both epochs up to the timings: the one read back on --resume is written as it was, "1," not "1.0,".
    assert [r.split(",")[:9] for r in rows[0]] == [r.split(",")[:9] for r in rows[1]]


def test_checkpoint_every_n_epochs_and_when_stopping(tmp_path, monkeypatch):
    saved = []
    write_text = train.atomic.write_text

    def record(path, text):
        if Path(path).name == "trainer_state.json":
            saved.append(json.loads(text)["epoch"])
        write_text(path, text)

    monkeypatch.setattr(train.atomic, "write_text", record)
    common = [*TINY, "--epochs", "3", "--max-train-cells", "16", "--max-val-cells", "8", "--checkpoint-every", "2"]
    assert train.main([*common, "--output-dir", str(tmp_path / "every2")]) == 0
    assert saved == [2, 3]  # and the last epoch, though 3 is not a multiple of 2
    saved.clear()
    assert train.main([*common, "--output-dir", str(tmp_path / "stopped"), "--stop-after", "1"]) == 0
    assert saved == [1]  # a planned stop keeps its epoch for --resume


def test_cells_decoded_once_train_exactly_as_cells_decoded_every_epoch(tmp_path):
    """--device-cache feeds the augmentation the same pixels in the same order, so the runs are identical."""
    runs = {flag: tmp_path / flag for flag in ("--device-cache", "--no-device-cache")}
    for flag, out in runs.items():
        args = [*TINY, "--epochs", "2", "--max-train-cells", "16", "--max-val-cells", "8", "--output-dir", str(out)]
        assert train.main([*args, flag]) == 0
    configs = [json.loads((out / "run_config.json").read_text()) for out in runs.values()]
    assert [c["device_cache"] for c in configs] == [True, False]
    a, b = (load_file(out / "model" / "model.safetensors") for out in runs.values())
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [(out / "metrics.csv").read_text().splitlines() for out in runs.values()]
    assert [r.split(",")[:9] for r in rows[0]] == [r.split(",")[:9] for r in rows[1]]


def test_refuses_patient_leak_and_overwrite(trained, cnmc_copy, capsys):
    args = [*TINY, "--output-dir", str(trained.parent / "leak"), "--train-folds", "fold_0", "fold_1"]
    assert train.main([*args, "--val-folds", "fold_1"]) == 2
    assert "both sides" in capsys.readouterr().err
    folds = cnmc_copy / "training_data"  # one of patient 11's cells filed in fold_1 as well
    shutil.copy(folds / "fold_0" / "all" / "UID_11_10_1_all.bmp", folds / "fold_1" / "all" / "UID_11_99_1_all.bmp")
    args = [*TINY, "--data-dir", str(cnmc_copy), "--output-dir", str(trained.parent / "leak")]
    assert train.main(args) == 2
    assert "1 patient(s) are in both train and validation: ['11']" in capsys.readouterr().err
    assert train.main([*TINY, "--output-dir", str(trained), "--epochs", "1"]) == 2
    assert "--resume" in capsys.readouterr().err


def test_no_validation_fold_trains_on_every_fold(tmp_path):
    out = tmp_path / "final"
    assert train.main([*TINY, "--output-dir", str(out), "--epochs", "1", "--val-folds"]) == 0
    config = json.loads((out / "run_config.json").read_text())
    assert config["split"] == {"train_folds": ["fold_0", "fold_1"], "val_folds": []}
    assert config["train_cells"] == 40 and config["val_patients"] == [] and (out / "model" / "config.json").is_file()


def test_pretrained_offline_names_the_fix(tmp_path, capsys):
    assert train.main([*TINY[:4], "--pretrained", *TINY[5:], "--output-dir", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert "ImageNet weights" in err and "--no-pretrained" in err


def _launch(processes: int, args: list[str]) -> None:
    """``torchrun`` with CPU processes. ``accelerate launch --cpu --num_processes N`` starts one process unless given
    an MPI host file, so it would compare one process with itself."""
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), *args],
        env={**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        cwd=Path(__file__).parents[1],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.mark.slow
def test_two_processes_give_the_same_metrics_as_one(trained, tmp_path):
    """gather_for_metrics drops the padding of the last uneven batch, so the metrics match exactly."""
    args = [
        "-m",
        "training.evaluate",
        "--model",
        str(trained / "model"),
        "--data-dir",
        str(FIXTURES),
        "--no-verify",
        "--folds",
        "fold_1",
        "--split",
        "prelim_test",
        "--batch-size",
        "3",
        "--num-workers",
        "0",
    ]
    results = []
    for processes in (1, 2):
        output = tmp_path / f"p{processes}.json"
        _launch(processes, [*args, "--output", str(output)])
        results.append(json.loads(output.read_text()))
    assert [r["num_processes"] for r in results] == [1, 2]
    assert results[0]["num_cells"] == results[1]["num_cells"] == 20  # 20 cells / (2 x 3) leaves an uneven tail
    assert results[0]["confusion_matrix"] == results[1]["confusion_matrix"]
    for key in METRIC_KEYS - {"confusion_matrix"}:
        assert results[0][key] == pytest.approx(results[1][key]), key
    for patient, one in results[0]["per_patient"].items():
        assert one == pytest.approx(results[1]["per_patient"][patient]), patient


@pytest.mark.slow
def test_two_processes_follow_the_same_learning_rate_schedule_as_one(tmp_path):
    """Accelerate steps a prepared scheduler once per process for each optimizer step; the schedule still spans the
    run, so two processes end the warm-up and the cosine where one does."""
    rates = []
    for processes in (1, 2):
        out = tmp_path / f"p{processes}"
        # Three batches: two processes take two each, one of them padded, so 4 scheduler steps an epoch against 3.
        common = ["--epochs", "2", "--max-train-cells", "24", "--max-val-cells", "8", "--output-dir", str(out)]
        _launch(processes, ["-m", "training.train", *TINY, *common])
        assert json.loads((out / "run_config.json").read_text())["num_processes"] == processes
        with (out / "metrics.csv").open() as handle:
            rates.append([float(row["lr"]) for row in csv.DictReader(handle)])
    assert rates[0][0] == pytest.approx(PRESETS["best"].lr / 2)  # halfway through a two-epoch warm-up
    assert rates[1] == pytest.approx(rates[0])


def test_thesis_preset_trains_the_thesis_recipe(tmp_path):
    out = tmp_path / "thesis"
    args = [*TINY, "--preset", "thesis", "--epochs", "1", "--max-train-cells", "16", "--max-val-cells", "8"]
    assert train.main([*args, "--output-dir", str(out)]) == 0
    config = json.loads((out / "run_config.json").read_text())
    assert (config["optimizer"], config["lr"], config["drop_rate"]) == ("adam", 0.01, 0.25)
    assert config["class_weights"] is False and config["label_smoothing"] == config["ema_decay"] == config["mixup"] == 0
    assert config["augmentation"]["zoom_prob"] == 0.7 and PRESETS["thesis"].batch_size == 32
    # The whole field, resized: the preprocessing saved with the model is the thesis's, not the best preset's crop.
    assert json.loads((out / "model" / "config.json").read_text())["pretrained_cfg"]["crop_pct"] == 1.0


@pytest.mark.slow
def test_bf16_mixed_precision_trains_and_exports_no_bf16_weights(tmp_path):
    """The CPU runs of results/ trained this way: autocast in bf16, master weights in fp32, the export in the
    precision it stores (cnmc.export.STORED_DTYPE) and computing in fp32.

    In a process of its own: accelerate keeps one precision per process, and this one's runs used none.
    """
    out = tmp_path / "bf16"
    args = [*TINY, "--epochs", "1", "--max-train-cells", "16", "--max-val-cells", "8", "--mixed-precision", "bf16"]
    _launch(1, ["-m", "training.train", *args, "--output-dir", str(out)])
    assert json.loads((out / "run_config.json").read_text())["mixed_precision"] == "bf16"
    with (out / "metrics.csv").open() as handle:
        assert np.isfinite(float(next(csv.DictReader(handle))["train_loss"]))
    assert {t.dtype for t in load_file(out / "model" / "model.safetensors").values()} <= {STORED_DTYPE, torch.int64}
    assert json.loads((out / "model" / "config.json").read_text())["dtype"] == "float32"


def test_best_preset_starts_training_at_chance_loss(tmp_path, trained):
    """The best preset starts the head at zero; --no-zero-head keeps timm's own head init."""
    out = tmp_path / "timm-head"
    assert train.main([*TINY, "--output-dir", str(out), "--epochs", "1", "--no-zero-head"]) == 0
    zero_head = {run: json.loads((run / "run_config.json").read_text())["zero_head"] for run in (trained, out)}
    assert zero_head == {trained: True, out: False}
    loss = {run: float(next(csv.DictReader((run / "metrics.csv").open()))["train_loss"]) for run in (trained, out)}
    # Zero logits give cross-entropy ln 2 whatever the labels; timm's own head init starts far above it.
    assert loss[trained] < 0.8 < loss[out]


@pytest.mark.parametrize("flag", ["mixup", "cutmix"])
def test_mixing_alphas_are_recipe_overrides(tmp_path, monkeypatch, flag):
    calls = []

    def recording(*args, **alphas):
        calls.append(alphas)
        return mix_batch(*args, **alphas)

    monkeypatch.setattr(train, "mix_batch", recording)
    out = tmp_path / flag
    assert train.main([*TINY, "--output-dir", str(out), "--epochs", "1", f"--{flag}", "0.2"]) == 0
    assert json.loads((out / "run_config.json").read_text())[flag] == 0.2 != getattr(PRESETS["best"], flag)
    assert calls and all(alphas[flag] == 0.2 for alphas in calls)  # every training batch is mixed with it
    assert (out / "model" / "model.safetensors").exists()
