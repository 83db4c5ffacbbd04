"""The nucleus features on the real fixture cells: what they see, that a new batch's scale and stain barely move
them, and a clear error for an image with no cell."""

import numpy as np
import pytest
from PIL import Image

from scripts.experiments.nucleus_features import FEATURES, features, invariance
from tests.conftest import CNMC_ROOT
from training.data import CNMCDataError
from training.shifts import SHIFTS

CELLS = sorted((CNMC_ROOT / "training_data").glob("fold_*/*/*.webp"))


@pytest.fixture(scope="module")
def measured() -> np.ndarray:
    return np.array([features(Image.open(path), str(path)) for path in CELLS])


def test_features_describe_the_nucleus_and_its_rim(measured):
    assert measured.shape == (len(CELLS), len(FEATURES)) and len(CELLS) > 30
    nc = measured[:, list(FEATURES).index("nc_ratio")]
    assert np.all((nc > 0.3) & (nc < 1))  # a nucleus inside a rim of cytoplasm
    # UID_11_11_*: blasts trailing a pale tail of cytoplasm; UID_22_10_*: round cells that are nearly all nucleus.
    tailed = [i for i, p in enumerate(CELLS) if p.stem.startswith("UID_11_11_")]
    round_ = [i for i, p in enumerate(CELLS) if p.stem.startswith("UID_22_10_")]
    assert nc[tailed].max() < nc[round_].min()
    solidity = measured[:, list(FEATURES).index("cell_solidity")]
    assert solidity[tailed].max() < solidity[round_].min()


@pytest.mark.parametrize("shift", ["scale_1.33", "scale_0.75", "red_1.12", "brightness_0.90"])
def test_a_shifted_cell_keeps_its_features(measured, shift):
    apply = next(s for s in SHIFTS if s.name == shift)
    shifted = np.array([features(apply(Image.open(path)), str(path)) for path in CELLS])
    change = invariance(measured, {shift: shifted})
    # On average a cell moves by well under a fifth of a feature's spread across cells; under a 1.33x rescale the
    # log of its area moves by almost twice that spread.
    assert max(c[shift] for c in change.values()) < 0.2, change


def test_an_image_without_a_cell_is_a_clear_data_error():
    with pytest.raises(CNMCDataError, match="black.png is .*entirely black"):
        features(Image.new("RGB", (64, 64)), "black.png")
