"""The model card (the Hub repo's README.md), built from a trained run's own files.

A run folder holds ``model/`` (config.json, model.safetensors, maybe calibration.json), ``run_config.json``
(hyperparameters), ``eval.json`` (the saved model's validation evaluation) and the plots in :data:`PLOTS`.
"""

from __future__ import annotations

import json
from pathlib import Path

import timm
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from cnmc.backbones import resolve_backbone
from cnmc.export import CELL_NORMALIZATION_KEY, CONFIG_NAME
from cnmc.load import read_calibration
from training.crossval import OTHER_SEED_METRICS
from training.size_baseline import DEPENDENCE_NAME, PLOT_NAME

RUN_CONFIG_NAME = "run_config.json"
# A local path means nothing to the card's readers and can reveal the trainer's machine.
_LOCAL_ONLY = {"data_dir"}
EVAL_NAME = "eval.json"
FLIPPED_EVAL_NAME = "eval_tta.json"  # the same patients, averaged over the four flips (training.crossval)
# File name -> caption; the card shows, and the repo carries, those the run has.
PLOTS = {
    "eval_confusion_matrix.png": "Confusion matrix on the validation patients",
    "eval_roc.png": "ROC curve on the validation patients",
    "training_curves.png": "Training curves",
    PLOT_NAME: "Mean P(ALL) against mean cell area, one point per evaluated patient",
}
# Below this ROC-AUC among cells of about the same size, a model has learned little beyond the cell's size.
SIZE_ONLY_AUC = 0.6
# The TCIA collection's name; C-NMC is not a Hub dataset, so the Hub shows it unlinked.
DATASET_ID = "C-NMC_2019"
DATASET_NAME = "C-NMC 2019 (ALL Challenge of ISBI 2019)"
DATASET_URL = "https://doi.org/10.7937/tcia.2019.dc64i46r"
CITATION = (
    "Gupta, A., & Gupta, R. (2019). ALL Challenge dataset of ISBI 2019 [Data set]. "
    f"The Cancer Imaging Archive. {DATASET_URL}"
)
TAGS = ["image-classification", "timm", "medical", "leukemia"]
# eval.json key -> (model-index metric type, display name); model-index carries these, the body all of _METRICS.
_INDEXED = {
    "accuracy": ("accuracy", "Accuracy"),
    "f1_weighted": ("f1", "Weighted F1"),
    "roc_auc": ("roc_auc", "ROC AUC"),
    "patient_accuracy": ("patient_accuracy", "Patient accuracy"),
}
_METRICS = {
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "f1_weighted": "Weighted F1",
    "f1_macro": "Macro F1",
    "precision": "Precision (ALL)",
    "recall": "Recall / sensitivity (ALL)",
    "specificity": "Specificity (HEM)",
    "roc_auc": "ROC AUC",
    "patient_accuracy": "Patient accuracy (one call per patient: mean P(ALL) of its cells)",
    "mean_patient_cell_accuracy": "Mean per-patient cell accuracy",
}
# The flip-averaged scores the card quotes in one sentence.
_FLIPPED = {
    "f1_weighted": "weighted F1",
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "roc_auc": "ROC AUC",
    "recall": "sensitivity",
    "specificity": "specificity",
}


def read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {what}")
    return json.loads(path.read_text())


def _read_optional_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def present_plots(run_dir: Path) -> list[Path]:
    return [run_dir / name for name in PLOTS if (run_dir / name).is_file()]


def base_model(config: dict) -> str:
    """The Hub id of the ImageNet weights training started from, e.g. ``timm/mobilenetv2_100.ra_in1k``."""
    name = config["architecture"]
    tag = config.get("pretrained_cfg", {}).get("tag")
    full = f"{name}.{tag}" if tag else name
    registered = timm.models.get_pretrained_cfg(full)
    return (registered.hf_hub_id if registered and registered.hf_hub_id else None) or f"timm/{full}"


