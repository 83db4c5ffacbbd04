"""Experiment: where does the shipped model's Grad-CAM point, and at which layer can a haematologist read it?

    python -m scripts.experiments.gradcam_reading DATA_DIR --output results/gradcam-reading

At 128 px the app's first Grad-CAM, at MobileNetV2's last feature map, put its hot spot on the black background
below both example cells. Three explanations compete: the last map is a 4x4 grid (each square 32 px of a 128 px
view), the network favours a fixed place in the frame (border bias), or the model reads the cell's size and the
map marks its edge. For ``--cells`` cells of each class drawn from DATA_DIR (C-NMC's layout, or a prepared copy),
at the last feature maps of stride 32 (4x4), 16 (8x8) and 8 (16x16), single view and averaged over the four
flips (serving.gradcam.explain), it measures:

- ``empty_maps``: the share of cells where no part of the view raised P(ALL) (the map is all zero); the measures
  below leave them out;
- ``background_share``: the map's weight on the black background;
- ``peak_on_background``: the share of cells whose map peaks off the cell;
- ``modal_peak_share``: the share of cells whose peak falls on the most common pixel: a map tied to the frame,
  not to the cell, peaks in one place;
- ``follows_flip`` and ``stays_in_frame`` (single view): the correlation of the map of the upside-down cell with
  the map flipped (it follows the cell) and with the map as it was (it stays where it was in the frame);
- ``deletion_top`` and ``deletion_bottom``: on cells called ALL, the change of the served (flip-averaged)
  P(ALL) when the 20 % of the cell's pixels that the map, kept to the cell, ranks highest, or lowest, are
  painted with the cell's mean colour, which keeps its size and outline. A map that marks ALL evidence lowers
  P(ALL) more at its top than at its bottom.

Two controls: a textureless disc of the training cells' median area and mean colour (what size and colour alone
score), and every cell rescaled 0.75x and 1.33x as the shift protocol does (training.shifts). OUTPUT/
gradcam_reading.json holds the numbers; OUTPUT/examples.png the two example cells at the old and the new layer.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import datasets
import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

from cnmc.load import LoadedModel, load_model  # noqa: E402
from cnmc.preprocessing import CellNormalization, flip_averaged  # noqa: E402
from serving.gradcam import Explanation, explain, target_layer  # noqa: E402
from serving.predict import ALL_INDEX  # noqa: E402
from training import atomic  # noqa: E402
from training.data import load_cnmc  # noqa: E402
from training.plots import save_figure  # noqa: E402
from training.shifts import Shift  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = [ROOT / "examples" / "UID_11_10_1_all.bmp", ROOT / "examples" / "UID_H6_10_1_hem.webp"]
REDUCTIONS = (32, 16, 8)
DELETED = 0.2  # the share of the cell's pixels painted over
MEDIAN_AREA = 0.16  # the training cells' median share of the frame (cnmc.preprocessing.CellNormalization)
RESCALES = (0.75, 1.33)


def served_prob(loaded: LoadedModel, x: torch.Tensor) -> float:
    """The app's flip-averaged, calibrated P(ALL) of one transformed view."""
    with torch.no_grad():
        logits = flip_averaged(loaded.model, x.unsqueeze(0))
    return float((logits / (loaded.temperature or 1.0)).softmax(-1)[0, ALL_INDEX])


def deletion(loaded: LoadedModel, image: Image.Image, found: Explanation) -> tuple[float, float]:
    """The change of P(ALL) with the map's top, then its bottom, :data:`DELETED` of the cell painted flat."""
    x = loaded.transform(image)
    mask = torch.from_numpy(found.mask)
    inside = found.heat[found.mask]
    flat = x[:, mask].mean(1, keepdim=True)
    before = served_prob(loaded, x)
    changes = []
    for region in (found.heat >= np.quantile(inside, 1 - DELETED), found.heat <= np.quantile(inside, DELETED)):
        painted = x.clone()
        where = mask & torch.from_numpy(region)
        painted[:, where] = flat.expand(-1, int(where.sum()))
        changes.append(served_prob(loaded, painted) - before)
    return changes[0], changes[1]


def correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1]) if a.std() > 0 and b.std() > 0 else None


def peak(found: Explanation) -> tuple[int, int] | None:
    """Where the map is highest; None for an empty map (no part raised P(ALL))."""
    if found.heat.max() <= 0:
        return None
    return tuple(int(i) for i in np.unravel_index(found.heat.argmax(), found.heat.shape))


def summarise(cells: list[dict]) -> dict:
    """The means over cells; peaks only over the maps that are not empty (an empty map has no peak)."""
    drawn = [c for c in cells if c["peak"] is not None]
    modal, count = Counter(c["peak"] for c in drawn).most_common(1)[0]
    summary = {
        "empty_maps": 1 - len(drawn) / len(cells),
        "background_share": np.mean([c["background_share"] for c in drawn]),
        "peak_on_background": np.mean([c["peak_on_background"] for c in drawn]),
        "modal_peak": list(modal),
        "modal_peak_share": count / len(drawn),
    }
    for key in ("follows_flip", "stays_in_frame", "deletion_top", "deletion_bottom"):
        values = [c[key] for c in cells if c.get(key) is not None]
        if values:
            summary[key] = np.mean(values)
    return {k: round(float(v), 3) if isinstance(v, float | np.floating) else v for k, v in summary.items()}


