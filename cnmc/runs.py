"""The run folder: every file a training run writes, by name, and the readers of the ones others read back.

    RUN/run_config.json                 every hyperparameter (training.train)
    RUN/metrics.csv                     a row per epoch, and RUN/training_curves.png
    RUN/model/                          the kept model in Hub format (cnmc.export)
    RUN/checkpoints/                    Accelerate state for --resume
    RUN/EVALUATION.json                 an evaluation's metrics; ``eval`` is the kept model on its validation patients
    RUN/EVALUATION_predictions.csv      its cells, one row each; committed results keep them gzipped (.csv.gz)
    RUN/EVALUATION_confusion_matrix.png and RUN/EVALUATION_roc.png
    RUN/size_dependence.json and RUN/patients_by_size.png   how far a model's score follows cell size

Evaluation, comparison, ensembles, calibration and the model card find these files through here.
"""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

RUN_CONFIG = "run_config.json"
METRICS = "metrics.csv"
TRAINING_CURVES = "training_curves.png"
MODEL = "model"
CHECKPOINTS = "checkpoints"
EVAL = "eval"
PREDICTIONS_SUFFIX = "_predictions.csv"
# The size test beside a model's pooled predictions (training.size_baseline), which the card shows.
SIZE_DEPENDENCE = "size_dependence.json"
PATIENTS_BY_SIZE = "patients_by_size.png"


def report_file(run_dir: str | Path, evaluation: str = EVAL) -> Path:
    return Path(run_dir) / f"{evaluation}.json"


def plot_name(evaluation: str, kind: str) -> str:
    """The file name of an evaluation's plot of one kind (``confusion_matrix``, ``roc``)."""
    return f"{evaluation}_{kind}.png"


def plot_file(report: str | Path, kind: str) -> Path:
    """That plot beside an evaluation's report."""
    report = Path(report)
    return report.with_name(plot_name(report.stem, kind))


def predictions_file(report: str | Path) -> Path:
    """The per-cell predictions beside an evaluation's report: the plain CSV, or the gzipped one if only it exists."""
    report = Path(report)
    plain = report.with_name(report.stem + PREDICTIONS_SUFFIX)
    packed = plain.with_name(plain.name + ".gz")
    return packed if packed.is_file() and not plain.is_file() else plain


def read_json(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: is {path.parent} a finished, validated training run?")
    return json.loads(path.read_text())


def read_run_config(run_dir: str | Path) -> dict:
    return read_json(Path(run_dir) / RUN_CONFIG)


def read_report(run_dir: str | Path, evaluation: str = EVAL) -> dict:
    return read_json(report_file(run_dir, evaluation))


def read_predictions(path: str | Path) -> list[dict[str, str]]:
    """The rows of a predictions CSV, plain or gzipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: training.evaluate or training.crossval writes it")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as handle:
        return list(csv.DictReader(handle))
