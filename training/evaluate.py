"""Evaluate a saved model on C-NMC cells, by patient, and write the metrics with their plots.

    python -m training.evaluate --model SOURCE --data-dir PATH --folds fold_2 [--split prelim_test] \
        --output FILE.json [--tta] [--no-shifts]
    python -m training.evaluate --model SOURCE --data-dir PATH --cv-split splits/cnmc_cv3_seed0.json --cv-fold 0 \
        --output FILE.json

SOURCE is a model folder or a Hub id (``hf-hub:ORG/NAME``). Beside FILE.json it writes
FILE_confusion_matrix.png, FILE_roc.png and FILE_predictions.csv. Every cell is also scored under the shift
protocol (``training.shifts``: rescaled, redder, paler, ...): FILE.json's ``shift_protocol`` holds the scores at
each shift and whether the recipe passes the adoption rule, and the CSV a ``prob_all@SHIFT`` column per shift.
Runs on CPU or GPU, and under ``accelerate launch`` on several processes with the same result.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import sys
from pathlib import Path

import datasets
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from torchvision.transforms import Compose
from tqdm.auto import tqdm

from cnmc import runs
from cnmc.cells import UNKNOWN_LABEL
from cnmc.load import LoadedModel, load_model
from cnmc.preprocessing import flip_averaged
from training import atomic
from training.data import CNMCDataError, add_data_arguments, load_from_args
from training.metrics import cnmc_metric
from training.plots import plot_confusion_matrix, plot_roc
from training.shifts import COLUMN_PREFIX, SHIFTS, Shift, columns_of, shift_report, summary_line
from training.splits import split_cv_fold
from training.transforms import pixel_batch

logger = logging.getLogger(__name__)


def stack_images(images: list[torch.Tensor]) -> torch.Tensor:
    """(c, h, w) images as one (n, c, h, w) batch, in the memory layout they have.

    A decoded uint8 image is an (h, w, c) buffer viewed as (c, h, w): stacking it as (n, h, w, c) is a plain
    copy, while a contiguous (n, c, h, w) batch would transpose every image on the loader's CPU (5-9 % of its
    time per batch of 320 px cells). The batch reaches the device channels-last, where the transpose is cheap.
    """
    if images[0].permute(1, 2, 0).is_contiguous():
        return torch.stack([image.permute(1, 2, 0) for image in images]).permute(0, 3, 1, 2)
    return torch.stack(images)


def collate(examples: list[dict]) -> dict:
    batch = {"pixel_values": stack_images([e["pixel_values"] for e in examples])}
    for key in ("labels", "index"):
        if key in examples[0]:
            batch[key] = torch.tensor([e[key] for e in examples])
    return batch


def make_loader(
    dataset: datasets.Dataset, transform, batch_size: int, *, shuffle: bool, num_workers: int, seed: int = 0
) -> DataLoader:
    """A DataLoader over ``dataset`` decoded and transformed on the fly, keeping each row's index."""
    if "index" not in dataset.column_names:
        dataset = dataset.add_column("index", list(range(len(dataset))))
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset.with_transform(pixel_batch(transform)),
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        collate_fn=collate,
        generator=generator,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
    )


