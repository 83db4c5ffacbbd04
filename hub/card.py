"""The model card (the Hub repo's README.md), built from a trained run's own files.

A run folder holds ``model/`` (config.json, model.safetensors, maybe calibration.json), ``run_config.json``
(hyperparameters), ``eval.json`` (the saved model's validation evaluation) and the plots in :data:`PLOTS`. The prose
is :data:`TEMPLATE`, a jinja2 template. ``python -m hub.card`` rewrites the cards of the folders in models/ from the
committed copies of their runs' files (:data:`SHIPPED_RUNS`).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import jinja2
import timm
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from safetensors import safe_open

from cnmc import runs
from cnmc.backbones import Backbone, resolve_backbone
from cnmc.cells import CLASS_NAMES
from cnmc.export import CELL_NORMALIZATION_KEY, CONFIG_NAME, LABEL_NAMES, WEIGHTS_NAME, imagenet_tag
from cnmc.load import read_calibration
from serving.registry import MODELS, ROOT, RegisteredModel
from training.crossval import OTHER_SEED_METRICS

# A local path means nothing to the card's readers and can reveal the trainer's machine.
_LOCAL_ONLY = {"data_dir"}
FLIPPED_EVAL = "eval_tta"  # the same patients, averaged over the four flips (training.crossval)
# File name -> caption; the card shows, and the repo carries, those the run has.
PLOTS = {
    runs.plot_name(runs.EVAL, "confusion_matrix"): "Confusion matrix on the validation patients",
    runs.plot_name(runs.EVAL, "roc"): "ROC curve on the validation patients",
    runs.TRAINING_CURVES: "Training curves",
    runs.PATIENTS_BY_SIZE: "Mean P(ALL) against mean cell area, one point per evaluated patient",
}
# safetensors' names of floating-point dtypes, as the card writes them.
_SAFETENSORS_DTYPES = {"F16": "half precision (float16)", "BF16": "bfloat16", "F32": "full precision (float32)"}
# Below this ROC-AUC among cells of about the same size, a model has learned little beyond the cell's size.
SIZE_ONLY_AUC = 0.6
# The TCIA collection's name. C-NMC is not a Hub dataset, so the front matter has no `datasets:` (the card links
# it instead); model-index requires a dataset type, which the Hub shows unlinked.
DATASET_ID = "C-NMC_2019"
DATASET_NAME = "C-NMC 2019 (ALL Challenge of ISBI 2019)"
DATASET_URL = "https://doi.org/10.7937/tcia.2019.dc64i46r"
CITATION = (
    "Gupta, A., & Gupta, R. (2019). ALL Challenge dataset of ISBI 2019 [Data set]. "
    f"The Cancer Imaging Archive. {DATASET_URL}"
)
TAGS = ["image-classification", "timm", "medical", "leukemia"]
# models/NAME -> the committed copy of the run folder its card is written from (the run folders stay with their
# trainers): run_config.json, eval.json, eval_tta.json, size_dependence.json and the plots.
SHIPPED_RUNS = {
    "mobilenetv2": "results/cpu-mobilenetv2-mildcolour-cv3/all",
    "vgg19": "results/gpu-h200-vgg19-cv3/all",
    "inceptionv3": "results/cpu-inceptionv3-cv3/e12-all",
    "resnet101v2": "results/cpu-resnet101v2-cv3/all",
}
# models/NAME -> its shipped weights scored under the shift protocol on official fold_1, cells they trained on, where
# the cross-validation predates the protocol and its fold weights were not kept (training.evaluate's eval.json).
SHIFTS_ON_TRAINING_CELLS = {
    "mobilenetv2": "results/shipped-mobilenetv2-shifts/eval.json",
    "inceptionv3": "results/shipped-inceptionv3-shifts/eval.json",
}
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


TEMPLATE = Path(__file__).with_name("card_template.md")  # the card's prose, which model_card fills in


@functools.cache
def _template() -> jinja2.Template:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE.parent),
        undefined=jinja2.StrictUndefined,  # a name the template misspells fails loudly instead of vanishing
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # markdown, not HTML
    )
    environment.filters["number"] = _number
    return environment.get_template(TEMPLATE.name)


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
    tag = imagenet_tag(config.get("pretrained_cfg", {}).get("tag"))
    full = f"{name}.{tag}" if tag else name
    registered = timm.models.get_pretrained_cfg(full)
    return (registered.hf_hub_id if registered and registered.hf_hub_id else None) or f"timm/{full}"


def model_card(
    model_dir: str | Path,
    *,
    repo_id: str,
    run_dir: str | Path | None = None,
    shifts_on_training_cells: str | Path | None = None,
) -> ModelCard:
    """The card of ``model_dir``, whose run folder (by default its parent) holds run_config.json, eval.json, plots.

    ``shifts_on_training_cells``: an eval.json of these weights under the shift protocol on cells they trained on,
    shown when the run's own evaluation predates the protocol.
    """
    model_dir = Path(model_dir)
    run_dir = model_dir.parent if run_dir is None else Path(run_dir)
    config = read_json(model_dir / CONFIG_NAME, "not a model folder written by cnmc.export")
    run = read_json(run_dir / runs.RUN_CONFIG, "the card needs the training run's hyperparameters")
    evaluation = read_json(runs.report_file(run_dir), "the card needs the saved model's validation evaluation")
    protocol, training_cells = evaluation.get("shift_protocol"), None
    if not protocol and shifts_on_training_cells:
        shifted = read_json(Path(shifts_on_training_cells), "the shift protocol on the cells the model trained on")
        protocol, training_cells = (
            shifted.get("shift_protocol"),
            f"{shifted['num_cells']:,} cells of {shifted['split']}",
        )
    name = repo_id.split("/")[-1]
    data = ModelCardData(
        model_name=name,
        library_name="timm",
        license="apache-2.0",
        tags=TAGS,
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
    body = _template().render(
        name=name,
        repo_id=repo_id,
        **_model_facts(config, run),
        **_evaluation_tables(evaluation, _read_optional_json(runs.report_file(run_dir, FLIPPED_EVAL))),
        **_shift_tables(protocol, training_cells),
        plots=[(p.name, PLOTS[p.name]) for p in present_plots(run_dir)],
        calibration=read_calibration(model_dir),
        weights=_stored_weights(model_dir),
        hyperparameters_table=_table(
            ["hyperparameter", "value"], _flatten({k: v for k, v in run.items() if k not in _LOCAL_ONLY})
        ),
        size=_read_optional_json(run_dir / runs.SIZE_DEPENDENCE),
        size_only_auc=SIZE_ONLY_AUC,
        dataset_url=DATASET_URL,
        citation=CITATION,
    )
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def _model_facts(config: dict, run: dict) -> dict:
    """What the card says about the architecture, its start and its preprocessing."""
    architecture = config["architecture"]
    try:
        backbone = resolve_backbone(architecture)
    except ValueError:
        backbone = Backbone(architecture, architecture, architecture, 0)
    built_with = {k: v for k, v in (config.get("model_args") or {}).items() if k in backbone.model_args}
    cfg = {"crop_pct": 1.0, "interpolation": "bicubic", "mean": None, "std": None, **config.get("pretrained_cfg", {})}
    _, height, width = cfg.get("input_size", (3, "?", "?"))
    return {
        "display": backbone.display_name,
        "architecture": architecture,
        "built_with": ", ".join(f"{k}={v!r}" for k, v in built_with.items()),
        "architecture_note": backbone.architecture_note,
        "pretrained": bool(run.get("pretrained")),
        "base_model": base_model(config),
        "cfg": cfg,
        "height": height,
        "width": width,
        "norm": config.get(CELL_NORMALIZATION_KEY),
        "labels": config.get("label_names") or [LABEL_NAMES[name] for name in CLASS_NAMES],
    }


def _stored_weights(model_dir: Path) -> dict | None:
    """The precision and size of the folder's model.safetensors, if it has one."""
    file = model_dir / WEIGHTS_NAME
    if not file.is_file():
        return None
    with safe_open(file, "pt") as weights:
        dtypes = {weights.get_slice(k).get_dtype() for k in weights.keys()}
    floating = sorted(d for d in dtypes if d.startswith(("F", "BF")))
    return {"dtypes": ", ".join(_SAFETENSORS_DTYPES.get(d, d) for d in floating), "mb": file.stat().st_size / 1e6}


