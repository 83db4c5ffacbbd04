"""What the "Models & results" tab shows: committed comparison results, model cards, credit and disclaimer."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import quote

import gradio as gr

from cnmc.export import CONFIG_NAME, TRAIN_PATIENTS_KEY
from serving.predict import ServedModel
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


def comparison_markdown(results_dir: Path = RESULTS_DIR) -> str:
    table = results_dir / "comparison.md"
    if table.is_file():
        return table.read_text()
    return f"_No results committed yet: `python -m training.compare RUNS... --output {results_dir.name}/` writes them._"


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
