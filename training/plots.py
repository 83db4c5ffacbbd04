"""Evaluation and training plots, written as PNG files: confusion matrix, ROC curves, per-epoch curves."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on training machines or in the Space

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from cycler import cycler  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay, roc_auc_score, roc_curve  # noqa: E402

from cnmc.cells import CLASS_NAMES  # noqa: E402

DISPLAY_NAMES = [name.upper() for name in CLASS_NAMES]
DPI = 150
PALETTE = 128


def plot_confusion_matrix(confusion_matrix: list[list[int]], path: str | Path, title: str = "") -> Path:
    """2x2 matrix (rows true, columns predicted, [HEM, ALL]) with counts and row percentages in the cells."""
    counts = np.asarray(confusion_matrix, dtype=np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    try:
        # Coloured by row rate, so the picture isn't dominated by the larger class.
        display = ConfusionMatrixDisplay(rates, display_labels=DISPLAY_NAMES)
        display.plot(ax=ax, cmap="Blues", colorbar=False, im_kw={"vmin": 0, "vmax": 1})
        for (row, column), text in np.ndenumerate(display.text_):
            text.set_text(f"{counts[row, column]:,}\n{100 * rates[row, column]:.1f} %")
        ax.set_title(title)
        return save_figure(fig, path)
    finally:
        plt.close(fig)


def plot_roc(curves: dict[str, tuple[list[int], list[float]]], path: str | Path, title: str = "") -> Path:
    """One ROC curve per name from (references, ALL scores), AUC in the legend; one name or an overlay of models."""
    fig, ax = plt.subplots(figsize=(5.5, 5.5 + 0.2 * len(curves)), layout="constrained")
    # Past ten curves the colours repeat: a new line style for each round keeps every legend entry its own.
    ax.set_prop_cycle(cycler(linestyle=["-", "-.", ":"]) * cycler(color=plt.get_cmap("tab10").colors))
    try:
        for name, (references, scores) in curves.items():
            if len(set(references)) < 2:
                # An invisible entry, so the legend says why the model has no curve.
                ax.plot([], [], " ", label=f"{name}: no curve, references hold one class")
                continue
            fpr, tpr, _ = roc_curve(references, scores, pos_label=1)
            ax.plot(fpr, tpr, label=f"{name} (AUC = {roc_auc_score(references, scores):.3f})")
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
        ax.set(
            xlim=(0, 1),
            ylim=(0, 1.01),
            xlabel="false positive rate (1 - specificity)",
            ylabel="true positive rate (sensitivity)",
            title=title,
        )
        ax.set_aspect("equal")
        fig.legend(loc="outside lower center", fontsize="small")  # below the axes: long names hide no curve
        return save_figure(fig, path)
    finally:
        plt.close(fig)


def plot_training_curves(rows: list[dict], path: str | Path, title: str = "") -> Path:
    """Loss, accuracy and weighted F1 per epoch, train vs validation; missing or None values are skipped."""
    panels = [("loss", "loss"), ("accuracy", "accuracy"), ("f1_weighted", "weighted F1")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.5), layout="constrained")
    try:
        for ax, (metric, label) in zip(axes, panels, strict=True):
            for split, split_label in (("train", "train"), ("val", "validation")):
                points = [
                    (row["epoch"], row[f"{split}_{metric}"]) for row in rows if row.get(f"{split}_{metric}") is not None
                ]
                if points:
                    epochs, values = zip(*points, strict=True)
                    ax.plot(epochs, values, marker="o", markersize=3, label=split_label)
            ax.set(xlabel="epoch", title=label)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize="small")
        fig.suptitle(title)
        return save_figure(fig, path)
    finally:
        plt.close(fig)


def plot_patients_by_size(
    patient_ids: list[str],
    labels: list[int],
    areas: list[float],
    scores: list[float],
    path: str | Path,
    title: str = "",
) -> Path:
    """One point per patient: mean cell area against the model's mean P(ALL), coloured by the true class.

    A model that only measures size puts its points on one rising curve, whatever the class.
    """
    patients: dict[str, list] = {}
    for patient, label, area, score in zip(patient_ids, labels, areas, scores, strict=True):
        patients.setdefault(patient, [label, [], []])
        patients[patient][1].append(area)
        patients[patient][2].append(score)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    try:
        for label, colour in ((1, "tab:red"), (0, "tab:blue")):
            members = {p: v for p, v in patients.items() if v[0] == label}
            x = [100 * np.mean(v[1]) for v in members.values()]
            y = [np.mean(v[2]) for v in members.values()]
            sizes = [8 + len(v[1]) / 4 for v in members.values()]
            ax.scatter(x, y, s=sizes, color=colour, alpha=0.7, label=f"{DISPLAY_NAMES[label]} patients")
            for name, xi, yi in zip(members, x, y, strict=True):
                ax.annotate(name, (xi, yi), fontsize=6, xytext=(3, 2), textcoords="offset points")
        ax.axhline(0.5, linestyle="--", color="grey", linewidth=0.8)
        ax.set(
            xlabel="mean cell area (% of the image)",
            ylabel="mean P(ALL) over the patient's cells",
            ylim=(0, 1),
            title=title,
        )
        ax.legend(fontsize="small", title="point size: cells", title_fontsize="small")
        return save_figure(fig, path)
    finally:
        plt.close(fig)


def save_figure(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=DPI, bbox_inches="tight")
    compact(Image.open(buffer)).save(path, optimize=True)
    return path


def compact(image: Image.Image) -> Image.Image:
    """A plot in a palette of :data:`PALETTE` colours: a third of the bytes of full RGB, which every run commits."""
    return image.convert("RGB").quantize(colors=PALETTE, method=Image.Quantize.MEDIANCUT)
