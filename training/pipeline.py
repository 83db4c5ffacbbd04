"""The cross-validation campaign, end to end: for each backbone its three patient-grouped folds and its final
model trained side by side, then the pooled out-of-fold evaluation, calibration and size test of the final model,
and one comparison table over every backbone.

    python -m training.pipeline --data-dir prepared --backbones mobilenetv2 inceptionv3 --output runs/campaign
    python -m training.pipeline ... --dry-run      # print every command, run none
    python -m training.pipeline ... --one-at-a-time   # on a CPU; run again to continue where it stopped

Each backbone gets OUTPUT/BACKBONE-PRESET-cv0..cv2 (validated on one fold of --cv-split, trained on the others)
and OUTPUT/BACKBONE-PRESET-all (trained on every patient, keeping its latest epoch, as the folds do, so that their
pooled predictions are an honest evaluation of it). Then, in order, what each writes:

1. ``training.crossval``: the final model's eval.json from the folds' pooled predictions, and its
   shift_protocol.json;
2. ``training.calibrate``: its calibration.json, fitted on those predictions;
3. ``training.size_baseline``: OUTPUT/size-baseline (cell area alone) and how far the model follows size;
4. ``training.compare``: OUTPUT/compare, every backbone's folds beside the baselines.

``--one-at-a-time`` trains the runs one after another instead of side by side (a CPU's cores are filled by one
run of a large backbone). Run again, the same command skips finished runs and resumes interrupted ones from their
last checkpoint. ``--time-limit`` stops the training after that many seconds: side by side, every run keeps its
latest finished epoch and the rest of the pipeline still runs; one after another, the runs not yet started wait for
the next invocation. Each run's output goes to OUTPUT/logs/RUN.log. Publishing the final models is a separate step
(``python -m hub.publish``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from cnmc import runs
from training.presets import PRESETS
from training.train import finished, last_checkpoint

FOLDS = 3
PYTHON = "python"
HANDCRAFTED_BASELINE = "results/handcrafted-baseline/shift-protocol/eval.json"


@dataclass(frozen=True)
class Step:
    name: str
    argv: list[str]

    def command(self) -> str:
        return shlex.join(self.argv)

    def runnable(self) -> list[str]:
        return [sys.executable, *self.argv[1:]]  # this interpreter, where the printed command says "python"


def training_runs(args: argparse.Namespace) -> list[Step]:
    """Every backbone's fold runs and final run: they train side by side."""
    steps = []
    for backbone in args.backbones:
        common = [PYTHON, "-m", "training.train", "--backbone", backbone, "--data-dir", str(args.data_dir)]
        common += ["--preset", args.preset, "--keep-epoch", "latest", "--no-verify"]
        common += ["--pretrained" if args.pretrained else "--no-pretrained", "--num-workers", str(args.num_workers)]
        common += ["--mixed-precision", args.mixed_precision]
        for flag, value in (("--epochs", args.epochs), ("--img-size", args.img_size)):
            common += [flag, str(value)] if value else []
        if args.max_cells:
            common += ["--max-train-cells", str(args.max_cells), "--max-val-cells", str(args.max_cells)]
        common += shlex.split(args.train_args)
        for k in range(FOLDS):
            folder = run_folder(args, backbone, f"cv{k}")
            split = ["--cv-split", str(args.cv_split), "--cv-fold", str(k)]
            steps.append(Step(folder.name, [*common, *split, "--output-dir", str(folder)]))
        folder = run_folder(args, backbone, "all")
        everything = ["--train-folds", "fold_0", "fold_1", "--val-folds"]
        steps.append(Step(folder.name, [*common, *everything, "--output-dir", str(folder)]))
    return steps


def evaluation_steps(args: argparse.Namespace) -> list[Step]:
    """Per backbone, in order: pooled evaluation, calibration, size test; then the comparison of them all."""
    python = [PYTHON, "-m"]
    size_baseline = args.output / "size-baseline"
    steps = []
    for backbone in args.backbones:
        folds = [str(run_folder(args, backbone, f"cv{k}")) for k in range(FOLDS)]
        final = run_folder(args, backbone, "all")
        model = final / runs.MODEL
        predictions = runs.predictions_file(runs.report_file(final))
        steps += [
            Step(f"{backbone}: pooled evaluation", [*python, "training.crossval", *folds, "--model-dir", str(model)]),
            Step(
                f"{backbone}: calibration",
                [*python, "training.calibrate", "--predictions", str(predictions), "--model-dir", str(model)],
            ),
            Step(
                f"{backbone}: size test",
                [*python, "training.size_baseline", "--data-dir", str(args.data_dir), "--cv-split", str(args.cv_split)]
                + ["--output", str(size_baseline), "--predictions", str(predictions), "--num-proc", str(args.num_proc)],
            ),
        ]
    folds = [str(run_folder(args, b, f"cv{k}")) for b in args.backbones for k in range(FOLDS)]
    baselines = [str(runs.report_file(size_baseline))]
    baselines += [HANDCRAFTED_BASELINE] if Path(HANDCRAFTED_BASELINE).is_file() else []
    steps.append(
        Step(
            "comparison",
            [*python, "training.compare", *folds, "--output", str(args.output / "compare"), "--baseline", *baselines],
        )
    )
    return steps


