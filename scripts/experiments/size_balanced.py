"""Experiment: a prepared copy in which cell size says nothing about the label.

    python -m scripts.experiments.size_balanced prepared prepared-sizebal
    python -m training.train ... --data-dir prepared-sizebal --cv-split splits/cnmc_cv3_seed0.json --cv-fold K

The shipped recipe's score is mostly the cell's size (results/size-baseline/). Here the cells are put in the
size test's equal-count bins of cell area, and each bin keeps as many ALL cells as HEM cells (all of the rarer
class, a seeded random sample of the other), so within a bin the classes are even and size carries no label. A
model trained on this copy can only score above chance on its size-balanced validation patients by seeing
something other than size: the question is whether there is such a signal for a from-scratch CNN to learn.
"""

import json
import sys
from pathlib import Path

import numpy as np

from training.data import PREPARED_MARKER, load_prepared
from training.size_baseline import SIZE_BINS, add_cell_area, size_bins

SEED = 0


def balanced_rows(labels: np.ndarray, areas: np.ndarray, seed: int = SEED) -> np.ndarray:
    """Sorted row indices that keep, in every size bin, equally many cells of each class."""
    rng = np.random.default_rng(seed)
    which = size_bins(areas)
    keep = []
    for b in range(SIZE_BINS):
        by_class = [np.flatnonzero((which == b) & (labels == c)) for c in (0, 1)]
        n = min(len(rows) for rows in by_class)
        keep += [rng.choice(rows, n, replace=False) for rows in by_class]
    return np.sort(np.concatenate(keep))


def main(source: str, target: str) -> None:
    out = Path(target)
    out.mkdir(parents=True, exist_ok=True)
    meta = json.loads((Path(source) / PREPARED_MARKER).read_text())
    dataset_dict = add_cell_area(load_prepared(source), shifts=())
    # One set of bins over every split, as the size test bins its pooled predictions.
    names = list(dataset_dict)
    offsets = np.cumsum([0] + [len(dataset_dict[n]) for n in names])
    labels = np.concatenate([dataset_dict[n]["label"] for n in names])
    keep = balanced_rows(labels, np.concatenate([dataset_dict[n]["cell_area"] for n in names]))
    for i, name in enumerate(names):
        rows = keep[(keep >= offsets[i]) & (keep < offsets[i + 1])] - offsets[i]
        split = dataset_dict[name].select(rows).remove_columns("cell_area")
        split.to_parquet(str(out / meta["splits"][name]["file"]))
        meta["splits"][name]["rows"] = len(split)
        print(f"{name}: kept {len(split)} of {len(dataset_dict[name])} cells")
    meta["size_balanced"] = {"bins": SIZE_BINS, "seed": SEED}
    (out / PREPARED_MARKER).write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
