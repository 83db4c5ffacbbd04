"""Train one backbone on C-NMC with Accelerate, validating on patients it never sees.

    accelerate launch -m training.train --backbone mobilenetv2 --data-dir PATH --output-dir runs/mobilenetv2 \
        [--preset best|thesis] [--train-folds fold_0 --val-folds fold_1 | --cv-split FILE --cv-fold K] \
        [--no-pretrained] [--resume] [--epochs N --lr X ...]

The run folder gets run_config.json (every hyperparameter), metrics.csv (a row per epoch), training_curves.png,
checkpoints/last (``accelerator.save_state`` after every epoch, or every --checkpoint-every N, for --resume), and
model/: the best epoch by validation weighted F1 (or with --keep-epoch latest, the latest one), in timm's Hub format,
with eval.json and its plots, and the model's calibration temperature fitted on those validation patients
(model/calibration.json).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import io
import json
import logging
import math
import multiprocessing
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import get_type_hints

import datasets
import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import set_seed
from safetensors.torch import load_file, save_file
from sklearn.metrics import accuracy_score, f1_score
from timm.optim import create_optimizer_v2
from timm.utils import ModelEmaV3
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from cnmc import runs
from cnmc.backbones import PretrainedWeightsUnavailable, create_model, resolve_backbone
from cnmc.cells import CLASS_NAMES
from cnmc.export import export_model
from cnmc.load import load_model
from cnmc.preprocessing import CellNormalization, eval_transform
from cnmc.training_range import measure, training_range
from training import atomic
from training.calibrate import calibrate
from training.data import CNMCDataError, add_data_arguments, load_from_args
from training.device_cache import DecodedCells
from training.evaluate import make_loader, predict, report, run_relative, score_dataset, write_report
from training.plots import plot_training_curves
from training.presets import AUGMENTATION_FIELDS, PRESETS, RECIPE_FIELDS, Recipe, build_recipe
from training.shifts import SHIFTS, summary_line
from training.splits import split_by_folds, split_cv_fold
from training.transforms import Augmentation, BatchAugment, decoder, mix_batch

logger = logging.getLogger(__name__)
TRAINER_STATE = "trainer_state.json"  # the epoch a checkpoint ends, beside Accelerate's state
# The EMA copy is checkpointed as safetensors beside Accelerate's state, which it loads with weights_only=True:
# registered as a custom checkpoint instead, --resume would unpickle it, running whatever code a run folder holds.
EMA_STATE = "ema.safetensors"
LOSS_SHOWN_EVERY = 20  # steps between progress-bar loss updates, each of which waits for the GPU
METRIC_COLUMNS = [
    "epoch",
    "lr",
    "train_loss",
    "train_accuracy",
    "train_f1_weighted",
    "val_loss",
    "val_accuracy",
    "val_f1_weighted",
    "val_roc_auc",
    "val_patient_accuracy",
    "epoch_seconds",
    "train_img_per_s",
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="training.train", description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", required=True, help="mobilenetv2, vgg19, inceptionv3, resnet101v2 or timm name")
    add_data_arguments(parser)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--preset", default="best", choices=sorted(PRESETS))
    parser.add_argument(
        "--pretrained",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="start from ImageNet weights (needs the Hub); --no-pretrained trains from scratch",
    )
    split = parser.add_argument_group("patient-disjoint split (official folds, or a fixed grouped k-fold)")
    split.add_argument("--train-folds", nargs="+", help="default: fold_0, or every fold_* when --val-folds names none")
    split.add_argument("--val-folds", nargs="*", default=["fold_1"], help="none: train only, keep the last epoch")
    split.add_argument("--cv-split", help="patient->fold JSON from `python -m training.splits make-cv`")
    split.add_argument("--cv-fold", type=int, help="validate on this fold of --cv-split, train on the others")
    recipe = parser.add_argument_group("recipe overrides (default: the preset's value)")
    hints = get_type_hints(Recipe) | get_type_hints(Augmentation)
    for name in RECIPE_FIELDS + AUGMENTATION_FIELDS:
        kind = hints[name]
        flag = f"--{name.replace('_', '-')}"
        if kind is bool:
            recipe.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            recipe.add_argument(flag, type=kind, default=None)
    parser.add_argument(
        "--keep-epoch",
        choices=["best", "latest"],
        default="best",
        help="which epoch's model and evaluation the run keeps: the best by validation weighted F1, or the latest "
        "(what a run without validation keeps; use it for cross-validation that estimates such a final model, "
        "since picking the best epoch on the validation patients flatters them)",
    )
    parser.add_argument("--img-size", type=int, help="input size (default: the backbone's, 224 or 299)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument(
        "--device-cache",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="decode the training cells once into the device's memory instead of every epoch (default: on a GPU "
        "with room for them)",
    )
    parser.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], help="else accelerate's setting")
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    parser.add_argument("--stop-after", type=int, help="end this invocation after N epochs (continue with --resume)")
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=1,
        metavar="N",
        help="save the state for --resume every N epochs, when stopping and at the end: an interruption loses at "
        "most N epochs (a large model's state takes seconds to write: VGG19's is 2.3 GB)",
    )
    parser.add_argument(
        "--shifts",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="score the kept model's validation cells under the shift protocol at the end (training.shifts)",
    )
    parser.add_argument("--max-train-cells", type=int, help="random subset for smoke tests")
    parser.add_argument("--max-val-cells", type=int, help="random subset for smoke tests")
    args = parser.parse_args(argv)
    if args.checkpoint_every < 1:
        parser.error("--checkpoint-every must be at least 1")
    return args


def choose_split(
    dataset_dict: datasets.DatasetDict, args: argparse.Namespace
) -> tuple[datasets.Dataset, datasets.Dataset | None, str]:
    """Train and validation sets, and a description of the validation data for reports.

    Fills in ``args.train_folds`` when it was not given, so that run_config.json records the folds used.
    """
    if args.cv_split:
        if args.cv_fold is None:
            raise ValueError("--cv-split needs --cv-fold")
        train, val, where = split_cv_fold(dataset_dict, args.cv_split, args.cv_fold)
        return train, val, f"{where}, patients unseen in training"
    if args.train_folds is None:
        # Nothing held out means the final model: it trains on every fold.
        args.train_folds = ["fold_0"] if args.val_folds else [f for f in dataset_dict if f.startswith("fold_")]
    if not args.val_folds:
        missing = [f for f in args.train_folds if f not in dataset_dict]
        if missing:
            raise ValueError(f"Fold(s) {missing} not in the data; available: {list(dataset_dict)}")
        return datasets.concatenate_datasets([dataset_dict[f] for f in args.train_folds]), None, ""
    train, val = split_by_folds(dataset_dict, args.train_folds, args.val_folds)
    return train, val, f"C-NMC 2019 {'+'.join(args.val_folds)}, patients unseen in training"


def subset(dataset: datasets.Dataset | None, size: int | None, seed: int) -> datasets.Dataset | None:
    if dataset is None or size is None or size >= len(dataset):
        return dataset
    return dataset.shuffle(seed=seed).select(range(size))


def class_weights(labels: list[int]) -> torch.Tensor:
    """Inverse class frequency, scaled to average 1."""
    counts = torch.bincount(torch.tensor(labels), minlength=len(CLASS_NAMES)).float().clamp(min=1)
    weights = counts.sum() / counts
    return weights / weights.mean()


def save_metrics(rows: list[dict], path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRIC_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic.write_text(path, buffer.getvalue())


def load_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open() as handle:
        rows = [
            {k: (float(v) if v not in ("", None) else None) for k, v in row.items()} for row in csv.DictReader(handle)
        ]
    for row in rows:  # written back on --resume as the epochs after it are: 1, not 1.0
        row["epoch"] = int(row["epoch"])
    return rows


def run_config(
    args: argparse.Namespace, recipe: Recipe, train, val, val_description: str, accelerator, device_cache: bool
) -> dict:
    return {
        "backbone": resolve_backbone(args.backbone).timm_name,
        "preset": args.preset,
        "pretrained": args.pretrained,
        **{k: v for k, v in asdict(recipe).items() if k != "augmentation"},
        "augmentation": asdict(recipe.augmentation),
        "img_size": args.img_size or resolve_backbone(args.backbone).img_size,
        "seed": args.seed,
        "keep_epoch": args.keep_epoch,
        "data_dir": str(args.data_dir),
        # Only the split that was used: the fold flags keep their defaults when a cv split is chosen.
        "split": {"cv_split": args.cv_split, "cv_fold": args.cv_fold}
        if args.cv_split
        else {"train_folds": args.train_folds, "val_folds": args.val_folds},
        "val_description": val_description,
        "train_cells": len(train),
        "val_cells": len(val) if val is not None else 0,
        "train_patients": sorted(set(train["patient_id"])),
        "val_patients": sorted(set(val["patient_id"])) if val is not None else [],
        "num_processes": accelerator.num_processes,
        "device_cache": device_cache,
        "mixed_precision": accelerator.mixed_precision,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }


def measured_range(cells: datasets.Dataset) -> dict:
    """The range of size and stain of the training ``cells`` (an ``image`` column): the model folder keeps it, and
    the app flags cells outside it."""
    measures = (measure(row["image"]) for row in cells)
    return training_range(m for m in measures if m is not None)


def start_measuring(train_set: datasets.Dataset) -> concurrent.futures.Future:
    """:func:`measured_range` in a process of its own: it takes one core about half a minute for C-NMC's 7,108
    cells, which the first epoch needn't wait for."""
    executor = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    measuring = executor.submit(measured_range, train_set.select_columns(["image"]).with_format(None))
    executor.shutdown(wait=False)  # the process ends once it has measured
    return measuring


