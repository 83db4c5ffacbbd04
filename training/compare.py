"""Compare training runs: a markdown table beside the thesis's published numbers, a JSON file and a ROC overlay.

    python -m training.compare runs/mobilenetv2-cv0 runs/mobilenetv2-cv1 ... --output results/ \
        [--baseline results/size-baseline/eval.json results/handcrafted-baseline/eval.json]

Runs of the same backbone and recipe on the same device (e.g. the folds of a cross-validation) are pooled: the
table gives the mean and standard deviation over them, and the ROC overlay pools their out-of-fold predictions.
The shift columns come from each evaluation's shift protocol (``training.shifts``): the largest fall in weighted F1
under any shift, the lowest specificity under any shift, and whether every run keeps the adoption rule.
--baseline adds cross-validated references that are no CNN (``training.size_baseline``,
``scripts.experiments.handcrafted``) as the last rows.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

from cnmc import runs
from cnmc.backbones import BACKBONES, resolve_backbone
from training import atomic
from training.calibrate import read_predictions
from training.plots import plot_roc
from training.presets import overrides_of
from training.shifts import MAX_F1_DROP

# The thesis's Table 5.2: accuracy and F1 (%) on its test set, fine-tuned from ImageNet.
THESIS = {
    "mobilenetv2_100": (82.75, 82.48),
    "inception_v3": (80.24, 79.96),
    "vgg19_bn": (77.40, 76.37),
    "resnetv2_101": (77.18, 76.19),
}
METRICS = ["f1_weighted", "accuracy", "roc_auc", "patient_accuracy"]
SHIFT_METRICS = ["shift_max_f1_drop", "shift_min_specificity"]


def shift_scores(evaluation: dict) -> dict:
    """An evaluation's shift-protocol figures for the table; None where it was not scored under shifts."""
    protocol = evaluation.get("shift_protocol") or {}
    shifts = protocol.get("shifts") or {}
    return {
        "shift_max_f1_drop": protocol.get("max_f1_drop"),
        "shift_min_specificity": min((s["specificity"] for s in shifts.values()), default=None),
        "shift_passes": protocol.get("passes") if shifts else None,
    }


def _rule(passes: list) -> str | None:
    """ "pass" when every run keeps the shift rule, "fail" when any breaks it, None when none was scored."""
    if any(p is None for p in passes):
        return None
    return "pass" if all(passes) else "fail"