def _evaluation_tables(evaluation: dict, flipped: dict | None) -> dict:
    """The evaluation and its tables, as the template shows them."""
    (tn, fp), (fn, tp) = evaluation["confusion_matrix"]
    tables = {
        "evaluation": evaluation,
        "metrics_table": _table(
            ["metric", "value"],
            [(label, _number(evaluation[key])) for key, label in _METRICS.items() if evaluation.get(key) is not None],
        ),
        "confusion_table": _table(["true \\ predicted", "HEM", "ALL"], [("HEM", tn, fp), ("ALL", fn, tp)]),
        "note": evaluation.get("note"),
        "folds_table": None,
        "seeds_table": None,
        "flipped_scores": None,
    }
    if evaluation.get("folds"):  # pooled out-of-fold predictions (training.crossval): each fold's own scores too
        tables["folds_table"] = _table(
            ["fold run", "epoch", *(name for _, name in _INDEXED.values())],
            [(f["run"], f["epoch"], *(_number(f[k]) for k in _INDEXED)) for f in evaluation["folds"]],
        )
    if evaluation.get("other_seeds"):  # training.crossval --other-seed: the same recipe's other draws
        columns = {k: _METRICS[k].split(" (")[0] for k in OTHER_SEED_METRICS}
        tables["seeds_table"] = _table(
            ["cross-validation", *columns.values()],
            [("the one above", *(_number(evaluation[k]) for k in columns))]
            + [(f"seed {s['seed']}", *(_number(s[k]) for k in columns)) for s in evaluation["other_seeds"]],
        )
    if flipped:
        tables["flipped_scores"] = ", ".join(
            f"{label} {_number(flipped[key])}" for key, label in _FLIPPED.items() if flipped.get(key) is not None
        )
    return tables