def checkpoint_dir(out: str | Path) -> Path:
    """Where a run saves its state for --resume."""
    return Path(out) / runs.CHECKPOINTS / "last"


def last_checkpoint(out: str | Path) -> Path | None:
    """The run folder's state for --resume, if it has one."""
    return atomic.existing_dir(checkpoint_dir(out))


def finished(out: str | Path) -> bool:
    """Whether the run in ``out`` trained every epoch of its recipe and wrote what follows: its curves come last."""
    checkpoint, curves = last_checkpoint(out), Path(out) / runs.TRAINING_CURVES
    if checkpoint is None or not curves.is_file():
        return False
    state = checkpoint / TRAINER_STATE
    trained = json.loads(state.read_text())["epoch"] >= runs.read_run_config(out)["epochs"]
    return trained and curves.stat().st_mtime >= state.stat().st_mtime


def train(args: argparse.Namespace) -> Path:
    recipe = build_recipe(args.preset, vars(args))
    out = Path(args.output_dir)
    last = checkpoint_dir(out)
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        # non_blocking: batches come from pinned memory, so their copy to the GPU need not stall the host.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, non_blocking=True),
    )
    resume_from = last_checkpoint(out) if args.resume else None
    if args.resume and resume_from is None:
        raise ValueError(f"--resume: no checkpoint in {last}")
    if not args.resume and last_checkpoint(out):
        raise ValueError(f"{out} already holds a run; pass --resume to continue it, or choose another --output-dir")
    set_seed(args.seed)
    with accelerator.main_process_first():
        dataset_dict = load_from_args(args)
    train_set, val_set, val_description = choose_split(dataset_dict, args)
    train_set = subset(train_set, args.max_train_cells, args.seed)
    val_set = subset(val_set, args.max_val_cells, args.seed)

    model = create_model(
        args.backbone,
        pretrained=args.pretrained,
        drop_rate=recipe.drop_rate,
        img_size=args.img_size,
        crop_pct=recipe.crop_pct,
    )
    if recipe.zero_head:
        head = model.get_classifier()
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
    if accelerator.device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    augment = BatchAugment(model, recipe.augmentation).to(accelerator.device)
    normalization = CellNormalization() if recipe.cell_normalization else None
    width = train_set[0]["image"].width
    device_cache = args.device_cache
    if device_cache is None:
        device_cache = DecodedCells.fit_on(accelerator.device, len(train_set), width)
    if device_cache:
        cells = DecodedCells.decode(
            train_set,
            width,
            accelerator.device,
            num_workers=args.num_workers,
            show_progress=accelerator.is_main_process,
            cell_normalization=normalization,
        )
        train_loader = cells.loader(recipe.batch_size, seed=args.seed)
    else:
        cells = None
        train_loader = make_loader(
            train_set,
            decoder(width, normalization),
            recipe.batch_size,
            shuffle=True,
            num_workers=args.num_workers,
            seed=args.seed,
        )
    val_loader = (
        make_loader(
            val_set,
            eval_transform(model, normalization),
            recipe.batch_size * 2,
            shuffle=False,
            num_workers=args.num_workers,
        )
        if val_set is not None
        else None
    )
    optimizer = create_optimizer_v2(model, opt=recipe.optimizer, lr=recipe.lr, weight_decay=recipe.weight_decay)
    # The prepared scheduler steps once per process for each optimizer step, and each process takes
    # ceil(batches / processes) steps an epoch: count the schedule in those steps, as on one process.
    steps_per_epoch = math.ceil(len(train_loader) / accelerator.num_processes) * accelerator.num_processes
    scheduler = get_cosine_schedule_with_warmup(
        optimizer, int(recipe.warmup_epochs * steps_per_epoch), recipe.epochs * steps_per_epoch
    )
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    if val_loader is not None:
        val_loader = accelerator.prepare(val_loader)
    ema = ModelEmaV3(accelerator.unwrap_model(model), decay=recipe.ema_decay) if recipe.ema_decay else None
    weight = class_weights(train_set["label"]).to(accelerator.device) if recipe.class_weights else None
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=recipe.label_smoothing)

    start_epoch, best_f1 = 0, -1.0
    rows = load_metrics(out / runs.METRICS) if args.resume else []
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        if ema is not None:
            ema_file = resume_from / EMA_STATE
            if not ema_file.is_file():
                raise ValueError(f"--resume: {ema_file} is missing (a checkpoint older than the EMA's own file)")
            ema.load_state_dict(load_file(ema_file, device=str(accelerator.device)))
        state = json.loads((resume_from / TRAINER_STATE).read_text())
        start_epoch, best_f1 = state["epoch"], state["best_f1"]
        rows = rows[:start_epoch]
        accelerator.print(f"Resuming {out} after epoch {start_epoch}")
    config = run_config(args, recipe, train_set, val_set, val_description, accelerator, device_cache)
    if accelerator.is_main_process:
        atomic.write_text(out / runs.RUN_CONFIG, json.dumps(config, indent=2) + "\n")
        measuring = start_measuring(train_set)

    for epoch in range(start_epoch, recipe.epochs):
        set_seed(args.seed + epoch)  # a resumed run sees the same shuffles and augmentations
        train_loader.set_epoch(epoch)
        model.train()
        # Per-step results stay on the device until the epoch ends: reading them back every step would make the
        # host wait for the GPU, and the GPU then wait for the host's next batch.
        started, seen, loss_sum, preds, targets = time.perf_counter(), 0, 0.0, [], []
        bar = tqdm(
            train_loader, desc=f"Epoch {epoch + 1}/{recipe.epochs}", disable=not accelerator.is_local_main_process
        )
        for step, batch in enumerate(bar):
            pixels, batch_labels = cells[batch] if cells is not None else (batch["pixel_values"], batch["labels"])
            x = augment(pixels)
            if x.device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            target = batch_labels
            if recipe.mixup or recipe.cutmix:
                x, target = mix_batch(x, target, len(CLASS_NAMES), mixup=recipe.mixup, cutmix=recipe.cutmix)
            logits = model(x)
            loss = loss_fn(logits, target)
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(accelerator.unwrap_model(model))
            p, y, batch_loss = accelerator.gather_for_metrics(
                (logits.argmax(-1), batch_labels, loss.detach().repeat(len(x)))
            )
            preds.append(p)
            targets.append(y)
            loss_sum += batch_loss.sum()
            seen += len(y)
            if step % LOSS_SHOWN_EVERY == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}")
        preds, targets, loss_sum = torch.cat(preds).tolist(), torch.cat(targets).tolist(), float(loss_sum)
        train_seconds = time.perf_counter() - started
        row = {
            "epoch": epoch + 1,
            "lr": scheduler.get_last_lr()[0],
            "train_loss": loss_sum / seen,
            "train_accuracy": accuracy_score(targets, preds),
            "train_f1_weighted": f1_score(targets, preds, average="weighted", zero_division=0),
            "train_img_per_s": seen / train_seconds,
        }
        eval_model = ema.module if ema is not None else model
        improved = args.keep_epoch == "latest" or (val_loader is None and epoch + 1 == recipe.epochs)
        if val_loader is not None:
            probs, labels, index = predict(eval_model, val_loader, accelerator)
            rows_val = val_set.select_columns(["patient_id", "path"]).select(index.tolist())
            result = report(
                probs,
                labels,
                rows_val["patient_id"],
                model=run_relative(out / runs.MODEL),
                split=val_description,
                epoch=epoch + 1,
            )
            row |= {
                "val_loss": torch.nn.functional.nll_loss(probs.clamp_min(1e-8).log(), labels).item(),
                "val_accuracy": result["accuracy"],
                "val_f1_weighted": result["f1_weighted"],
                "val_roc_auc": result["roc_auc"],
                "val_patient_accuracy": result["patient_accuracy"],
            }
            improved = improved or result["f1_weighted"] > best_f1
        row["epoch_seconds"] = time.perf_counter() - started
        rows.append(row)
        if improved:
            best_f1 = max(row.get("val_f1_weighted", best_f1), best_f1)
            if accelerator.is_main_process:
                tmp = out / "model.tmp"
                export_model(
                    accelerator.unwrap_model(eval_model),
                    tmp,
                    train_patients=config["train_patients"],
                    cell_normalization=normalization,
                    training_range=measuring.result(),
                )
                atomic.replace_dir(tmp, out / runs.MODEL)
                if val_loader is not None:
                    write_report(
                        result,
                        runs.report_file(out),
                        paths=rows_val["path"],
                        patient_ids=rows_val["patient_id"],
                        labels=labels.tolist(),
                        scores=probs[:, 1].tolist(),
                    )
        if accelerator.is_main_process:
            save_metrics(rows, out / runs.METRICS)
            accelerator.print(
                f"epoch {epoch + 1}: train loss {row['train_loss']:.4f} wF1 {row['train_f1_weighted']:.4f}"
                + (
                    f" | val loss {row['val_loss']:.4f} wF1 {row['val_f1_weighted']:.4f} acc {row['val_accuracy']:.4f}"
                    f" AUC {row['val_roc_auc'] or float('nan'):.4f} patients {row['val_patient_accuracy']:.3f}"
                    if val_loader is not None
                    else ""
                )
                + f" | {row['train_img_per_s']:.0f} img/s{' *' if improved else ''}"
            )
        stopping = bool(args.stop_after) and epoch + 1 - start_epoch >= args.stop_after and epoch + 1 < recipe.epochs
        if (epoch + 1) % args.checkpoint_every == 0 or epoch + 1 == recipe.epochs or stopping:
            tmp_state = last.with_name("last.tmp")
            accelerator.save_state(str(tmp_state))
            if ema is not None and accelerator.is_main_process:
                save_file({k: v.contiguous() for k, v in ema.state_dict().items()}, tmp_state / EMA_STATE)
            if accelerator.is_main_process:
                state = {"epoch": epoch + 1, "best_f1": best_f1}
                atomic.write_text(tmp_state / TRAINER_STATE, json.dumps(state))
                atomic.replace_dir(tmp_state, last)
            accelerator.wait_for_everyone()
        if stopping:
            accelerator.print(f"Stopping after epoch {epoch + 1} (--stop-after); continue with --resume")
            break
    accelerator.wait_for_everyone()
    if val_set is not None and args.shifts and len(rows) == recipe.epochs:  # not after --stop-after
        score_under_shifts(out, val_set, accelerator, args, batch_size=recipe.batch_size * 2)
    if accelerator.is_main_process:
        plot_training_curves(rows, out / runs.TRAINING_CURVES)
        predictions = runs.predictions_file(runs.report_file(out))
        if predictions.is_file():
            calibrate([predictions], out / runs.MODEL)
    accelerator.end_training()
    return out


def score_under_shifts(
    out: Path, val_set: datasets.Dataset, accelerator: Accelerator, args: argparse.Namespace, *, batch_size: int
) -> None:
    """The kept model's evaluation again, with the shift protocol (training.shifts): eval.json and its predictions."""
    kept = runs.read_report(out)
    context = {k: kept[k] for k in ("model", "split", "epoch") if k in kept}
    result, table = score_dataset(
        load_model(str(out / runs.MODEL)),
        val_set,
        accelerator,
        shifts=SHIFTS,
        batch_size=batch_size,
        num_workers=args.num_workers,
        **context,
    )
    if accelerator.is_main_process:
        write_report(result, runs.report_file(out), **table)
        accelerator.print(summary_line(result["shift_protocol"]))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # one line per checkpoint file is noise
    datasets.disable_progress_bars()
    args = parse_args(argv)
    try:
        train(args)
    except (CNMCDataError, PretrainedWeightsUnavailable, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
