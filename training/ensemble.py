"""Score an ensemble of models from their predictions on patients they never trained on, as the app serves it.

    python -m training.ensemble RUN_DIR RUN_DIR [...] --output DIR/eval.json [--evaluation eval] [--uncalibrated]

Each RUN_DIR holds EVALUATION_predictions.csv (a fold run's own validation, or a final model's pooled out-of-fold
predictions from ``training.crossval``) and the model's temperature in calibration.json (in RUN_DIR or RUN_DIR/model).
A cell's ensemble P(ALL) is the mean of the members' calibrated P(ALL), as ``serving.predict.ensemble`` computes it;
``--uncalibrated`` averages the raw ones, for members without a temperature (fold runs of the same recipe). The
members must have scored the same cells with the same labels: a cell one of them lacks is an error, not a drop.
Writes the evaluation, its plots and the ensemble's predictions, as ``training.evaluate`` does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from cnmc import runs
from cnmc.calibration import calibrated_prob_all
from cnmc.export import CALIBRATION_NAME
from cnmc.load import read_calibration
from training.evaluate import report, summary, write_report


def read_member(run_dir: Path, evaluation: str, *, uncalibrated: bool) -> tuple[dict[str, dict], float]:
    """The member's rows by cell path, and the temperature its P(ALL) is calibrated with."""
    predictions = runs.predictions_file(runs.report_file(run_dir, evaluation))
    rows = {row["path"]: row for row in runs.read_predictions(predictions)}
    if uncalibrated:
        return rows, 1.0
    for place in (run_dir, run_dir / runs.MODEL):
        calibration = read_calibration(place)
        if calibration:
            return rows, calibration["temperature"]
    raise FileNotFoundError(
        f"No {CALIBRATION_NAME} in {run_dir} or {run_dir / runs.MODEL} (training.calibrate writes it); "
        "pass --uncalibrated to average raw probabilities"
    )


def combine(members: list[tuple[dict[str, dict], float]]) -> tuple[list[dict], np.ndarray]:
    """The first member's rows, in its order, and the mean calibrated P(ALL) of every member for each."""
    rows = list(members[0][0].values())
    scores = []
    for number, (by_path, temperature) in enumerate(members, 1):
        if by_path.keys() != members[0][0].keys():
            raise ValueError(f"Member {number} scored other cells than member 1: ensemble like with like")
        if any(by_path[r["path"]]["label"] != r["label"] for r in rows):
            raise ValueError(f"Member {number} labels some cells differently from member 1")
        raw = np.array([float(by_path[r["path"]]["prob_all"]) for r in rows])
        scores.append(calibrated_prob_all(raw, temperature))
    return rows, np.mean(scores, axis=0)


def member_name(run_dir: Path, output: Path) -> str:
    """``run_dir`` relative to the ensemble's own folder: unambiguous (members' last two folders can coincide,
    seed0/pooled of two recipes), and within one tree free of where this machine keeps it, so records travel."""
    return Path(os.path.relpath(run_dir.resolve(), output.parent.resolve())).as_posix()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.ensemble", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="the members' run folders")
    parser.add_argument("--output", type=Path, required=True, help="FILE.json")
    parser.add_argument("--evaluation", default=runs.EVAL, help="use each run's EVALUATION_predictions.csv")
    parser.add_argument("--uncalibrated", action="store_true", help="average raw P(ALL), without temperatures")
    args = parser.parse_args(argv)
    if len(args.runs) < 2:
        parser.error("an ensemble needs at least two members")
    try:
        members = [read_member(run, args.evaluation, uncalibrated=args.uncalibrated) for run in args.runs]
        rows, scores = combine(members)
        split = json.loads((args.runs[0] / f"{args.evaluation}.json").read_text())["split"]
    except (FileNotFoundError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    probs = torch.tensor(scores, dtype=torch.float32)
    labels = [int(r["label"]) for r in rows]
    names = [member_name(run, args.output) for run in args.runs]
    result = report(
        torch.stack([1 - probs, probs], 1),
        torch.tensor(labels),
        [r["patient_id"] for r in rows],
        model="ensemble of " + ", ".join(names),
        split=split,
        members=[{"run": name, "temperature": t} for name, (_, t) in zip(names, members, strict=True)],
    )
    write_report(
        result,
        args.output,
        paths=[r["path"] for r in rows],
        patient_ids=[r["patient_id"] for r in rows],
        labels=labels,
        scores=probs.tolist(),
    )
    print(summary(result, args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
