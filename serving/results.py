"""What the "Models & results" tab shows: committed comparison results, model cards, credit and disclaimer."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import gradio as gr
import numpy as np

from cnmc import runs
from cnmc.calibration import calibrated_prob_all
from cnmc.decision import calls_all
from cnmc.export import CALIBRATION_NAME, CONFIG_NAME, TRAIN_PATIENTS_KEY
from cnmc.load import read_calibration
from serving.predict import UNCERTAIN, UNCERTAIN_BAND, ServedModel, in_uncertain_band
from serving.registry import ROOT

RESULTS_DIR = ROOT / "results"
CARDS_DIR = ROOT / "models"
DISCLAIMER = (
    "**Research and education only, not for diagnosis.** These models have not been validated for clinical use; "
    "a prediction is no substitute for a haematologist's review."
)
# Measured on cells that are not in this repository (official fold_2); the shift protocol is what every run here
# can measure instead (training.shifts, the comparison table's shift columns).
NEW_BATCH = (
    "**On a new acquisition batch.** The MobileNetV2 shipped here was scored on 727 cells of 13 donors of official "
    "fold_2 (4 ALL, 9 healthy), which no model here trained on and which come from another acquisition batch: "
    "weighted F1 0.713, ROC-AUC 0.766, sensitivity 0.957, **specificity 0.437**, 9 of 13 donors right (all 4 ALL, "
    "5 of 9 healthy), against 0.828 cross-validated. Healthy cells there are larger and redder, and the model "
    "learned the training batch's cell size and stain, so it over-calls them ALL. The table's shift columns score "
    "every recipe on the same failure: each cell rescaled (0.75-1.33x) and with its stain shifted; no recipe is "
    "adopted whose weighted F1 falls by more than 0.03 under any shift. With the full C-NMC download, score a "
    "model on that batch with `python -m training.evaluate --model models/mobilenetv2 --data-dir PATH --folds "
    "fold_2 --output fold2.json`."
)
DATASET_CREDIT = (
    "Trained on C-NMC 2019, published on The Cancer Imaging Archive under "
    "[CC BY 3.0](https://creativecommons.org/licenses/by/3.0/): Gupta, A., & Gupta, R. (2019). "
    "ALL Challenge dataset of ISBI 2019 [Data set]. The Cancer Imaging Archive. "
    "https://doi.org/10.7937/tcia.2019.dc64i46r"
)


# The shipped model's cross-validation under results/: its recipe's folder, the seed it shipped, that seed's
# pooled out-of-fold evaluations (single view, and flip-averaged as the app serves), and the folder of the final
# model trained on every patient, whose calibration.json holds the temperature the app applies.
SHIPPED_RUN = "cpu-mobilenetv2-mildcolour-cv3"
SHIPPED_SEED = "seed0"
SHIPPED_POOLED, SHIPPED_SERVED, SHIPPED_FINAL = f"{SHIPPED_SEED}/pooled", f"{SHIPPED_SEED}/pooled_tta", "all"
SHIPPED_MARK = "★"
# Every file under results/ this module reads, as paths or patterns from the repository's root: the Space and the
# Docker image carry these and nothing else of results/ (hub.push_space; .dockerignore lists the same).
READS = [
    "results/comparison.md",
    "results/comparison.json",
    "results/*.png",
    f"results/{SHIPPED_RUN}/{SHIPPED_FINAL}/{CALIBRATION_NAME}",
    *(f"results/{SHIPPED_RUN}/{part}/{runs.EVAL}.json" for part in (SHIPPED_POOLED, SHIPPED_SERVED)),
    f"results/{SHIPPED_RUN}/{SHIPPED_SERVED}/{runs.EVAL}{runs.PREDICTIONS_SUFFIX}.gz",
]


def comparison_markdown(results_dir: Path = RESULTS_DIR) -> str:
    """results/comparison.md with the shipped model's recipe marked, its ± kept on one line, and a caption on why
    its figures are not the README's."""
    table = results_dir / "comparison.md"
    if not table.is_file():
        command = f"python -m training.compare RUNS... --output {results_dir.name}/"
        return f"_No results committed yet: `{command}` writes them._"
    text = table.read_text().replace(" ± ", "\u00a0±\u00a0")  # "0.810 ± 0.052" never splits across lines
    lines, shipped = text.splitlines(), _shipped_row(results_dir)
    rows = [i for i, line in enumerate(lines) if line.startswith("|")][2:]  # after the header and its rule
    if shipped is not None and shipped < len(rows):
        cells = lines[rows[shipped]].split("|")
        cells[1] = f" **{SHIPPED_MARK} {cells[1].strip()}** "
        lines[rows[shipped]] = "|".join(cells)
    return "\n\n".join([_comparison_caption(results_dir), "\n".join(lines)])


