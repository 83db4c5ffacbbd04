"""Experiment: how much do scale- and stain-free nucleus features know, and do they hold under the shift protocol?

    python -m scripts.experiments.nucleus_features prepared --output results/nucleus-features

What a haematologist reads off a lymphocyte does not depend on its size in the frame or on the stain's strength:
the nucleus-to-cytoplasm ratio, the nucleus's outline, the chromatin's texture at a scale relative to the cell,
pale spots (nucleoli), the cytoplasm's colour relative to the nucleus's. Each cell is first resampled so that
its equivalent diameter is :data:`DIAMETER` pixels (always a reduction, antialiased, so that a rescaled copy of
the cell lands on the same pixels), and its colours are turned into optical densities relative to the cell's own
mean, so that a gain on a channel inside the cell (a redder or brighter batch) cancels. The nucleus is the part
of the cell that absorbs about as much more green than red and blue (the purple of haematoxylin; the cytoplasm
is paler and greyer) as the cell's median pixel does, within :data:`PURPLE_MARGIN`. :data:`FEATURES` names the
features and why each is there.

Gradient-boosted trees are cross-validated on the committed patient folds and scored under the shift protocol
exactly as ``scripts.experiments.handcrafted`` is. OUTPUT/eval.json with its plots and predictions,
OUTPUT/size_dependence.json, and OUTPUT/invariance.json: for each feature and shift, the mean absolute change
of the feature between a cell and its shifted copy, in units of the feature's spread (standard deviation)
across cells. A feature that moves under a shift measures the batch, not the cell.
"""

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi
from scipy.stats import skew
from skimage.feature import graycomatrix
from skimage.measure import regionprops

from cnmc import runs
from cnmc.cells import cell_mask
from scripts.experiments.handcrafted import trees
from training import atomic
from training.data import CNMCDataError, load_cnmc
from training.shifts import SHIFT_NAMES, SHIFTS
from training.size_baseline import (
    cell_area,
    cross_validate,
    matched_size_auc,
    size_dependence,
    write_baseline,
)

NAME = "scale- and stain-free nucleus features (gradient-boosted trees)"
INVARIANCE_NAME = "invariance.json"
# The cell's equivalent diameter after resampling: below the smallest prepared cell shrunk 0.75x (about 67 px),
# so every cell, shifted or not, is reduced to it and none is enlarged with made-up detail.
DIAMETER = 64
# The resampled border blends the cell with the black field; colours are read this many pixels inside it.
BORDER = 2
# Colour is smoothed over this many pixels before the nucleus is split off: chromatin grain is not the outline.
SMOOTHING = 2.0
# How much less purple (optical density units) than the cell's median pixel the cytoplasm is: its tails and blebs
# lie 0.3-0.6 below, chromatin within the nucleus mostly within 0.1.
PURPLE_MARGIN = 0.2
GREY_LEVELS = 16  # chromatin darkness quantised between the nucleus's own 1st and 99th percentiles
FEATURES = {
    "nc_ratio": "nucleus area over cell area: blasts have scant cytoplasm",
    "nucleus_solidity": "nucleus area over its convex hull's: clefts and indentations lower it",
    "nucleus_roughness": "perimeter squared over 4 pi area of the nucleus (1 for a disc): an irregular outline",
    "nucleus_eccentricity": "of the nucleus's fitted ellipse: elongated or folded nuclei",
    "nucleus_offset": "nucleus centroid's distance from the cell's, over the cell's radius: an eccentric nucleus",
    "cell_solidity": "cell area over its convex hull's: cytoplasm tails and blebs",
    "cell_eccentricity": "of the cell's fitted ellipse",
    "chromatin_spread": "standard deviation of optical density inside the nucleus: coarse, clumped chromatin",
    "chromatin_skew": "skewness of that density: pale spots such as nucleoli make it negative",
    "chromatin_contrast": "grey-level co-occurrence contrast of the nucleus at 1 and 2 px (of 64): grain",
    "chromatin_homogeneity": "grey-level co-occurrence homogeneity: fine, even chromatin is high",
    "nucleus_cytoplasm_r": "mean red inside the nucleus over mean red in the rest of the cell",
    "nucleus_cytoplasm_g": "the same for green",
    "nucleus_cytoplasm_b": "the same for blue",
}