def read_run(run_dir: Path) -> dict:
    missing = [n for n in (runs.RUN_CONFIG, runs.report_file(run_dir).name) if not (run_dir / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{run_dir} lacks {', '.join(missing)}: is it a finished training run?")
    run = {
        "dir": str(run_dir),
        "config": runs.read_run_config(run_dir),
        "eval": runs.read_report(run_dir),
        "labels": [],
        "scores": [],
    }
    predictions = runs.predictions_file(runs.report_file(run_dir))
    if predictions.is_file():
        run["labels"], run["scores"] = _curve(predictions)
    with (run_dir / runs.METRICS).open() as handle:
        epochs = list(csv.DictReader(handle))
    run["wall_seconds"] = sum(float(e["epoch_seconds"]) for e in epochs)
    run["train_img_per_s"] = statistics.median(float(e["train_img_per_s"]) for e in epochs)
    run["epochs"] = len(epochs)
    return run


def _curve(predictions: Path) -> tuple[list[int], list[float]]:
    labels, scores = read_predictions([predictions])
    return labels.tolist(), scores.tolist()


def read_baseline(path: Path) -> tuple[dict, tuple[list[int], list[float]]]:
    """A table row for a cross-validated reference that is no CNN, and its pooled out-of-fold predictions."""
    result = runs.read_json(path)
    shifted = shift_scores(result)
    row = {
        "backbone": None,
        "display_name": result["model"],
        "preset": None,
        "recipe": None,
        "pretrained": None,
        "img_size": None,
        "device": None,
        "runs": [f["split"] for f in result["folds"]],
        "evaluated_on": [result["split"]],
        "epochs": [],
        **result["fold_mean_sd"],
        # A baseline's shift figures are its pooled out-of-fold cells'.
        **{k: mean_sd([shifted[k]]) for k in SHIFT_METRICS},
        "shift_rule": _rule([shifted["shift_passes"]]),
        "wall_seconds": mean_sd([]),
        "train_img_per_s": mean_sd([]),
        "thesis_accuracy": None,
        "thesis_f1": None,
    }
    return row, _curve(runs.predictions_file(path))


def mean_sd(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "sd": None, "n": 0}
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def recipe_label(config: dict) -> str:
    """The run's preset and whatever it changed in it, e.g. ``best, epochs 12, zoom_out 0.2``."""
    return ", ".join([config["preset"], *(f"{k} {v}" for k, v in sorted(overrides_of(config).items()))])


def summarize(runs: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        config = run["config"]
        # The device is part of the row: wall time and images/s mean nothing without it.
        key = (
            config["backbone"],
            recipe_label(config),
            config["pretrained"],
            config.get("img_size"),
            config.get("device", "not recorded"),
        )
        groups.setdefault(key, []).append(run)
    order = [b.timm_name for b in BACKBONES]
    rows = []
    for key, members in sorted(groups.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1])):
        backbone, recipe, pretrained, img_size, device = key
        shifted = [shift_scores(m["eval"]) for m in members]
        rows.append(
            {
                "backbone": backbone,
                "display_name": resolve_backbone(backbone).display_name,
                "preset": members[0]["config"]["preset"],
                "recipe": recipe,
                "pretrained": pretrained,
                "img_size": img_size,
                "device": device,
                "runs": [m["dir"] for m in members],
                "evaluated_on": sorted({m["eval"]["split"] for m in members}),
                "epochs": [m["epochs"] for m in members],
                **{k: mean_sd([m["eval"][k] for m in members]) for k in METRICS},
                **{k: mean_sd([s[k] for s in shifted]) for k in SHIFT_METRICS},
                "shift_rule": _rule([s["shift_passes"] for s in shifted]),
                "wall_seconds": mean_sd([m["wall_seconds"] for m in members]),
                "train_img_per_s": mean_sd([m["train_img_per_s"] for m in members]),
                "thesis_accuracy": THESIS[backbone][0],
                "thesis_f1": THESIS[backbone][1],
            }
        )
    return rows


def curve_label(row: dict) -> str:
    """The row's name in the ROC overlay, with every field that sets rows apart, so no curve hides another."""
    start = "ImageNet" if row["pretrained"] else "scratch"
    return f"{row['display_name']} ({row['recipe']}, {start}, {row['img_size']} px, {row['device']})"


def _fmt(stat: dict, scale: float = 1.0, digits: int = 3) -> str:
    if stat["mean"] is None:
        return "n/a"
    text = f"{stat['mean'] * scale:.{digits}f}"
    return text + (f" ± {stat['sd'] * scale:.{digits}f}" if stat["n"] > 1 else "")


def markdown(rows: list[dict]) -> str:
    lines = [
        "| Backbone | Recipe | Start | Input px | Device | Runs | Weighted F1 | Accuracy | ROC-AUC | Patient accuracy "
        "| Worst shift: wF1 drop | Lowest specificity under shift | Shift rule "
        "| Wall time (min) | Train img/s | Thesis accuracy | Thesis F1 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        start = "-" if r["pretrained"] is None else "ImageNet" if r["pretrained"] else "scratch"
        size = "-" if r["backbone"] is None else r["img_size"] or "?"
        device = r["device"] or "-"
        thesis = "- | -" if r["thesis_f1"] is None else f"{r['thesis_accuracy']:.2f} % | {r['thesis_f1']:.2f} %"
        lines.append(
            f"| {r['display_name']} | {r['recipe'] or '-'} | {start} | {size} | {device} | {len(r['runs'])} | "
            f"{_fmt(r['f1_weighted'])} | {_fmt(r['accuracy'])} | {_fmt(r['roc_auc'])} | "
            f"{_fmt(r['patient_accuracy'])} | {_fmt(r['shift_max_f1_drop'])} | {_fmt(r['shift_min_specificity'])} | "
            f"{r['shift_rule'] or 'not scored'} | {_fmt(r['wall_seconds'], 1 / 60, 1)} | "
            f"{_fmt(r['train_img_per_s'], 1, 0)} | {thesis} |"
        )
    splits = sorted({s for r in rows for s in r["evaluated_on"]})
    lines += [
        "",
        "Our numbers are mean ± standard deviation over the runs, each measured on patients that run never "
        "trained on: " + "; ".join(splits) + ".",
        "The shift columns score the same cells rescaled (0.75-1.33x), redder or paler and brighter or darker "
        f"(training.shifts); the rule adopts no recipe whose weighted F1 falls by more than {MAX_F1_DROP} under any "
        "shift. "
        "Runs evaluated before the protocol existed say 'not scored'.",
        "The thesis's numbers are its test-set accuracy and F1 as published (Table 5.2), fine-tuned from "
        "ImageNet weights; its 95 % validation against 82 % test suggests its validation split shared patients "
        "with training.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.compare", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="training run folders")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument(
        "--baseline", type=Path, nargs="+", default=[], help="eval.json of references that are no CNN, as last rows"
    )
    args = parser.parse_args(argv)
    try:
        runs = [read_run(d) for d in args.runs]
        baselines = [read_baseline(path) for path in args.baseline]
    except (FileNotFoundError, KeyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    rows = summarize(runs) + [row for row, _ in baselines]
    atomic.write_text(args.output / "comparison.md", markdown(rows))
    atomic.write_text(args.output / "comparison.json", json.dumps(rows, indent=2) + "\n")
    curves = {}
    for row in rows:
        members = [r for r in runs if r["dir"] in row["runs"] and r["labels"]]
        if members:
            curves[curve_label(row)] = (
                [y for m in members for y in m["labels"]],
                [s for m in members for s in m["scores"]],
            )
    for row, curve in baselines:
        curves[row["display_name"]] = curve
    plot_roc(curves, args.output / "roc_overlay.png", title="Out-of-fold ROC, patients unseen in training")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
