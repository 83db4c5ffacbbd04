"""Experiment: do the size- and stain-normalised CNN and the nucleus features, together, reach a higher weighted F1
than either and still hold under the shift protocol?

    python -m scripts.experiments.stacking prepared --output results/stacking

The CNN (``results/cpu-mobilenetv2-cellnorm-cv3``) over-calls ALL; the nucleus features
(``scripts.experiments.nucleus_features``) are more balanced. Each variant of :data:`VARIANTS` is cross-validated on
the committed patient folds as the other per-cell baselines are (``training.size_baseline.cross_validate``): for
each fold, a fit on the other folds' cells (their out-of-fold CNN score and their features) scores the fold's
cells. A shifted cell is scored with the CNN's P(ALL) of the shifted image and the features of the shifted image.

The CNN's scores of the training folds come from CNNs that were trained with the held-out fold among their cells;
the second level learns from them only how the CNN errs on patients it did not see, which is standard stacking,
but a fully nested run would retrain the CNN inside each outer fold.

Measuring 7,108 cells in 9 views takes about 10-17 minutes on one core, so the measurements are kept in
``--cache`` (under runs/, which git ignores) and reused while the data's cells are the same. OUTPUT/eval.json with
its plots and gzipped predictions is the variant with the highest weighted F1 among those that pass the rule;
OUTPUT/variants.json holds every variant's evaluation, shift section and ROC-AUC among cells of the same size, and
OUTPUT/variants_roc.png their ROC curves.
"""

import argparse
import gzip
import json
import sys
from pathlib import Path

import datasets
import numpy as np
from scipy.special import expit, logit
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cnmc import runs
from scripts.experiments.handcrafted import trees
from scripts.experiments.nucleus_features import FEATURES, measure
from training import atomic
from training.data import CNMCDataError, load_cnmc
from training.plots import plot_roc
from training.shifts import COLUMN_PREFIX, MAX_F1_DROP
from training.size_baseline import cross_validate, matched_size_auc, write_baseline

CNN_PREDICTIONS = "results/cpu-mobilenetv2-cellnorm-cv3/pooled/eval_predictions.csv.gz"
VARIANTS_NAME = "variants.json"
# P(ALL) is written with six decimals, so 0 and 1 occur: clipped before the logit.
CLIP = 1e-6


def measured_cells(
    data_dir: str | Path, cache: Path, splits: list[str], num_proc: int | None = None
) -> datasets.DatasetDict:
    """The cells of ``splits``: their nucleus features and area, and their features after each shift, measured
    once into ``cache`` (one parquet file per split) and read back from there while it holds the same cells."""
    data = load_cnmc(data_dir, verify=False)
    missing = [name for name in splits if name not in data]
    if missing:
        raise CNMCDataError(f"{data_dir} lacks the split(s) {missing} that the folds pool; it has {list(data)}")
    data = datasets.DatasetDict({name: data[name] for name in splits})
    files = {name: cache / f"{name}.parquet" for name in data}
    if all(f.is_file() for f in files.values()):
        cached = datasets.DatasetDict({name: datasets.Dataset.from_parquet(str(f)) for name, f in files.items()})
        if all(cached[name]["path"] == data[name]["path"] for name in data):
            return cached
        print(f"{cache} holds other cells than {data_dir}: measuring them again")
    measured = data.map(measure, batched=True, batch_size=64, num_proc=num_proc, desc="Measuring cells")
    measured = measured.remove_columns("image")
    cache.mkdir(parents=True, exist_ok=True)
    for name, split in measured.items():
        partial = files[name].with_name(f".{files[name].name}.tmp")
        split.to_parquet(str(partial))
        partial.replace(files[name])  # an interrupted run leaves no half-written cache to be trusted next time
    return measured


