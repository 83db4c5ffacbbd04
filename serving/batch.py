"""Batch prediction: one row per file with each model's P(ALL) and the ensemble's, a CSV, a per-patient summary."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import pandas as pd

from cnmc.cells import CLASS_NAMES, parse_cell_name
from cnmc.decision import calls_all
from serving.images import BatchItem
from serving.lookalike import check_lookalike
from serving.predict import UNCERTAIN, ServedModel, ensemble, predict, unlike_training, verdict

ENSEMBLE = "ensemble"
# One batch request's budget. A C-NMC patient has a few hundred 450 x 450 cells; the budget holds a thousand, and
# the time limit keeps a batch of large or slow files from holding the server for minutes.
MAX_FILES = 1000
MAX_PIXELS = MAX_FILES * 450 * 450
MAX_SECONDS = 120
CSV_PREFIX = "cnmc-batch-"
CSV_MAX_AGE_S = 3600


class BatchResult(NamedTuple):
    table: pd.DataFrame
    cut: str | None  # why files were left out, for the user; None when every file was processed


def predict_batch(
    models: Sequence[ServedModel],
    items: Iterable[BatchItem],
    total: int,
    progress: Callable[[int, int], None] = lambda done, total: None,
    *,
    flips: bool = False,
) -> BatchResult:
    """One row per item, until the batch's budget (:data:`MAX_FILES`, :data:`MAX_PIXELS`, :data:`MAX_SECONDS`) is
    spent: file, each model's calibrated P(ALL), with two models or more their ensemble's mean (:data:`ENSEMBLE`),
    the verdict on that mean or on the one model's P(ALL) (none for an image unlike a C-NMC cell, the warning says
    why), and any error. ``items`` is consumed lazily, one decoded image at a time, and the
    budget is checked before each, so nothing past it is decoded.

    With ``flips``, each probability is averaged over the image's four flips (see ``serving.predict``).
    """
    shown = min(total, MAX_FILES)
    rows, pixels, start, cut = [], 0, time.monotonic(), None
    items = iter(items)
    while len(rows) < total:
        cut = _spent(len(rows), total, pixels, time.monotonic() - start)
        item = None if cut else next(items, None)
        if item is None:
            break
        row = {"file": item.name}
        if item.image is None:
            row["error"] = item.error
        else:
            predictions = [predict(model, item.image.image, flips=flips) for model in models]
            row |= {p.model: round(p.prob_all, 4) for p in predictions}
            mean_all = ensemble(predictions)  # as Compare averages, on unrounded probabilities
            if len(models) > 1:
                row[ENSEMBLE] = round(mean_all, 4)
            lookalike = check_lookalike(item.image.image)
            row |= {
                "verdict": verdict(mean_all, lookalike.looks_like_cell),
                "warning": "; ".join(lookalike.reasons) or unlike_training(models, item.image.image),
                "error": "",
            }
            pixels += item.image.image.width * item.image.image.height
        rows.append(row)
        progress(len(rows), shown)
    return BatchResult(pd.DataFrame(rows, columns=table_columns(models)), cut)


def _spent(done: int, total: int, pixels: int, seconds: float) -> str | None:
    """Why the batch stops before its next file, or None while its budget lasts."""
    if done >= MAX_FILES:
        return f"only the first {MAX_FILES} of {total} files are processed"
    if pixels >= MAX_PIXELS:
        return (
            f"stopped after {done} of {total} files: a batch may hold {MAX_PIXELS:,} pixels; "
            "send the rest in another batch"
        )
    if seconds >= MAX_SECONDS:
        return (
            f"stopped after {done} of {total} files: a batch may take {MAX_SECONDS} s; send the rest in another batch"
        )
    return None


def table_columns(models: Sequence[ServedModel]) -> list[str]:
    return ["file", *(m.name for m in models), *([ENSEMBLE] * (len(models) > 1)), "verdict", "warning", "error"]


def verdict_column(models: Sequence[ServedModel]) -> str:
    """The column whose P(ALL) the verdict is on: the ensemble's, or the one model's."""
    return ENSEMBLE if len(models) > 1 else models[0].name


def patient_summary(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per patient, for files named like C-NMC cells (``UID_<patient>_..._<all|hem>``), from the P(ALL) in
    ``column`` (:func:`verdict_column`); empty if no file is named so."""
    rows = []
    for _, row in table[table["error"] == ""].iterrows():
        try:
            patient, label = parse_cell_name(PurePosixPath(row["file"]).name)
        except ValueError:
            continue
        rows.append({"patient": patient, "label": CLASS_NAMES[label], "p_all": row[column]})
    names = {
        "label": "label (from file name)",
        "mean_p_all": "mean P(ALL)",
        "call": "patient call (mean P(ALL))",
        "called_all": "cells called ALL",
        "uncertain": "cells uncertain",
        "accuracy": "cell accuracy",
    }
    if not rows:
        return pd.DataFrame(columns=["patient", names["label"], "cells", *list(names.values())[1:]])
    cells = pd.DataFrame(rows)
    cells["called_all"] = calls_all(cells["p_all"])
    cells["uncertain"] = cells["p_all"].map(verdict) == UNCERTAIN
    cells["correct"] = cells["called_all"] == (cells["label"] == "all")
    summary = cells.groupby(["patient", "label"], sort=True).agg(
        cells=("p_all", "size"),
        mean_p_all=("p_all", "mean"),
        called_all=("called_all", "sum"),
        uncertain=("uncertain", "sum"),
        accuracy=("correct", "mean"),
    )
    summary = summary.reset_index().round(4)
    # One call per patient from the mean of its cells, as the metrics make it, with the app's uncertain band.
    summary.insert(4, "call", summary["mean_p_all"].map(verdict))
    return summary.rename(columns=names)


# A cell starting with one of these is a formula to Excel, LibreOffice and Google Sheets (tab and CR too).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def write_csv(table: pd.DataFrame, root: Path | None = None) -> Path:
    """The table as ``cnmc_predictions.csv`` in a folder of its own under ``root`` (default: the temp folder).

    Gradio serves a copy from its own cache, so folders left by earlier batches go once they are an hour old.
    """
    root = Path(root or tempfile.gettempdir())
    for old in root.glob(f"{CSV_PREFIX}*"):
        with suppress(OSError):  # another app process may be removing it too
            if time.time() - old.stat().st_mtime > CSV_MAX_AGE_S:
                shutil.rmtree(old)
    path = Path(tempfile.mkdtemp(prefix=CSV_PREFIX, dir=root)) / "cnmc_predictions.csv"
    table.map(spreadsheet_safe).to_csv(path, index=False)
    return path


def spreadsheet_safe(value: object) -> object:
    """Text that a spreadsheet would run as a formula (a file name like ``=HYPERLINK(...).png``) gets a leading
    apostrophe, as spreadsheet-safe CSV writers do; numbers and other text are left alone."""
    if isinstance(value, str) and value[:1] in FORMULA_STARTS:
        return "'" + value
    return value