def model_card(model_dir: str | Path, *, repo_id: str) -> ModelCard:
    """The card of ``model_dir``, whose run folder (its parent) holds run_config.json, eval.json and plots."""
    model_dir = Path(model_dir)
    run_dir = model_dir.parent
    config = read_json(model_dir / CONFIG_NAME, "not a model folder written by cnmc.export")
    run = read_json(run_dir / RUN_CONFIG_NAME, "the card needs the training run's hyperparameters")
    evaluation = read_json(run_dir / EVAL_NAME, "the card needs the saved model's validation evaluation")
    name = repo_id.split("/")[-1]
    data = ModelCardData(
        model_name=name,
        library_name="timm",
        license="apache-2.0",
        tags=TAGS,
        datasets=[DATASET_ID],
        metrics=["accuracy", "f1"],
        pipeline_tag="image-classification",
        base_model=base_model(config) if run.get("pretrained") else None,
        eval_results=[
            EvalResult(
                task_type="image-classification",
                dataset_type=DATASET_ID,
                dataset_name=DATASET_NAME,
                dataset_split=evaluation["split"],
                metric_type=metric_type,
                metric_name=metric_name,
                metric_value=evaluation[key],
            )
            for key, (metric_type, metric_name) in _INDEXED.items()
            if evaluation.get(key) is not None
        ],
    )
    calibration = read_calibration(model_dir)
    size = _read_optional_json(run_dir / DEPENDENCE_NAME)
    flipped = _read_optional_json(run_dir / FLIPPED_EVAL_NAME)
    plots = [p.name for p in present_plots(run_dir)]
    body = _body(name, repo_id, config, run, evaluation, flipped, plots, calibration, size)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def _body(
    name: str,
    repo_id: str,
    config: dict,
    run: dict,
    evaluation: dict,
    flipped: dict | None,
    plots: list[str],
    calibration: dict | None,
    size: dict | None,
) -> str:
    architecture = config["architecture"]
    try:
        display = resolve_backbone(architecture).display_name
    except ValueError:
        display = architecture
    cfg = config.get("pretrained_cfg", {})
    _, height, width = cfg.get("input_size", (3, "?", "?"))
    start = (
        f"fine-tuned from the ImageNet weights `{base_model(config)}`"
        if run.get("pretrained")
        else "trained from scratch (random initialisation, no ImageNet weights)"
    )
    sections = [
        f"# {name}",
        f"{display} (timm `{architecture}`), {start}, that classifies a single white-blood-cell microscope image "
        "from C-NMC 2019 as **ALL** (acute lymphoblastic leukaemia, label 1, `all`) or **HEM** (healthy, "
        "label 0, `hem`).\n\n"
        "> **Research and education only. Not a medical device: do not use it to diagnose or treat anyone.**",
        "## Intended use\n\n"
        "Research on, and teaching of, blood-cell image classification: reproducing and comparing CNN baselines "
        "on C-NMC 2019. It is **not** for diagnosis, screening or any clinical decision.",
        "## Training data\n\n"
        f"[C-NMC 2019]({DATASET_URL}) (the ALL Challenge of ISBI 2019): segmented single-cell images, 450 x 450 px, "
        "of lymphoblasts from ALL patients and normal B cells from healthy donors, published on The Cancer "
        f"Imaging Archive under CC BY 3.0.\n\n> {CITATION}\n\n"
        + _preprocessing(config)
        + f"the centre {cfg.get('crop_pct', 1.0):.1%} of the field, resized "
        f"({cfg.get('interpolation', 'bicubic')}) to {height} x {width} px, normalised with mean {cfg.get('mean')} "
        f"and std {cfg.get('std')}.",
        _evaluation(evaluation, flipped, plots),
        _shifts(evaluation.get("shift_protocol")),
        _usage(repo_id, calibration, normalised=CELL_NORMALIZATION_KEY in config),
        "## Training hyperparameters\n\n"
        + _table(["hyperparameter", "value"], _flatten({k: v for k, v in run.items() if k not in _LOCAL_ONLY})),
        _limitations(run, size),
        "## Licence and citation\n\n"
        "The model code and weights are released under Apache-2.0. The training images are C-NMC 2019, "
        f"CC BY 3.0: credit them wherever this model is used.\n\n```\n{CITATION}\n```",
    ]
    return "\n\n".join(sections) + "\n"


def _preprocessing(config: dict) -> str:
    norm = config.get(CELL_NORMALIZATION_KEY)
    if not norm:
        return "Preprocessing (stored in `config.json`, applied by timm's eval transform): "
    return (
        "Preprocessing, in two steps. First the cell normalisation that `config.json` records as "
        "`cell_normalization` (timm's config can't express it, so timm and transformers don't apply it by "
        "themselves; see How to use): each RGB channel is scaled so that its mean over the cell's pixels (those "
        f"whose brightest channel is above 10) is {norm['channel_means']} (0-255), then the image is resampled "
        f"(bicubic) about the cell's centroid so that the cell covers {norm['area']:.0%} of the frame, centred on "
        f"black (the scale kept within 1/{norm['max_zoom']:g}-{norm['max_zoom']:g}x). This takes the acquisition "
        "batch's cell size and stain intensity out of the image. Then timm's eval transform, from the "
        "`pretrained_cfg` in `config.json`: "
    )


