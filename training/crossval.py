"""Score a cross-validation as one: pool its folds' out-of-fold predictions into one evaluation.

    python -m training.crossval runs/X-cv0 runs/X-cv1 runs/X-cv2 --model-dir runs/X-all/model
    python -m training.crossval runs/X-cv0 runs/X-cv1 runs/X-cv2 --output FILE.json
    python -m training.crossval runs/X-cv0 runs/X-cv1 runs/X-cv2 --output FILE.json --evaluation eval_tta

Each fold run validated on patients it never trained on, and the folds' validation patients are disjoint, so
their predictions together score every patient once, each by a model that never saw it. That is the honest
estimate for a model of the same recipe trained on all the folds, which has no validation patients of its own.
With --model-dir the evaluation becomes that model run's eval.json, which its model card reads, and the shift
protocol's result goes into the model folder (``shift_protocol.json``); the recipe of every fold must then match
the model's. Either way the confusion matrix, ROC curve and pooled predictions are
written beside the JSON, and the JSON also holds each fold's own scores with their mean and spread. When every
fold was scored under the shift protocol (``training.shifts``), the pooled cells are scored at each shift too
(``shift_protocol``).

--other-seed RUN RUN RUN (once per seed) pools the fold runs of the same recipe trained with another seed on the
same patients, and records their pooled scores beside this seed's (``other_seeds``): one seed's cross-validation is
one draw of the recipe, and the card shows the others.

--evaluation pools another evaluation of each run than its own eval.json, e.g. the flip-averaged one that
``training.evaluate --tta --output RUN/eval_tta.json`` writes; with --model-dir the pooled one is then written
under the same name, beside the final model's eval.json.

The fold runs should keep their latest epoch (``training.train --keep-epoch latest``), as the final model
does: the best epoch picked on the validation patients flatters them, and the JSON says so when they did.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from cnmc import runs
from cnmc.export import SHIFT_PROTOCOL_NAME
from training import atomic
from training.compare import METRICS, mean_sd
from training.evaluate import report, run_relative, summary, write_rows_report
from training.presets import as_ran
from training.shifts import columns_of, shift_report

# What --other-seed records of each seed's pooled evaluation.
OTHER_SEED_METRICS = ["f1_weighted", "accuracy", "balanced_accuracy", "roc_auc", "patient_accuracy"]

# run_config.json keys that describe the data, split or machine rather than the recipe.
_NOT_RECIPE = {
    "split",
    "val_description",
    "train_cells",
    "val_cells",
    "train_patients",
    "val_patients",
    "num_processes",
    "mixed_precision",
    "device",
    "data_dir",
    "keep_epoch",
    "seed",
    "device_cache",  # how the cells reach the device, not what the model sees (the batches are the same)
}


def read_fold(run_dir: Path, evaluation: str = runs.EVAL) -> dict:
    return {
        "dir": run_dir,
        "config": runs.read_run_config(run_dir),
        "eval": runs.read_report(run_dir, evaluation),
        "rows": runs.read_predictions(runs.predictions_file(runs.report_file(run_dir, evaluation))),
    }


def recipe(config: dict) -> dict:
    return {k: v for k, v in as_ran(config).items() if k not in _NOT_RECIPE}


def _check(folds: list[dict], final_config: dict | None) -> None:
    reference = recipe(folds[0]["config"])
    for other in [recipe(f["config"]) for f in folds[1:]] + ([recipe(final_config)] if final_config else []):
        differing = sorted(k for k in reference.keys() | other.keys() if reference.get(k) != other.get(k))
        if differing:
            raise ValueError(f"The runs' recipes differ in {', '.join(differing)}: pool runs of one recipe only.")
    seen: dict[str, Path] = {}
    for fold in folds:
        for patient in {row["patient_id"] for row in fold["rows"]}:
            if patient in seen:
                raise ValueError(f"Patient {patient} is validated in both {seen[patient]} and {fold['dir']}.")
            seen[patient] = fold["dir"]


def _description(folds: list[dict]) -> str:
    splits = {f["config"].get("split", {}).get("cv_split") for f in folds}
    scored = "each patient scored by a model that never trained on it"
    if len(splits) == 1 and None not in splits:
        base = folds[0]["eval"]["split"].split(", cv fold")[0]
        return f"{base}, out of fold over the {len(folds)} folds of {Path(splits.pop()).name} ({scored})"
    return f"out of fold over {len(folds)} runs ({scored})"


def pool(folds: list[dict], final_config: dict | None = None, model: str = "") -> tuple[dict, list[dict]]:
    """The pooled evaluation, and the pooled per-cell rows (path, patient_id, label, prob_all)."""
    _check(folds, final_config)
    rows = [row for fold in folds for row in fold["rows"]]
    scores = torch.tensor([float(r["prob_all"]) for r in rows])
    labels = torch.tensor([int(r["label"]) for r in rows])
    selections = {f["config"].get("keep_epoch", "best") for f in folds}
    tta = {bool(f["eval"].get("tta")) for f in folds}
    if len(tta) > 1:
        raise ValueError("Some folds' evaluations are flip-averaged (--tta) and some are not; pool like with like")
    result = report(
        torch.stack([1 - scores, scores], 1),
        labels,
        [r["patient_id"] for r in rows],
        model=model,
        split=_description(folds),
        epoch_selection=", ".join(sorted(selections)),
        tta=tta.pop(),
    )
    if "best" in selections:
        result["note"] = (
            "Some folds kept their best epoch by validation weighted F1, chosen on the very patients scored "
            "here, which flatters these numbers; --keep-epoch latest avoids it."
        )
    result["folds"] = [
        {"run": f["dir"].name, "split": f["eval"]["split"], "epoch": f["eval"].get("epoch")}
        | {k: f["eval"].get(k) for k in METRICS}
        for f in folds
    ]
    result["fold_mean_sd"] = {k: mean_sd([f["eval"].get(k) for f in folds]) for k in METRICS}
    shifted = columns_of(rows)
    if shifted:  # every fold was scored under the shift protocol (training.shifts)
        result["shift_protocol"] = shift_report(
            labels.tolist(), [r["patient_id"] for r in rows], scores.tolist(), shifted
        )
    return result, rows


def other_seeds(groups: list[list[Path]], folds: list[dict], rows: list[dict], evaluation: str) -> list[dict]:
    """Each group's pooled scores, checked to be the same recipe on the same cells with another seed."""
    seeds = {f["config"].get("seed") for f in folds}
    cells = sorted(r["path"] for r in rows)
    result = []
    for members in groups:
        group = [read_fold(run, evaluation) for run in members]
        pooled, group_rows = pool(group, folds[0]["config"])
        seed = {f["config"].get("seed") for f in group}
        if len(seed) > 1 or seed & seeds:
            raise ValueError(
                f"--other-seed {' '.join(map(str, members))}: its runs must share one seed that no other runs use"
            )
        seeds |= seed
        if sorted(r["path"] for r in group_rows) != cells:
            raise ValueError(f"--other-seed {' '.join(map(str, members))} scored other cells than the folds")
        result.append({"seed": seed.pop(), **{k: pooled[k] for k in OTHER_SEED_METRICS}})
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.crossval", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="the cross-validation's fold run folders")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--model-dir", type=Path, help="the final model (runs/X-all/model): write its eval.json")
    target.add_argument("--output", type=Path, help="FILE.json, for a cross-validation without a final model")
    parser.add_argument(
        "--evaluation", default=runs.EVAL, help="pool each run's EVALUATION.json and its predictions (e.g. eval_tta)"
    )
    parser.add_argument(
        "--other-seed",
        action="append",
        nargs="+",
        type=Path,
        default=[],
        metavar="RUN",
        help="the fold runs of the same recipe with another seed (repeat per seed): their pooled scores are recorded",
    )
    args = parser.parse_args(argv)
    try:
        folds = [read_fold(run, args.evaluation) for run in args.runs]
        final_config = runs.read_run_config(args.model_dir.parent) if args.model_dir else None
        result, rows = pool(folds, final_config, model=run_relative(args.model_dir) if args.model_dir else "")
        if args.other_seed:
            result["other_seeds"] = other_seeds(args.other_seed, folds, rows, args.evaluation)
    except (FileNotFoundError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    output = args.output or runs.report_file(args.model_dir.parent, args.evaluation)
    if args.model_dir and "shift_protocol" in result:  # travels with the model: the app words its caveat from it
        record = {"evaluated_on": result["split"], **result["shift_protocol"]}
        atomic.write_text(args.model_dir / SHIFT_PROTOCOL_NAME, json.dumps(record, indent=2) + "\n")
    write_rows_report(result, rows, output)
    print(summary(result, output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