@torch.inference_mode()
def predict(
    model: torch.nn.Module, loader: DataLoader, accelerator: Accelerator, *, tta: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Softmax probabilities, labels and row indices over the whole loader, gathered from all processes."""
    model.eval()
    probs, labels, index = [], [], []

    def probabilities(x: torch.Tensor) -> torch.Tensor:
        return model(x).float().softmax(-1)

    for batch in tqdm(loader, desc="Evaluating", disable=not accelerator.is_local_main_process, leave=False):
        x = batch["pixel_values"]
        p = flip_averaged(probabilities, x) if tta else probabilities(x)
        p, y, i = accelerator.gather_for_metrics((p, batch["labels"], batch["index"]))
        probs.append(p.cpu())
        labels.append(y.cpu())
        index.append(i.cpu())
    return torch.cat(probs), torch.cat(labels), torch.cat(index)


def run_relative(path: str | Path) -> str:
    """``path`` named by its run folder (``RUN/model``), not by where this machine keeps it: records travel."""
    path = Path(path)
    return f"{path.parent.name}/{path.name}"


def report(probs: torch.Tensor, labels: torch.Tensor, patient_ids: list[str], **context) -> dict:
    """All metrics of the project's evaluate module, with ``context`` (model, split, ...) in front."""
    metric = cnmc_metric()
    scores = probs[:, 1]
    metric.add_batch(
        predictions=probs.argmax(-1).tolist(),
        references=labels.tolist(),
        scores=scores.tolist(),
        patient_ids=patient_ids,
    )
    return {**context, **metric.compute()}


def score_dataset(
    loaded: LoadedModel,
    dataset: datasets.Dataset,
    accelerator: Accelerator,
    *,
    tta: bool = False,
    shifts: tuple[Shift, ...] = SHIFTS,
    batch_size: int = 64,
    num_workers: int = 2,
    **context,
) -> tuple[dict, dict]:
    """The model's report on ``dataset`` (``context`` in front), with the shift protocol's section unless ``shifts``
    is empty, and the keyword arguments of :func:`write_report` for it. Meaningful on the main process."""
    model = loaded.model.to(accelerator.device)

    def run(transform) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        loader = make_loader(dataset, transform, batch_size, shuffle=False, num_workers=num_workers)
        probs, labels, index = predict(model, accelerator.prepare(loader), accelerator, tta=tta)
        order = index.argsort()  # every pass in row order, so the shifted scores line up with the plain ones
        return probs[order], labels[order], index[order]

    probs, labels, index = run(loaded.transform)
    shifted = {
        shift.name: run(Compose([shift, loaded.transform]))[0][:, 1].tolist()
        for shift in tqdm(shifts, desc="Shift protocol", disable=not accelerator.is_local_main_process)
    }
    rows = dataset.select_columns(["patient_id", "path"]).select(index.tolist())
    result = report(probs, labels, rows["patient_id"], **context, tta=tta)
    if shifts:
        result["shift_protocol"] = shift_report(labels.tolist(), rows["patient_id"], probs[:, 1].tolist(), shifted)
    table = {
        "paths": rows["path"],
        "patient_ids": rows["patient_id"],
        "labels": labels.tolist(),
        "scores": probs[:, 1].tolist(),
        "shifted": shifted,
    }
    return result, table


def write_report(
    result: dict,
    output: str | Path,
    *,
    paths: list[str],
    patient_ids: list[str],
    labels: list[int],
    scores: list[float],
    shifted: dict[str, list[float]] | None = None,
) -> None:
    """FILE.json, plus the confusion matrix, the ROC curve and the per-cell predictions beside it.

    ``shifted`` adds a ``prob_all@NAME`` column per shift of the protocol (``training.shifts``)."""
    output = Path(output)
    atomic.write_text(output, json.dumps(result, indent=2) + "\n")
    title = f"{result.get('model', '')} on {result.get('split', '')}"
    plot_confusion_matrix(result["confusion_matrix"], runs.plot_file(output, "confusion_matrix"), title=title)
    plot_roc({result.get("model", "model"): (labels, scores)}, runs.plot_file(output, "roc"), title=title)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    shifted = shifted or {}
    writer.writerow(["path", "patient_id", "label", "prob_all", *(COLUMN_PREFIX + name for name in shifted)])
    for row in zip(paths, patient_ids, labels, scores, *shifted.values(), strict=True):
        writer.writerow([*row[:3], *(f"{p:.6f}" for p in row[3:])])
    atomic.write_text(output.with_name(output.stem + runs.PREDICTIONS_SUFFIX), buffer.getvalue())


def write_rows_report(result: dict, rows: list[dict], output: str | Path) -> None:
    """``write_report`` from the rows of a predictions CSV (``path``, ``patient_id``, ``label``, ``prob_all`` and
    any shifted columns), as pooled folds and baselines hold them."""
    write_report(
        result,
        output,
        paths=[r["path"] for r in rows],
        patient_ids=[r["patient_id"] for r in rows],
        labels=[int(r["label"]) for r in rows],
        scores=[float(r["prob_all"]) for r in rows],
        shifted=columns_of(rows),
    )


def summary(result: dict, output: str | Path) -> str:
    """Lines for a terminal: the headline scores, and the shift protocol's verdict where it was scored."""
    auc = result["roc_auc"]
    lines = [
        f"{result.get('model') or 'model'}, {result['split']}: weighted F1 {result['f1_weighted']:.4f}, accuracy "
        f"{result['accuracy']:.4f}, balanced accuracy {result['balanced_accuracy']:.4f}, ROC-AUC "
        f"{'n/a' if auc is None else f'{auc:.4f}'}, patient accuracy {result['patient_accuracy']:.3f} -> {output}"
    ]
    if "shift_protocol" in result:
        lines.append(summary_line(result["shift_protocol"]))
    return "\n".join(lines)


def evaluation_split(dataset_dict: datasets.DatasetDict, names: list[str]) -> datasets.Dataset:
    missing = [n for n in names if n not in dataset_dict]
    if missing:
        raise CNMCDataError(f"Split(s) {missing} are not in the data; available: {list(dataset_dict)}")
    dataset = datasets.concatenate_datasets([dataset_dict[n] for n in names])
    if UNKNOWN_LABEL in dataset["label"]:
        raise CNMCDataError(f"{names} hold unlabelled cells (final_test has no labels); they can't be scored.")
    return dataset


def training_overlap(loaded: LoadedModel, patient_ids: list[str]) -> str:
    """What to add to the split's description: whether ``patient_ids`` include patients the model trained on.

    Warns when they do, or when the model's config.json does not record its training patients.
    """
    if loaded.train_patients is None:
        logger.warning("%s does not record its training patients: overlap with these can't be checked", loaded.folder)
        return ""
    seen = loaded.train_patients & set(patient_ids)
    if seen:
        logger.warning("%d evaluated patient(s) were in the training data: %s", len(seen), sorted(seen))
        return f" (includes {len(seen)} patient(s) seen in training)"
    return ", patients unseen in training"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="model folder, hf-hub:ORG/NAME or ORG/NAME")
    add_data_arguments(parser)
    parser.add_argument("--folds", nargs="*", default=[], help="official folds to evaluate on, e.g. fold_2")
    parser.add_argument("--split", nargs="*", default=[], help="other splits, e.g. prelim_test")
    parser.add_argument("--cv-split", help="a committed fold assignment, e.g. splits/cnmc_cv3_seed0.json ...")
    parser.add_argument("--cv-fold", type=int, help="... and the fold whose patients to evaluate on")
    parser.add_argument("--output", required=True, help="FILE.json")
    parser.add_argument("--tta", action="store_true", help="average over flipped views")
    parser.add_argument(
        "--shifts",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also score every cell under the shift protocol (training.shifts); nine passes instead of one",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = args.folds + args.split
    if bool(names) == bool(args.cv_split) or (args.cv_split is None) != (args.cv_fold is None):
        parser.error("name what to evaluate on: --folds and/or --split, or --cv-split with --cv-fold")
    accelerator = Accelerator()
    try:
        dataset_dict = load_from_args(args)
        if args.cv_split:
            _, dataset, split = split_cv_fold(dataset_dict, args.cv_split, args.cv_fold)
        else:
            dataset, split = evaluation_split(dataset_dict, names), f"C-NMC 2019 {'+'.join(names)}"
        loaded = load_model(args.model)
    except (CNMCDataError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    split += training_overlap(loaded, dataset["patient_id"])
    result, table = score_dataset(
        loaded,
        dataset,
        accelerator,
        tta=args.tta,
        shifts=SHIFTS if args.shifts else (),
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        model=args.model,
        split=split,
    )
    if accelerator.is_main_process:
        result["num_processes"] = accelerator.num_processes
        write_report(result, args.output, **table)
        print(summary(result, args.output))
    # A rank that exits with its process group alive can abort at teardown (gloo: "terminate called without an
    # active exception") while the main process still writes the report; leave together, as training does.
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main())