def measure(loaded: LoadedModel, image: Image.Image, layer: str, flips: bool, called_all: bool) -> dict:
    found = explain(loaded, image, ALL_INDEX, layer=layer, flips=flips)
    top = peak(found)
    row = {"background_share": found.outside_share, "peak": top, "peak_on_background": top and not found.mask[top]}
    if not flips:
        upside_down = explain(
            loaded, image.transpose(Image.Transpose.FLIP_TOP_BOTTOM), ALL_INDEX, layer=layer, flips=False
        )
        row["follows_flip"] = correlation(upside_down.heat, found.heat[::-1])
        row["stays_in_frame"] = correlation(upside_down.heat, found.heat)
    if called_all and found.heat[found.mask].max() > 0:
        row["deletion_top"], row["deletion_bottom"] = deletion(loaded, image, found)
    return row


def disc(size: int = 450) -> Image.Image:
    """A textureless cell: a centred disc of the training cells' median area and mean colour on black."""
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    pixels = np.zeros((size, size, 3), np.uint8)
    pixels[x**2 + y**2 <= MEDIAN_AREA * size**2 / np.pi] = np.rint(CellNormalization().channel_means)
    return Image.fromarray(pixels)


def figure(loaded: LoadedModel, layers: dict[int, str], path: Path) -> Path:
    fig, axes = plt.subplots(len(EXAMPLES), 2, figsize=(9, 2.4 * len(EXAMPLES)))
    for row, cell in zip(axes, EXAMPLES, strict=True):
        image = Image.open(cell).convert("RGB")
        old = explain(loaded, image, ALL_INDEX, layer=layers[32], flips=False)
        new = explain(loaded, image, ALL_INDEX, layer=layers[16], flips=True)
        old_picture = Explanation(old.view, old.heat, np.ones_like(old.mask)).picture()  # as the app showed it
        row[0].imshow(old_picture)
        row[0].set_title(f"{cell.name}: last map (4x4), single view", fontsize=8)
        row[1].imshow(new.picture())
        row[1].set_title(
            f"stride-16 map (8x8), 4 flips, kept to the cell ({new.outside_share:.0%} fell outside)", fontsize=8
        )
        for axis in row:
            axis.axis("off")
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path, help="C-NMC's training folders, or a prepared copy")
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "mobilenetv2")
    parser.add_argument(
        "--last-layer", default="bn2", help="the last feature map, where the app took Grad-CAM until 2026-12-04"
    )
    parser.add_argument("--cells", type=int, default=100, help="cells of each class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    loaded = load_model(str(args.model))
    layers = {32: args.last_layer} | {r: target_layer(loaded.model, r) for r in REDUCTIONS[1:]}
    data = datasets.concatenate_datasets(list(load_cnmc(args.data_dir, verify=False).values()))
    labels, rng = np.array(data["label"]), np.random.default_rng(args.seed)
    drawn = [int(i) for c in (0, 1) for i in rng.permutation(np.flatnonzero(labels == c))[: args.cells]]
    rows = {(r, flips): [] for r in REDUCTIONS for flips in (False, True)}
    rescaled = {f: {"change": [], "background_share": []} for f in RESCALES}
    for n, i in enumerate(drawn):
        image = data[i]["image"].convert("RGB")
        prob = served_prob(loaded, loaded.transform(image))
        for (reduction, flips), cells in rows.items():
            cells.append(measure(loaded, image, layers[reduction], flips, prob > 0.5))
        for factor in RESCALES:
            copy = Shift(f"scale_{factor}", "scale", factor)(image)
            rescaled[factor]["change"].append(served_prob(loaded, loaded.transform(copy)) - prob)
            rescaled[factor]["background_share"].append(explain(loaded, copy, ALL_INDEX).outside_share)
        if n % 50 == 0:
            print(f"{n}/{len(drawn)} cells", flush=True)
    textureless = explain(loaded, disc(), ALL_INDEX, layer=layers[32], flips=False)
    final_peaks = rows[(32, False)]
    result = {
        "model": args.model.name,
        "cells": len(drawn),
        "note": "cells drawn from the shipped model's own training patients; the map's behaviour, not its accuracy",
        "layers": {str(r): layers[r] for r in REDUCTIONS},
        "maps": {f"stride_{r}{'_flips' if flips else ''}": summarise(cells) for (r, flips), cells in rows.items()},
        "textureless_disc": {
            "prob_all": round(served_prob(loaded, loaded.transform(disc())), 3),
            "last_map_peak": list(peak(textureless)),
            "cells_sharing_that_peak": round(
                np.mean([c["peak"] == peak(textureless) for c in final_peaks if c["peak"]]), 3
            ),
        },
        "rescaled": {
            str(f): {k: round(float(np.mean(v)), 3) for k, v in values.items()} for f, values in rescaled.items()
        },
    }
    args.output.mkdir(parents=True, exist_ok=True)
    atomic.write_text(args.output / "gradcam_reading.json", json.dumps(result, indent=2) + "\n")
    figure(loaded, layers, args.output / "examples.png")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