def _shifts(protocol: dict | None) -> str:
    if not protocol or not protocol.get("shifts"):
        return (
            "## Under a shift of size or stain\n\nNot measured: this model's evaluation predates the shift protocol "
            "(`training.shifts`). This project's models trained without cell normalisation followed the cell's "
            "size and stain when put to it."
        )
    rows = [
        (name, _number(s["f1_weighted"]), f"{-s['f1_drop']:+.4f}", _number(s["specificity"]), _number(s["roc_auc"]),
         _number(s["mean_abs_delta_p_all"]))
        for name, s in protocol["shifts"].items()
    ]  # fmt: skip
    plain = protocol["unshifted"]
    verdict = "passes" if protocol["passes"] else "fails"
    return (
        "## Under a shift of size or stain\n\n"
        "A new acquisition batch changes the cells' size and stain (healthy cells of official fold_2 are larger and "
        "redder than those of fold_0 and fold_1). The same cells as above, scored again after each shift of the "
        f"project's protocol (`training.shifts`); unshifted: weighted F1 {_number(plain['f1_weighted'])}, "
        f"specificity {_number(plain['specificity'])}.\n\n"
        + _table(["shift", "weighted F1", "change", "specificity", "ROC AUC", "mean abs. change of P(ALL)"], rows)
        + f"\n\nIt **{verdict}** the project's adoption rule: {protocol['rule']} (worst: {protocol['worst_shift']}, "
        f"{-protocol['max_f1_drop']:+.4f})."
    )


def _evaluation(evaluation: dict, flipped: dict | None, plots: list[str]) -> str:
    (tn, fp), (fn, tp) = evaluation["confusion_matrix"]
    metrics = _table(
        ["metric", "value"],
        [(label, _number(evaluation[key])) for key, label in _METRICS.items() if evaluation.get(key) is not None],
    )
    confusion = _table(["true \\ predicted", "HEM", "ALL"], [("HEM", tn, fp), ("ALL", fn, tp)])
    figures = "\n\n".join(f"![{PLOTS[plot]}]({plot})" for plot in plots)
    if evaluation.get("folds"):  # pooled out-of-fold predictions (training.crossval): each fold's own scores too
        folds = _table(
            ["fold run", "epoch", *(name for _, name in _INDEXED.values())],
            [(f["run"], f["epoch"], *(_number(f[k]) for k in _INDEXED)) for f in evaluation["folds"]],
        )
        metrics += f"\n\nEach fold's model on its own validation patients:\n\n{folds}"
    if evaluation.get("other_seeds"):  # training.crossval --other-seed: the same recipe's other draws
        columns = {k: _METRICS[k].split(" (")[0] for k in OTHER_SEED_METRICS}
        seeds = _table(
            ["cross-validation", *columns.values()],
            [("the one above", *(_number(evaluation[k]) for k in columns))]
            + [(f"seed {s['seed']}", *(_number(s[k]) for k in columns)) for s in evaluation["other_seeds"]],
        )
        metrics += (
            "\n\nA cross-validation with one seed is one draw of the recipe. The same recipe with other seeds, "
            f"cross-validated on the same patients, pooled the same way:\n\n{seeds}"
        )
    if evaluation.get("note"):
        metrics += f"\n\n{evaluation['note']}"
    if flipped:
        scores = ", ".join(
            f"{label} {_number(flipped[key])}" for key, label in _FLIPPED.items() if flipped.get(key) is not None
        )
        metrics += f"\n\nAveraged over the four flips of each cell (the app's default), on the same cells: {scores}."
    pooled = (
        "This model trained on all of these patients, so it is scored through its recipe: the cross-validation "
        "models of the same recipe, each on the patients it never trained on, pooled.\n\n"
        if evaluation.get("folds")
        else ""
    )
    return (
        "## Evaluation\n\n"
        "Cells of one patient are highly correlated, so the model is evaluated **by patient**: no patient of the "
        "validation data contributed a single cell to training (a random cell split scores far higher than the "
        "model deserves).\n\n"
        f"{pooled}Evaluated on **{evaluation['split']}**: {evaluation['num_cells']:,} cells of "
        f"{evaluation['num_patients']} patients. Positive class: ALL.\n\n"
        f"{metrics}\n\nConfusion matrix (cells):\n\n{confusion}" + (f"\n\n{figures}" if figures else "")
    )


