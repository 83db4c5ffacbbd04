"""Publish a trained model to the Hugging Face Hub, with a model card built from its run.

Usage::

    python -m hub.push --model-dir runs/X/model --repo-id ORG/NAME [--private]
    python -m hub.push --model-dir runs/X/model --repo-id ORG/NAME --dry-run [--out DIR]

The repo gets model.safetensors, config.json, README.md (the card), calibration.json if the model has one, and
the run's plots that the card shows. ``--dry-run`` only builds that folder (in ``--out``, else a new temporary
folder) and prints where it is. The token comes from ``HF_TOKEN`` or ``hf auth login``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from huggingface_hub import CommitInfo

from cnmc import runs
from cnmc.export import (
    CALIBRATION_NAME,
    CONFIG_NAME,
    SHIFT_PROTOCOL_NAME,
    TRAIN_PATIENTS_KEY,
    WEIGHTS_NAME,
    transformers_compatible,
)
from hub.card import model_card, present_plots
from hub.upload import HubError, add_upload_arguments, check_repo_id, new_folder, run, upload

# Files the repo may hold that a later push may no longer bring: removed in the same commit then.
_OPTIONAL_FILES = [CALIBRATION_NAME, SHIFT_PROTOCOL_NAME, "*.png"]


def build_model_repo(model_dir: str | Path, out: Path, *, repo_id: str, run_dir: str | Path | None = None) -> list[str]:
    """Write the repo's files into the empty folder ``out``; return their names.

    ``run_dir`` holds the run's files that the card reads (run_config.json, eval.json, plots); by default the model
    folder's parent, as training leaves it.
    """
    model_dir = Path(model_dir)
    run_dir = model_dir.parent if run_dir is None else Path(run_dir)
    for required in (CONFIG_NAME, WEIGHTS_NAME):
        if not (model_dir / required).is_file():
            raise HubError(f"{model_dir / required} is missing: --model-dir must be a run's model/ folder")
    try:
        card = model_card(model_dir, repo_id=repo_id, run_dir=run_dir)
    except FileNotFoundError as error:
        raise HubError(str(error)) from None
    card.save(out / "README.md")
    config = json.loads((model_dir / CONFIG_NAME).read_text())
    # Folders exported before config.json recorded the training patients get them from their run.
    run_config = runs.read_run_config(run_dir)  # the card has read it already
    config.setdefault(TRAIN_PATIENTS_KEY, sorted(run_config["train_patients"]))
    (out / CONFIG_NAME).write_text(json.dumps(transformers_compatible(config), indent=2) + "\n")
    shutil.copy2(model_dir / WEIGHTS_NAME, out / WEIGHTS_NAME)
    for optional in (CALIBRATION_NAME, SHIFT_PROTOCOL_NAME):
        if (model_dir / optional).is_file():
            shutil.copy2(model_dir / optional, out / optional)
    for plot in present_plots(run_dir):
        shutil.copy2(plot, out / plot.name)
    return sorted(p.name for p in out.iterdir())


def push(
    model_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    out: str | Path | None = None,
    run_dir: str | Path | None = None,
) -> CommitInfo:
    """Build the repo folder and upload it as one commit; return the commit (its URL; ``oid``, its revision)."""
    check_repo_id(repo_id)
    folder = new_folder(out)
    run_dir = Path(model_dir).parent if run_dir is None else Path(run_dir)
    try:
        build_model_repo(model_dir, folder, repo_id=repo_id, run_dir=run_dir)
        return upload(
            folder,
            repo_id,
            repo_type="model",
            private=private,
            delete_patterns=_OPTIONAL_FILES,
            commit_message=f"Upload the model of {run_dir.name}",
        )
    finally:
        if out is None:
            shutil.rmtree(folder, ignore_errors=True)


def dry_run(
    model_dir: str | Path, repo_id: str, *, out: str | Path | None = None, run_dir: str | Path | None = None
) -> str:
    check_repo_id(repo_id)
    folder = new_folder(out)
    files = build_model_repo(model_dir, folder, repo_id=repo_id, run_dir=run_dir)
    return f"Dry run: {repo_id} would get {', '.join(files)}, written to {folder}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hub.push", description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", required=True, help="a run's model/ folder, e.g. runs/X/model")
    add_upload_arguments(parser, "model repo")
    args = parser.parse_args(argv)
    if args.dry_run:
        return run(lambda: dry_run(args.model_dir, args.repo_id, out=args.out))
    return run(lambda: push(args.model_dir, args.repo_id, private=args.private, out=args.out))


if __name__ == "__main__":
    sys.exit(main())