def run_folder(args: argparse.Namespace, backbone: str, part: str) -> Path:
    return args.output / f"{backbone}-{args.preset}-{part}"


def pending(steps: list[Step], output: Path) -> list[Step]:
    """The runs still to train: a finished one is skipped, an interrupted one continues from its checkpoint."""
    todo = []
    for step in steps:
        folder = output / step.name
        if finished(folder):
            print(f"# {step.name}: finished, skipped", flush=True)
        else:
            todo.append(Step(step.name, [*step.argv, "--resume"]) if last_checkpoint(folder) else step)
    return todo


def train_runs(
    steps: list[Step], logs: Path, time_limit: float | None, *, one_at_a_time: bool = False
) -> tuple[list[str], list[str]]:
    """Trains the runs side by side, or one after another; the names of those that failed and of those that
    --time-limit or a failure left unstarted. A run stopped at the limit has not failed: it keeps its latest epoch."""
    logs.mkdir(parents=True, exist_ok=True)
    deadline = None if time_limit is None else time.monotonic() + time_limit
    batches = [[step] for step in steps] if one_at_a_time else [steps]
    failed = []
    for i, batch in enumerate(batches):
        if failed or (deadline is not None and time.monotonic() >= deadline):
            return failed, [step.name for later in batches[i:] for step in later]
        failed += train_together(batch, logs, deadline)
    return failed, []


def train_together(steps: list[Step], logs: Path, deadline: float | None) -> list[str]:
    """Starts the runs at once and waits for them; the names of those that failed."""
    running = []
    for step in steps:
        log = (logs / f"{step.name}.log").open("a")  # a continued run adds to its log
        # A session of its own, so that stopping a run stops its data-loader workers too.
        process = subprocess.Popen(step.runnable(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        running.append((step, log, process))
        print(f"started {step.name} (log: {log.name})", flush=True)
    failed = []
    for step, log, process in running:
        try:
            code = process.wait(timeout=None if deadline is None else max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            print(f"{step.name}: stopped at --time-limit, keeping its latest finished epoch", flush=True)
        else:
            print(f"{step.name}: {'done' if code == 0 else f'failed (exit {code})'}", flush=True)
            if code != 0:
                failed.append(step.name)
        log.close()
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True, type=Path, help="C-NMC_Leukemia, or a prepared copy")
    parser.add_argument("--output", required=True, type=Path, help="the campaign's folder: one folder per run")
    parser.add_argument("--backbones", nargs="+", default=["mobilenetv2"])
    parser.add_argument("--preset", default="best", choices=sorted(PRESETS))
    parser.add_argument("--cv-split", type=Path, default=Path("splits/cnmc_cv3_seed0.json"))
    parser.add_argument("--epochs", type=int, help="default: the preset's")
    parser.add_argument("--img-size", type=int, help="default: the backbone's input size")
    parser.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--num-workers", type=int, default=3, help="each run's loader workers")
    parser.add_argument("--num-proc", type=int, default=min(4, os.cpu_count() or 1), help="the size test's processes")
    parser.add_argument(
        "--mixed-precision", choices=["no", "fp16", "bf16"], default="bf16" if torch.cuda.is_available() else "no"
    )
    parser.add_argument("--train-args", default="", help='more training.train flags for every run, e.g. "--mixup 0.2"')
    parser.add_argument("--max-cells", type=int, help="train and validate each run on this many cells (smoke tests)")
    parser.add_argument("--time-limit", type=float, help="seconds before the training runs are stopped")
    parser.add_argument(
        "--one-at-a-time",
        action="store_true",
        help="train the runs one after another instead of side by side: on a CPU, whose cores one run fills",
    )
    parser.add_argument("--dry-run", action="store_true", help="print every command in order and run none")
    args = parser.parse_args(argv)
    if not args.dry_run and not args.cv_split.is_file():
        parser.error(f"--cv-split {args.cv_split} does not exist")

    training, evaluation = pending(training_runs(args), args.output), evaluation_steps(args)
    if args.dry_run:
        print("# one after another" if args.one_at_a_time else "# side by side")
        background = "" if args.one_at_a_time else " &"
        for step in training:
            print(f"{step.command()} >> {args.output / 'logs' / step.name}.log 2>&1{background}")
        print("wait\n# then in order")
        print("\n".join(step.command() for step in evaluation))
        return 0
    failed, unstarted = train_runs(training, args.output / "logs", args.time_limit, one_at_a_time=args.one_at_a_time)
    if failed:
        print(f"error: {', '.join(failed)} failed: see their logs in {args.output / 'logs'}", file=sys.stderr)
        return 1
    if unstarted:
        print(
            f"stopped at --time-limit before {', '.join(unstarted)} started: run the same command again to continue",
            file=sys.stderr,
        )
        return 1
    for step in evaluation:
        print(f"== {step.name}", flush=True)
        if subprocess.run(step.runnable()).returncode != 0:
            print(f"error: {step.name} failed: {step.command()}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
