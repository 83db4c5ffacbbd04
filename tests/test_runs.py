"""The run folder's readers: a gzipped predictions CSV, as committed results keep them, reads as the plain one."""

import gzip
import shutil

import pytest
import torch

from cnmc import runs
from training.evaluate import report, write_report


def test_gzipped_predictions_read_as_the_plain_ones(tmp_path):
    labels, patients = [1, 0, 1, 0], ["UID_1", "UID_H1", "UID_2", "UID_H2"]
    scores = [0.9, 0.2, 0.6, 0.55]
    output = runs.report_file(tmp_path)
    write_report(
        report(torch.tensor([[1 - s, s] for s in scores]), torch.tensor(labels), patients),
        output,
        paths=[f"cell{k}.bmp" for k in range(4)],
        patient_ids=patients,
        labels=labels,
        scores=scores,
    )
    plain = runs.predictions_file(output)
    assert plain.name == "eval_predictions.csv" and runs.plot_file(output, "roc").is_file()
    rows = runs.read_predictions(plain)
    assert [float(r["prob_all"]) for r in rows] == scores and [r["patient_id"] for r in rows] == patients

    with plain.open("rb") as source, gzip.open(plain.with_name(plain.name + ".gz"), "wb") as packed:
        shutil.copyfileobj(source, packed)
    assert runs.predictions_file(output) == plain  # the plain file, while there is one
    plain.unlink()
    assert runs.predictions_file(output).suffix == ".gz"
    assert runs.read_predictions(runs.predictions_file(output)) == rows


def test_a_missing_file_names_what_writes_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="run_config.json is missing"):
        runs.read_run_config(tmp_path)
    with pytest.raises(FileNotFoundError, match="training.evaluate or training.crossval writes it"):
        runs.read_predictions(runs.predictions_file(runs.report_file(tmp_path)))
