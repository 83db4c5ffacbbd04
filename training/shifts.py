"""The shift protocol: every evaluated cell is scored again after the changes a new acquisition batch brings.

C-NMC's fold_0 and fold_1 share one acquisition batch, so cross-validation over them can't see a model that
learned the batch's cell size or stain instead of the cell. On 13 donors of official fold_2 healthy cells are
about a third larger in area (log area -1.82 against -2.10) and redder (mean red inside the cell 0.287 against
0.257), and the shipped model fell from 0.83 to 0.71 weighted F1 there. So each cell is also scored:

- rescaled about the frame's centre, padded or cropped back to the frame with black: 0.75x, 0.87x, 1.15x and
  1.33x in linear size (1.15x is about the area change seen there);
- with its red channel scaled by 1.12 (the redness seen there) or by 1/1.12, inside the cell;
- with all channels scaled by 1.1 or 0.9 inside the cell (brightness).

The adoption rule (README): no recipe is adopted whose weighted F1 falls by more than :data:`MAX_F1_DROP`
under any shift, whatever its plain cross-validated score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from cnmc.cells import cell_mask
from cnmc.decision import calls_all
from training.metrics import cnmc_metric

MAX_F1_DROP = 0.03
# A shifted prediction's column in a predictions CSV: "prob_all@scale_0.75".
COLUMN_PREFIX = "prob_all@"


@dataclass(frozen=True)
class Shift:
    """One controlled change of a cell image: a rescale about the centre, or a gain on channels inside the cell."""

    name: str
    kind: str  # "scale" or "stain"
    factor: float
    channels: tuple[int, ...] = (0, 1, 2)  # for "stain": the RGB channels the gain applies to

    def __call__(self, image: Image.Image) -> Image.Image:
        image = image.convert("RGB")
        return _rescale(image, self.factor) if self.kind == "scale" else _gain(image, self.factor, self.channels)


def _rescale(image: Image.Image, factor: float) -> Image.Image:
    """``image`` enlarged or shrunk by ``factor`` about its centre, on a black frame of the same size."""
    width, height = image.size
    resized = image.resize((round(width * factor), round(height * factor)), Image.Resampling.BICUBIC)
    frame = Image.new("RGB", image.size)
    # A negative offset crops the enlarged image to the frame; a positive one pads the shrunk one.
    frame.paste(resized, ((width - resized.width) // 2, (height - resized.height) // 2))
    return frame


def _gain(image: Image.Image, factor: float, channels: tuple[int, ...]) -> Image.Image:
    """``channels`` scaled by ``factor`` inside the cell; the black background stays as it is."""
    pixels = np.asarray(image).astype(np.float32)
    inside = cell_mask(pixels)
    for channel in channels:
        pixels[..., channel] = np.where(inside, pixels[..., channel] * factor, pixels[..., channel])
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


RED = (0,)
SHIFTS: tuple[Shift, ...] = (
    *(Shift(f"scale_{f:.2f}", "scale", f) for f in (0.75, 0.87, 1.15, 1.33)),
    Shift("red_1.12", "stain", 1.12, RED),
    Shift("red_0.89", "stain", 1 / 1.12, RED),
    Shift("brightness_1.10", "stain", 1.1),
    Shift("brightness_0.90", "stain", 0.9),
)
SHIFT_NAMES = [s.name for s in SHIFTS]


def _metrics(labels: np.ndarray, scores: np.ndarray, patient_ids: Sequence[str]) -> dict:
    metric = cnmc_metric()
    result = metric.compute(
        predictions=calls_all(scores).astype(int).tolist(),
        references=labels.tolist(),
        scores=scores.tolist(),
        patient_ids=list(patient_ids),
    )
    return {k: result[k] for k in ("f1_weighted", "specificity", "recall", "roc_auc", "patient_accuracy")}


def shift_report(
    labels: Sequence[int], patient_ids: Sequence[str], scores: Sequence[float], shifted_scores: Mapping[str, Sequence]
) -> dict:
    """Each shift's scores beside the unshifted ones, and whether the worst weighted-F1 drop passes the rule.

    ``scores`` are P(ALL) per cell as evaluated; ``shifted_scores`` maps a shift's name to P(ALL) of the same cells
    after that shift. A cell is called as ``cnmc.decision.calls_all`` calls it, as in the plain evaluation.
    """
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    plain = _metrics(labels, scores, patient_ids)
    per_shift = {}
    for name, values in shifted_scores.items():
        values = np.asarray(values, dtype=np.float64)
        measured = _metrics(labels, values, patient_ids)
        per_shift[name] = measured | {
            "f1_drop": plain["f1_weighted"] - measured["f1_weighted"],
            "mean_abs_delta_p_all": float(np.abs(values - scores).mean()),
        }
    worst = max(per_shift, key=lambda n: per_shift[n]["f1_drop"]) if per_shift else None
    return {
        "rule": f"weighted F1 falls by at most {MAX_F1_DROP} under every shift",
        "unshifted": plain,
        "shifts": per_shift,
        "worst_shift": worst,
        "max_f1_drop": per_shift[worst]["f1_drop"] if worst else None,
        "passes": bool(worst) and per_shift[worst]["f1_drop"] <= MAX_F1_DROP,
    }


def columns_of(rows: Sequence[Mapping]) -> dict[str, list[float]]:
    """The shifted P(ALL) columns that every row of a predictions CSV holds, by shift name."""
    columns = [k for k in (rows[0] if rows else {}) if k.startswith(COLUMN_PREFIX)]
    complete = [k for k in columns if all(r.get(k) not in (None, "") for r in rows)]  # 0.0 is a score
    return {k.removeprefix(COLUMN_PREFIX): [float(r[k]) for r in rows] for k in complete}


def summary_line(report: dict) -> str:
    """One line for a terminal: the worst shift and whether the rule holds."""
    if not report["shifts"]:
        return "shifts: none scored"
    worst = report["shifts"][report["worst_shift"]]
    verdict = "passes" if report["passes"] else "fails"
    return (
        f"shifts: worst {report['worst_shift']} (wF1 {worst['f1_weighted']:.3f}, drop {report['max_f1_drop']:+.3f}, "
        f"specificity {worst['specificity']:.3f}); {verdict} the rule ({report['rule']})"
    )
