"""How a probability of ALL becomes a call, for a cell and for a patient: the one threshold everything uses."""

from __future__ import annotations

import numpy as np

THRESHOLD = 0.5


def calls_all(prob_all: float | np.ndarray) -> bool | np.ndarray:
    """A cell is called ALL above the threshold; at exactly 0.5 it is HEM, as the argmax of [P(HEM), P(ALL)] is."""
    return prob_all > THRESHOLD


def diagnoses_all(mean_prob_all: float) -> bool:
    """A patient is called ALL when the mean P(ALL) of its cells reaches the threshold (a tie counts as ALL)."""
    return mean_prob_all >= THRESHOLD