def _usage(repo_id: str, calibration: dict | None, *, normalised: bool = False) -> str:
    text = ""
    if normalised:
        text += (
            "\n\n**Apply the cell normalisation first** with timm or transformers: `config.json`'s "
            "`cell_normalization` holds its settings, and `CellNormalization(**settings)` in this project's "
            "`cnmc/preprocessing.py` (numpy and Pillow only, about 30 lines) is the reference implementation: "
            "`image = CellNormalization(area=..., channel_means=(...), max_zoom=...)(image)` before the transform "
            "above, or before the pipeline. Without it the model sees cells at a size and stain it never trained "
            "on. `cnmc.load.load_model` applies it for you."
        )
    if calibration:
        text += (
            f"\n\n`calibration.json` holds a temperature T = {calibration['temperature']:.2f}, fitted on the "
            "predictions for patients unseen in training (the evaluation above): `(logits / T).softmax(-1)` gives "
            "calibrated probabilities (the app applies it)."
        )
        if "nll_before" in calibration:  # what training.calibrate measured on those cells
            text += (
                f" On those {calibration['cells']:,} cells it takes the log-loss from {calibration['nll_before']:.3f} "
                f"to {calibration['nll_after']:.3f}, and the expected calibration error from "
                f"{calibration['ece_before']:.3f} to {calibration['ece_after']:.3f}."
            )
    return (
        "## How to use\n\n"
        "With timm (labels by index: 0 `hem`, 1 `all`):\n\n"
        "```python\n"
        "import timm\n"
        "import torch\n"
        "from PIL import Image\n\n"
        f'model = timm.create_model("hf-hub:{repo_id}", pretrained=True).eval()\n'
        "transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))\n"
        'x = transform(Image.open("cell.bmp").convert("RGB")).unsqueeze(0)\n'
        "with torch.no_grad():\n"
        "    probabilities = model(x).softmax(-1)[0]\n"
        'print({"hem": probabilities[0].item(), "all": probabilities[1].item()})\n'
        "```\n\n"
        "With transformers (through its timm wrapper):\n\n"
        "```python\n"
        "from transformers import pipeline\n\n"
        f'classifier = pipeline("image-classification", model="{repo_id}")\n'
        'classifier("cell.bmp")\n'
        "```\n\n"
        "In this project's app and tools (`cnmc.load` returns the model, its transform, labels and temperature):\n\n"
        "```python\n"
        "from cnmc.load import load_model\n\n"
        f'loaded = load_model("{repo_id}")\n'
        "```" + text
    )


def _limitations(run: dict, size: dict | None) -> str:
    items = [
        "Not validated clinically; a research baseline only.",
        "Trained and evaluated on part of C-NMC 2019 only (the labelled official training folds at hand, "
        "a few dozen patients), not on the challenge's test sets; patient-level results rest on few patients.",
        "Single site, single staining protocol: other labs, stains, microscopes or cameras will shift the images "
        "and the model has not seen such shifts.",
        "Expects one cell, segmented and centred on a black background, as in C-NMC; raw smears, other cell "
        "types or other segmentations are out of scope.",
    ]
    if not run.get("pretrained"):
        items.insert(1, "Trained from scratch (no ImageNet pre-training), which usually generalises worse.")
    if size:  # what training.size_baseline measured on the evaluation's predictions
        matched = size["roc_auc_model_at_matched_size"]
        verdict = (
            "Its score largely follows the cell's size."
            if matched < SIZE_ONLY_AUC
            else "It uses more than the cell's size, but size still weighs in."
        )
        items.insert(
            1,
            f"{verdict} On the {size['cells']:,} evaluated cells the rank correlation of its P(ALL) with the "
            f"cell's area is {size['rank_correlation_score_area']:.2f} (Spearman); the area alone reaches "
            f"ROC-AUC {size['roc_auc_area_alone']:.3f} (the model {size['roc_auc_model']:.3f}), and among cells of "
            f"about the same size the model's ROC-AUC is {matched:.3f}. Blasts are larger than normal lymphocytes, "
            "so size is a real cue, but an image at another magnification or scale can mislead the model.",
        )
    return "## Limitations\n\n" + "\n".join(f"- {item}" for item in items)


def _flatten(values: dict, prefix: str = "") -> list[tuple[str, str]]:
    rows = []
    for key, value in values.items():
        if isinstance(value, dict) and value:
            rows += _flatten(value, f"{prefix}{key}.")
        else:
            rows.append((f"{prefix}{key}", ", ".join(map(str, value)) if isinstance(value, list) else str(value)))
    return rows


def _number(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _table(header: list[str], rows: list[tuple]) -> str:
    def line(cells: tuple) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *map(line, rows)])