def with_cnn_scores(data: datasets.DatasetDict, predictions: str | Path) -> datasets.DatasetDict:
    """Each cell with the CNN's out-of-fold logit of P(ALL) (``cnn``) and, for every shift whose features ``data``
    holds, its logit for the shifted cell (``cnn@NAME``), matched by file name from a predictions CSV."""
    rows = {Path(r["path"]).stem: r for r in runs.read_predictions(predictions)}
    held = {c.removeprefix(COLUMN_PREFIX) for c in next(iter(rows.values()), {}) if c.startswith(COLUMN_PREFIX)}
    joined = {}
    for name, split in data.items():
        shifts = [c.split("@", 1)[1] for c in split.column_names if c.startswith("features@")]
        lacking = [s for s in shifts if s not in held]
        if lacking:
            raise CNMCDataError(f"{predictions} holds no CNN score for the shifts {lacking}: rescore its cells")
        missing = [p for p in split["path"] if Path(p).stem not in rows]
        if missing:
            raise CNMCDataError(
                f"{len(missing)} cell(s) of {name} have no CNN score in {predictions}, e.g. {missing[:3]}"
            )
        chosen = [rows[Path(p).stem] for p in split["path"]]
        relabelled = [p for p, y, r in zip(split["path"], split["label"], chosen, strict=True) if int(r["label"]) != y]
        if relabelled:
            raise CNMCDataError(
                f"{len(relabelled)} cell(s) carry another label in {predictions}, e.g. {relabelled[:3]}"
            )
        for column in ["prob_all", *(COLUMN_PREFIX + s for s in shifts)]:
            scores = np.clip([float(r[column]) for r in chosen], CLIP, 1 - CLIP)
            split = split.add_column(column.replace("prob_all", "cnn"), logit(scores).tolist())
        joined[name] = split
    return datasets.DatasetDict(joined)


def nucleus(split: datasets.Dataset) -> np.ndarray:
    return np.array(split["features"], dtype=np.float64)


def cnn_and_nucleus(split: datasets.Dataset) -> np.ndarray:
    """The CNN's logit in the first column, the nucleus features after it."""
    return np.column_stack([split["cnn"], nucleus(split)])


def cnn_and_skew(split: datasets.Dataset) -> np.ndarray:
    return cnn_and_nucleus(split)[:, [0, 1 + list(FEATURES).index("chromatin_skew")]]


class CNNScore(ClassifierMixin, BaseEstimator):
    """The CNN's own P(ALL), from its logit in the first column: nothing is fitted."""

    def fit(self, x: np.ndarray, y) -> "CNNScore":
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        p = expit(x[:, 0])
        return np.column_stack([1 - p, p])


class MeanWithCNN(ClassifierMixin, BaseEstimator):
    """The mean of the CNN's P(ALL) (first column) and that of ``model`` fitted on the other columns."""

    def __init__(self, model: ClassifierMixin):
        self.model = model

    def fit(self, x: np.ndarray, y) -> "MeanWithCNN":
        self.fitted_ = clone(self.model).fit(x[:, 1:], y)
        self.classes_ = self.fitted_.classes_
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        p = (expit(x[:, 0]) + self.fitted_.predict_proba(x[:, 1:])[:, 1]) / 2
        return np.column_stack([1 - p, p])


def logistic(class_weight: str | None = "balanced"):
    # The median stands in for a colour ratio of a cell with no cytoplasm to divide by (NaN).
    return make_pipeline(
        SimpleImputer(strategy="median"), StandardScaler(), LogisticRegression(class_weight=class_weight, max_iter=1000)
    )


# name: (what it is, its columns, its classifier). Trees and logistic regressions are class-balanced as the other
# baselines are, except one: wF1 weights each class by its cells, so the unweighted fit aims nearer to it.
VARIANTS = {
    "cnn": ("CNN alone (MobileNetV2, size- and stain-normalised)", cnn_and_nucleus, CNNScore),
    "features-trees": ("nucleus features, trees", nucleus, trees),
    "features-logistic": ("nucleus features, logistic regression", nucleus, logistic),
    "mean-cnn-trees": ("mean of CNN and nucleus-feature trees", cnn_and_nucleus, lambda: MeanWithCNN(trees())),
    "mean-cnn-logistic": (
        "mean of CNN and nucleus-feature logistic regression",
        cnn_and_nucleus,
        lambda: MeanWithCNN(logistic()),
    ),
    "stacked-trees": ("CNN logit + nucleus features, trees", cnn_and_nucleus, trees),
    "stacked-logistic": ("CNN logit + nucleus features, logistic regression", cnn_and_nucleus, logistic),
    "stacked-logistic-unweighted": (
        "CNN logit + nucleus features, logistic regression, not class-weighted",
        cnn_and_nucleus,
        lambda: logistic(None),
    ),
    "cnn-skew-logistic": ("CNN logit + chromatin skewness, logistic regression", cnn_and_skew, logistic),
}


