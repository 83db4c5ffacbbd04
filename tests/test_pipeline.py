"""The cross-validation pipeline, run for real on the fixture cells with a tiny model, and its dry run."""

import json
import shlex
from pathlib import Path

import pytest
from conftest import FIXTURES

from cnmc import runs
from training import pipeline

SPLIT = Path(__file__).resolve().parents[1] / "splits" / "cnmc_cv3_seed0.json"
TINY = ["--epochs", "1", "--img-size", "64", "--num-workers", "0", "--train-args", "--batch-size 8"]


def test_dry_run_prints_every_command_in_order_and_runs_none(tmp_path, capsys):
    out = tmp_path / "campaign"
    args = ["--data-dir", "prepared", "--output", str(out), "--backbones", "mobilenetv2", "vgg19"]
    assert pipeline.main([*args, "--preset", "cellnorm", "--img-size", "112", "--dry-run"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    trains = [shlex.split(line) for line in lines if "training.train" in line]
    assert len(trains) == 8 and not out.exists()
    assert all(t[:3] == ["python", "-m", "training.train"] and "--no-pretrained" in t for t in trains)
    assert all(t[t.index("--preset") + 1] == "cellnorm" and t[t.index("--img-size") + 1] == "112" for t in trains)
    assert [t[t.index("--output-dir") + 1] for t in trains[:4]] == [
        str(out / f"mobilenetv2-cellnorm-{part}") for part in ("cv0", "cv1", "cv2", "all")
    ]
    after = [line.split()[2] for line in lines[lines.index("wait") + 1 :]]
    assert after == ["training.crossval", "training.calibrate", "training.size_baseline"] * 2 + ["training.compare"]


def test_a_campaign_leaves_a_calibrated_final_model_evaluated_out_of_fold(tmp_path, capsys):
    out = tmp_path / "campaign"
    args = ["--data-dir", str(FIXTURES), "--output", str(out), "--cv-split", str(SPLIT), *TINY]
    assert pipeline.main(args) == 0
    final = out / "mobilenetv2-best-all"
    evaluation = runs.read_report(final)
    assert [f["run"] for f in evaluation["folds"]] == [f"mobilenetv2-best-cv{k}" for k in range(3)]
    assert "shift_protocol" in evaluation and (final / runs.MODEL / "shift_protocol.json").is_file()
    calibration = json.loads((final / runs.MODEL / "calibration.json").read_text())
    assert calibration["temperature"] > 0
    dependence = json.loads((final / "size_dependence.json").read_text())
    assert dependence["cells"] == evaluation["num_cells"] and "roc_auc_model_at_matched_size" in dependence
    table = (out / "compare" / "comparison.md").read_text()
    assert "MobileNetV2" in table and "cell area" in table
    assert all((out / "logs" / f"mobilenetv2-best-{p}.log").is_file() for p in ("cv0", "cv1", "cv2", "all"))
    capsys.readouterr()
    # Run again, it trains nothing finished; a run whose end was cut short continues from its checkpoint.
    (out / "mobilenetv2-best-cv1" / runs.TRAINING_CURVES).unlink()
    assert pipeline.main([*args, "--one-at-a-time", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    trains = [shlex.split(line) for line in printed.splitlines() if "training.train" in line]
    assert [t[t.index("--output-dir") + 1] for t in trains] == [str(out / "mobilenetv2-best-cv1")]
    assert "--resume" in trains[0] and not printed.splitlines()[-1].endswith("&")
    assert all(f"# mobilenetv2-best-{p}: finished, skipped" in printed for p in ("cv0", "cv2", "all"))


@pytest.mark.parametrize("order", [[], ["--one-at-a-time"]])
def test_a_failed_run_stops_the_pipeline_and_names_its_log(tmp_path, capsys, order):
    args = ["--data-dir", str(tmp_path / "nowhere"), "--output", str(tmp_path / "c"), "--cv-split", str(SPLIT), *TINY]
    assert pipeline.main([*args, *order]) == 1
    error = capsys.readouterr().err
    assert "mobilenetv2-best-cv0" in error and str(tmp_path / "c" / "logs") in error
    assert not (tmp_path / "c" / "compare").exists()
    started = sorted(log.stem for log in (tmp_path / "c" / "logs").glob("*.log"))
    # Side by side every run had started; one after another, none starts after a failure.
    everything = [f"mobilenetv2-best-{part}" for part in ("all", "cv0", "cv1", "cv2")]
    assert started == (["mobilenetv2-best-cv0"] if order else everything)


def test_a_missing_split_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        pipeline.main(["--data-dir", "x", "--output", str(tmp_path), "--cv-split", str(tmp_path / "none.json")])