def normalised_cell(rgb: np.ndarray, path: str) -> tuple[np.ndarray, np.ndarray]:
    """The cell's bounding box resampled to an equivalent diameter of :data:`DIAMETER` px: pixels (float) and mask."""
    cell = cell_mask(rgb)
    if cell.sum() < 2:
        raise CNMCDataError(f"{path} is (almost) entirely black, so it holds no cell")
    ys, xs = np.nonzero(cell)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    scale = DIAMETER / (2 * np.sqrt(cell.sum() / np.pi))
    size = (max(1, round((box[2] - box[0]) * scale)), max(1, round((box[3] - box[1]) * scale)))
    pixels = Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS, box=box)
    inside = Image.fromarray(cell.astype(np.uint8) * 255).resize(size, Image.Resampling.BILINEAR, box=box)
    return np.asarray(pixels).astype(np.float32), np.asarray(inside) > 127


def _smoothed(values: np.ndarray, where: np.ndarray) -> np.ndarray:
    # Normalised convolution: the black field outside the cell does not bleed into its edge.
    return ndi.gaussian_filter(values * where, SMOOTHING) / np.maximum(
        ndi.gaussian_filter(where * 1.0, SMOOTHING), 1e-6
    )


def nucleus_mask(density: np.ndarray, core: np.ndarray) -> np.ndarray:
    """The nucleus: where the cell absorbs more green than red and blue (purple) about as much as its median
    pixel does, holes filled. A fixed margin, not Otsu's threshold: most cells are nearly all nucleus, and a
    threshold forced between two classes that are not there would cut chromatin, a different cut at each shift."""
    purple = _smoothed(density[..., 1] - (density[..., 0] + density[..., 2]) / 2, core)
    return ndi.binary_fill_holes(core & (purple > np.median(purple[core]) - PURPLE_MARGIN)) & core


def _cooccurrence(darkness: np.ndarray, nucleus: np.ndarray) -> tuple[float, float]:
    """Contrast and homogeneity of the nucleus's darkness, quantised relative to its own range."""
    low, high = np.quantile(darkness[nucleus], [0.01, 0.99])
    levels = np.clip((darkness - low) / max(high - low, 1e-6) * GREY_LEVELS, 0, GREY_LEVELS - 1).astype(np.uint8) + 1
    levels[~nucleus] = 0  # level 0 is outside the nucleus and is dropped from the counts
    counts = graycomatrix(levels, [1, 2], [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4], GREY_LEVELS + 1, symmetric=True)
    pairs = counts[1:, 1:].sum(axis=(2, 3)).astype(np.float64)
    pairs /= max(pairs.sum(), 1)
    i, j = np.indices(pairs.shape)
    return float((pairs * (i - j) ** 2).sum()), float((pairs / (1 + np.abs(i - j))).sum())


def features(image, path: str) -> list[float]:
    """The cell's features, in the order of :data:`FEATURES`; a ratio with no cytoplasm to divide by is NaN."""
    pixels, inside = normalised_cell(np.asarray(image.convert("RGB")), path)
    core = ndi.binary_erosion(inside, iterations=BORDER)
    if core.sum() < DIAMETER:
        raise CNMCDataError(f"{path} holds no cell large or solid enough to find a nucleus in")
    # Optical density relative to the cell's mean: a gain on a channel adds a constant, which the mean takes away.
    density = -np.log(np.maximum(pixels, 1) / 255)
    density -= density[core].mean(0)
    nucleus = nucleus_mask(density, core)
    cell_shape = regionprops(inside.astype(np.uint8))[0]
    nucleus_shape = regionprops(nucleus.astype(np.uint8))[0]
    darkness = density.sum(-1)
    contrast, homogeneity = _cooccurrence(darkness, nucleus)
    rest = core & ~nucleus
    colour_ratios = (
        pixels[nucleus].mean(0) / np.maximum(pixels[rest].mean(0), 1) if rest.sum() >= DIAMETER else [np.nan] * 3
    )
    radius = np.sqrt(inside.sum() / np.pi)
    return [
        float(nucleus.sum() / inside.sum()),
        float(nucleus_shape.solidity),
        float(nucleus_shape.perimeter**2 / (4 * np.pi * nucleus.sum())),
        float(nucleus_shape.eccentricity),
        float(np.hypot(*np.subtract(nucleus_shape.centroid, cell_shape.centroid)) / radius),
        float(cell_shape.solidity),
        float(cell_shape.eccentricity),
        float(darkness[nucleus].std()),
        float(skew(darkness[nucleus])),
        contrast,
        homogeneity,
        *map(float, colour_ratios),
    ]