def evaluate_variants(data: datasets.DatasetDict, cv_split: str | Path, names=tuple(VARIANTS)) -> dict:
    """Each variant's pooled out-of-fold evaluation (with its ROC-AUC among cells of the same size) and rows."""
    evaluated = {}
    for name in names:
        description, columns, classifier = VARIANTS[name]
        result, rows = cross_validate(data, cv_split, features=columns, classifier=classifier, name=description)
        labels, scores = np.array([r["label"] for r in rows]), np.array([r["prob_all"] for r in rows])
        result["roc_auc_at_matched_size"] = matched_size_auc(labels, scores, np.array([r["cell_area"] for r in rows]))
        evaluated[name] = (result, rows)
    return evaluated


def table(evaluated: dict) -> str:
    """The variants side by side, as a Markdown table."""
    lines = [
        "| variant | wF1 | specificity | sensitivity | ROC-AUC | same-size AUC | patients | worst shift: wF1 change "
        "| rule |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (r, _) in evaluated.items():
        shifts = r["shift_protocol"]
        patients = f"{round(r['patient_accuracy'] * r['num_patients'])}/{r['num_patients']}"
        lines.append(
            f"| {name} | {r['f1_weighted']:.3f} | {r['specificity']:.3f} | {r['recall']:.3f} | {r['roc_auc']:.3f} | "
            f"{r['roc_auc_at_matched_size']:.3f} | {patients} | {-shifts['max_f1_drop']:+.3f} "
            f"({shifts['worst_shift']}) | {'passes' if shifts['passes'] else 'fails'} |"
        )
    return "\n".join(lines)


def write(evaluated: dict, output: Path) -> str:
    """OUTPUT/eval.json (and plots, gzipped predictions) of the best variant that passes, OUTPUT/variants.json and
    OUTPUT/variants_roc.png; the chosen variant's name."""
    passing = [n for n, (r, _) in evaluated.items() if r["shift_protocol"]["passes"]]
    if not passing:
        raise ValueError(f"No variant keeps its weighted F1 within {MAX_F1_DROP} under every shift")
    chosen = max(passing, key=lambda n: evaluated[n][0]["f1_weighted"])
    result, rows = evaluated[chosen]
    write_baseline(result, rows, output)
    plain = output / f"{runs.EVAL}{runs.PREDICTIONS_SUFFIX}"
    packed = plain.with_name(plain.name + ".gz")
    packed.write_bytes(gzip.compress(plain.read_bytes(), mtime=0))
    plain.unlink()  # committed predictions are gzipped; the run folder's readers take either
    summary = {
        "chosen": chosen,
        "chosen_as": "the highest weighted F1 among the variants that pass the shift rule, on the same folds",
        "variants": {name: r for name, (r, _) in evaluated.items()},
    }
    atomic.write_text(output / VARIANTS_NAME, json.dumps(summary, indent=2) + "\n")
    curves = {name: ([r["label"] for r in rs], [r["prob_all"] for r in rs]) for name, (_, rs) in evaluated.items()}
    plot_roc(curves, output / "variants_roc.png", title="Out of fold, 7,108 cells: CNN, nucleus features, both")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.experiments.stacking", description=__doc__.split("\n")[0])
    parser.add_argument("data_dir", help="C-NMC_Leukemia, or a prepared copy of it")
    parser.add_argument("--cv-split", default="splits/cnmc_cv3_seed0.json")
    parser.add_argument("--cnn-predictions", default=CNN_PREDICTIONS, help="the CNN's pooled out-of-fold predictions")
    parser.add_argument("--cache", type=Path, default=Path("runs/stacking/nucleus-features"))
    parser.add_argument("--output", type=Path, required=True, help="the experiment's folder")
    parser.add_argument("--num-proc", type=int, help="processes that measure cells (default: one)")
    args = parser.parse_args(argv)
    try:
        pooled = json.loads(Path(args.cv_split).read_text())["pooled_splits"]
        measured = measured_cells(args.data_dir, args.cache, pooled, args.num_proc)
        data = with_cnn_scores(measured, args.cnn_predictions)
        evaluated = evaluate_variants(data, args.cv_split)
        chosen = write(evaluated, args.output)
    except (CNMCDataError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(table(evaluated))
    print(f"written: {args.output}/eval.json is {chosen}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