def _shipped_row(results_dir: Path) -> int | None:
    """Which of comparison.json's rows (comparison.md's, in the same order: training.compare writes both from one
    list) holds the shipped model's runs."""
    path = results_dir / "comparison.json"
    if not path.is_file():
        return None
    marker = f"/{SHIPPED_RUN}/{SHIPPED_SEED}/"
    found = [i for i, row in enumerate(json.loads(path.read_text())) if any(marker in f"/{r}" for r in row["runs"])]
    return found[0] if found else None


def _comparison_caption(results_dir: Path) -> str:
    caption = (
        f"_Each figure is the **mean ± sd over runs**: every fold's model of every seed, each scored on its own "
        f"unseen patients. {SHIPPED_MARK} marks the shipped model's recipe (it shipped seed 0)._"
    )
    try:
        single, served = (runs.read_report(results_dir / SHIPPED_RUN / f) for f in (SHIPPED_POOLED, SHIPPED_SERVED))
    except FileNotFoundError:
        return caption
    cells = int(np.sum(single["confusion_matrix"]))
    return caption[:-1] + (
        f" The README quotes **pooled out-of-fold** numbers instead: seed 0's three folds scored together on all "
        f"{cells:,} cells, weighted F1 {single['f1_weighted']:.3f} ({served['f1_weighted']:.3f} averaged over the "
        "four flips, as the app serves), so they differ from these means._"
    )


@dataclass(frozen=True)
class Band:
    """How the uncertain band fell on the shipped model's pooled out-of-fold predictions, as the app serves them."""

    cells: int
    patients: int
    share: float  # of all cells, inside the band
    share_all: float  # of the ALL cells
    share_hem: float  # of the healthy cells
    right_outside: float  # of the cells outside it, called right
    right_inside: float  # of those inside, right had they been called at the threshold


def uncertain_band(results_dir: Path = RESULTS_DIR) -> Band | None:
    """The band on every cell of the shipped seed's cross-validation (each scored by a fold model that never saw its
    patient), flip-averaged and calibrated with the shipped model's temperature; None without those files."""
    run = results_dir / SHIPPED_RUN
    calibration = read_calibration(run / SHIPPED_FINAL)
    try:
        rows = runs.read_predictions(runs.predictions_file(runs.report_file(run / SHIPPED_SERVED)))
    except FileNotFoundError:
        return None
    if calibration is None or not rows:
        return None
    labels = np.array([int(r["label"]) for r in rows])
    # The stored flip average is of uncalibrated probabilities; the app calibrates each flip, then averages: on the
    # 56 real cells in tests/fixtures and examples/ the two orders differ by at most 0.006.
    prob = calibrated_prob_all(np.array([float(r["prob_all"]) for r in rows]), calibration["temperature"])
    inside = in_uncertain_band(prob)
    right = calls_all(prob) == (labels == 1)
    return Band(
        cells=len(rows),
        patients=len({r["patient_id"] for r in rows}),
        share=float(inside.mean()),
        share_all=float(inside[labels == 1].mean()),
        share_hem=float(inside[labels == 0].mean()),
        right_outside=float(right[~inside].mean()),
        right_inside=float(right[inside].mean()),
    )