def measure(batch: dict) -> dict:
    """A batch of cells' features, cell area and features after each shift of the protocol (``features@NAME``)."""
    pairs = list(zip(batch["image"], batch["path"], strict=True))
    measured = {"features": [features(image, path) for image, path in pairs]}
    measured["cell_area"] = [cell_area(image) for image in batch["image"]]  # for the size test only
    for shift in SHIFTS:  # the same cells after each shift of the protocol, scored by the same fits
        measured[f"features@{shift.name}"] = [features(shift(image), path) for image, path in pairs]
    return measured


def invariance(original: np.ndarray, shifted: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """For each feature, each shift's mean absolute change per cell over the feature's spread across cells."""
    spread = np.nanstd(original, axis=0)
    return {
        name: {
            s: round(float(np.nanmean(np.abs(values[:, i] - original[:, i])) / spread[i]), 3)
            for s, values in shifted.items()
        }
        for i, name in enumerate(FEATURES)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_dir", help="C-NMC_Leukemia, or a prepared copy of it")
    parser.add_argument("--cv-split", default="splits/cnmc_cv3_seed0.json")
    parser.add_argument("--output", type=Path, required=True, help="the experiment's folder")
    parser.add_argument("--num-proc", type=int, help="processes that measure cells (default: one)")
    args = parser.parse_args()

    data = load_cnmc(args.data_dir, verify=False).map(
        measure, batched=True, batch_size=64, num_proc=args.num_proc, desc="Measuring cells"
    )
    result, rows = cross_validate(
        data, args.cv_split, features=lambda split: np.array(split["features"]), classifier=trees, name=NAME
    )
    write_baseline(result, rows, args.output)
    labels, areas = np.array([r["label"] for r in rows]), np.array([r["cell_area"] for r in rows])
    pooled = np.concatenate([np.array(data[s]["features"]) for s in data])
    pooled_labels = np.concatenate([data[s]["label"] for s in data])
    pooled_areas = np.concatenate([data[s]["cell_area"] for s in data])
    each = {
        n: matched_size_auc(pooled_labels, np.nan_to_num(pooled[:, i]), pooled_areas) for i, n in enumerate(FEATURES)
    }
    dependence = size_dependence(np.array([r["prob_all"] for r in rows]), labels, areas) | {
        "each_feature_at_matched_size": {n: round(max(auc, 1 - auc), 3) for n, auc in each.items()},
    }
    atomic.write_text(args.output / runs.SIZE_DEPENDENCE, json.dumps(dependence, indent=2) + "\n")
    shifted = {n: np.concatenate([np.array(data[s][f"features@{n}"]) for s in data]) for n in SHIFT_NAMES}
    moves = invariance(pooled, shifted)
    atomic.write_text(
        args.output / INVARIANCE_NAME,
        json.dumps({"measure": invariance.__doc__, "features": FEATURES, "change": moves}, indent=2) + "\n",
    )
    print(
        f"ROC-AUC {dependence['roc_auc_model']:.3f}, among cells of the same size "
        f"{dependence['roc_auc_model_at_matched_size']:.3f}"
    )
    print("mean |change| / spread, per feature and shift:")
    for name, row in moves.items():
        print(f"  {name:<24}" + " ".join(f"{row[s]:6.3f}" for s in SHIFT_NAMES))


if __name__ == "__main__":
    main()
