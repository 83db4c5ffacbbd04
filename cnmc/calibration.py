"""Temperature scaling applied: the one place a model's temperature turns logits into probabilities.

Training fits the temperature (``training.calibrate``) and the model folder stores it (calibration.json,
read by ``cnmc.load``); the app, ensembles and benchmarks all apply it through here.
"""

from __future__ import annotations

import numpy as np
import torch


def calibrated(logits: torch.Tensor, temperature: float | None) -> torch.Tensor:
    """Class probabilities from a model's logits, divided by its temperature first (None: as trained)."""
    return (logits / (temperature or 1.0)).softmax(-1)


def calibrated_prob_all(prob_all: np.ndarray, temperature: float | None) -> np.ndarray:
    """The calibrated P(ALL) from a stored uncalibrated one: with two classes only the logits' difference counts."""
    p = np.clip(np.asarray(prob_all, dtype=np.float64), 1e-7, 1 - 1e-7)
    difference = np.log(p) - np.log1p(-p)
    logits = torch.from_numpy(np.stack([np.zeros_like(difference), difference], -1))
    return calibrated(logits, temperature)[..., 1].numpy()