def band_markdown(band: Band | None) -> str:
    """What "uncertain: refer to an expert" means in practice, and how often it came up on unseen patients."""
    low, high = UNCERTAIN_BAND
    text = (
        f'**"{UNCERTAIN}"** means the calibrated P(ALL) lies between {low:.2f} and {high:.2f}: the model can\'t tell '
        "this cell from the other class, so it makes no call, and the cell needs a haematologist's reading (or more "
        "cells of the same patient)."
    )
    if band is None:
        return text
    return text + (
        f" On {band.cells:,} cells of {band.patients} patients, each scored by a cross-validation model that never "
        f"saw that patient (the shipped model's recipe and seed, averaged over the four flips, calibrated), "
        f"**{band.share:.0%} of cells** fell in the band ({band.share_all:.0%} of the ALL cells, "
        f"{band.share_hem:.0%} of the healthy ones). Outside it {band.right_outside:.0%} of the calls were right; "
        f"inside it a call at 0.5 would have been right for only {band.right_inside:.0%}."
    )


def uncertain_note(band: Band | None) -> str:
    """One line for a verdict that is uncertain: what to do, and how often it happens."""
    note = "_Too close to call, so no call is made: this cell needs a haematologist's reading."
    if band is None:
        return note + "_"
    return note + (
        f" {band.share:.0%} of cells from patients the model never saw land in this band; a call at 0.5 was right "
        f"for only {band.right_inside:.0%} of them._"
    )


def result_plots(results_dir: Path = RESULTS_DIR) -> list[str]:
    return [str(p) for p in sorted(results_dir.glob("*.png"))]


def shown_source(source: str) -> str:
    """Where a model comes from, without this server's folders: a shipped folder relative to the app, any other
    folder by its name, a Hub repo id as it is."""
    path = Path(source)
    if not path.is_absolute():
        return source
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


# A card's image linked by a path relative to the card: what resolves on the Hub, beside the card.
_RELATIVE_IMAGE = re.compile(r"!\[([^\]]*)\]\(([\w.-]+\.png)\)")


def _card(readme: Path) -> str:
    """A model card without its YAML header, its images served by the app from the card's folder."""
    text = readme.read_text()
    text = text.split("---\n", 2)[2] if text.startswith("---\n") and text.count("---\n") >= 2 else text
    return _RELATIVE_IMAGE.sub(lambda match: _served_image(match, readme.parent), text)


def _served_image(match: re.Match, folder: Path) -> str:
    """The image at gradio's file route (a relative link would 404 in the app); just that file is made servable."""
    path = (folder / match[2]).resolve()
    if not path.is_file():
        return match[0]
    gr.set_static_paths([path])
    return f"![{match[1]}](/gradio_api/file={quote(str(path))})"


def model_card_markdown(model: ServedModel, cards_dir: Path = CARDS_DIR) -> str:
    """The model folder's README.md without its YAML header, then its config.json. For a model that is unavailable,
    why, then its card as committed under ``cards_dir/<name>/`` when there is one (the large models' weights are not
    in the repository, their cards are)."""
    if not model.available:
        committed = cards_dir / model.name.lower() / "README.md"
        parts = [f"**{model.name}**: {model.status}"]
        if committed.is_file():
            parts += ["_Its card as committed to this repository, without the weights:_", _card(committed)]
        return "\n\n".join(parts)
    folder = model.loaded.folder
    readme = folder / "README.md"
    parts = [f"**{model.name}**: {model.status}, from `{shown_source(model.source)}`"]
    if readme.is_file():
        parts.append(_card(readme))
    config = folder / CONFIG_NAME
    if config.is_file():
        settings = json.loads(config.read_text())
        patients = settings.pop(TRAIN_PATIENTS_KEY, None)  # 42 ids would bury the preprocessing
        if patients is not None:
            parts.append(f"Trained on {len(patients)} patients: {', '.join(patients)}.")
        parts.append(f"```json\n{json.dumps(settings, indent=2)}\n```")
    return "\n\n".join(parts)