def _shift_tables(protocol: dict | None, training_cells: str | None) -> dict:
    """The shift protocol's results as the template shows them; ``training_cells``: which cells the model trained on
    it was measured on, when not out of fold."""
    if not (protocol and protocol.get("shifts")):
        return {"shift": None, "shift_table": None, "shift_training_cells": None}
    table = _table(
        ["shift", "weighted F1", "change", "specificity", "ROC AUC", "mean abs. change of P(ALL)"],
        [
            (name, _number(s["f1_weighted"]), f"{-s['f1_drop']:+.4f}", _number(s["specificity"]),
             _number(s["roc_auc"]), _number(s["mean_abs_delta_p_all"]))
            for name, s in protocol["shifts"].items()
        ],
    )  # fmt: skip
    return {"shift": protocol, "shift_table": table, "shift_training_cells": training_cells}


def shipped_run(model_dir: Path) -> Path:
    """The committed run files of a folder in models/ (:data:`SHIPPED_RUNS`)."""
    if model_dir.name not in SHIPPED_RUNS:
        raise FileNotFoundError(f"hub.card.SHIPPED_RUNS names no run folder for {model_dir}: add its run's files")
    return ROOT / SHIPPED_RUNS[model_dir.name]


def shipped_card(model: RegisteredModel) -> ModelCard:
    """The card of a registered model's folder in models/, from its committed run files."""
    shifts = SHIFTS_ON_TRAINING_CELLS.get(model.local_dir.name)
    return model_card(
        model.local_dir,
        repo_id=model.repo_id,
        run_dir=shipped_run(model.local_dir),
        shifts_on_training_cells=ROOT / shifts if shifts and (ROOT / shifts).is_file() else None,
    )


def write_shipped_cards() -> list[Path]:
    """Rewrite the README.md of each registered model's folder in models/ that exists; return the cards written."""
    written = []
    for model in MODELS:
        if (model.local_dir / CONFIG_NAME).is_file():
            shipped_card(model).save(model.local_dir / "README.md")
            written.append(model.local_dir / "README.md")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hub.card",
        description="Rewrite the model cards in models/ from their committed run files, naming the registry's Hub "
        "ids (CNMC_HUB_ORG sets the organisation).",
    )
    parser.parse_args(argv)
    try:
        for card in write_shipped_cards():
            print(f"wrote {card.relative_to(ROOT)}")
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


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


if __name__ == "__main__":
    sys.exit(main())
