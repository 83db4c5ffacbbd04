"""Temperature scaling: it must reduce the NLL of overconfident predictions and keep every label."""

import csv
import json

import numpy as np
import pytest
import torch

from cnmc.calibration import calibrated, calibrated_prob_all
from training.calibrate import calibrate, ece, fit_temperature, main, nll


def overconfident(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """80 % correct, yet always 99 % sure: the typical from-scratch CNN."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    correct = rng.random(n) < 0.8
    predicted = np.where(correct, labels, 1 - labels)
    return labels, np.where(predicted == 1, 0.99, 0.01)


def test_fit_softens_overconfidence():
    labels, scores = overconfident()
    temperature = fit_temperature(labels, scores)
    assert temperature > 1
    after = calibrated_prob_all(scores, temperature)
    assert nll(labels, after) < nll(labels, scores)
    assert ece(labels, after) < ece(labels, scores)
    # The ideal confidence is the 80 % accuracy, and a temperature never flips a decision.
    assert np.maximum(after, 1 - after).mean() == pytest.approx(0.8, abs=0.03)
    assert ((after >= 0.5) == (scores >= 0.5)).all()


def test_a_stored_p_all_is_calibrated_as_the_app_calibrates_logits():
    """Training calibrates stored P(ALL), the app logits: the same temperature must give the same probability."""
    logits = torch.tensor([[0.3, 2.1], [1.5, -0.7], [0.0, 0.0]], dtype=torch.float64)
    raw = logits.softmax(-1)[:, 1].numpy()
    for temperature in (None, 0.5, 2.5):
        expected = calibrated(logits, temperature)[:, 1].numpy()
        assert calibrated_prob_all(raw, temperature) == pytest.approx(expected, abs=1e-9)


def test_ece_by_hand():
    # Bin of 0.9 confidence: 2 cells, 1 right -> |0.5 - 0.9| x 2/4; bin of 0.6: 2 cells, 2 right -> |1 - 0.6| x 2/4.
    labels = np.array([1, 0, 1, 0])
    scores = np.array([0.9, 0.9, 0.6, 0.4])
    assert ece(labels, scores) == pytest.approx(0.4 * 0.5 + 0.4 * 0.5)


def test_cli_writes_calibration_beside_the_model(tmp_path, capsys):
    labels, scores = overconfident()
    predictions = tmp_path / "eval_predictions.csv"
    with predictions.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "patient_id", "label", "prob_all"])
        writer.writerows((f"c{i}.bmp", "1", y, s) for i, (y, s) in enumerate(zip(labels, scores, strict=True)))
    (tmp_path / "model").mkdir()
    assert main(["--predictions", str(predictions), "--model-dir", str(tmp_path / "model")]) == 0
    record = json.loads((tmp_path / "model" / "calibration.json").read_text())
    assert record["temperature"] > 1 and record["cells"] == 400 and record["nll_after"] < record["nll_before"]
    assert "temperature" in capsys.readouterr().out
    assert calibrate([predictions], tmp_path / "model")["temperature"] == pytest.approx(record["temperature"])
    assert main(["--predictions", str(tmp_path / "missing.csv"), "--model-dir", str(tmp_path)]) == 2
