"""Publish the app as a Gradio Space on the Hugging Face Hub.

Usage::

    python -m hub.push_space --repo-id ORG/NAME [--private] [--docker]
    python -m hub.push_space --repo-id ORG/NAME --dry-run [--out DIR] [--docker]

The Space gets app.py, requirements.txt (the app's own: no training libraries), the app's code (cnmc/, serving/),
models/, the results table and plots that the app shows, the example cells, and a README.md whose YAML header
pins the Gradio version of requirements.txt and lists the model repos of :mod:`serving.registry` that are
published (pinned to a revision). With
``--docker`` it is a Docker Space instead: the Dockerfile too, and ``sdk: docker`` in the header. Its setting
``CNMC_HUB_ORG`` names the organisation whose repos its app loads.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

from huggingface_hub import SpaceCard, SpaceCardData

from hub.card import CITATION
from hub.upload import HubError, add_upload_arguments, check_repo_id, new_folder, run, upload
from serving import results
from serving.registry import HUB_ORG, MODELS, ORG_SETTING, ROOT

FILES = ["app.py", "requirements.txt"]
DOCKER_FILES = ["Dockerfile"]  # a Docker Space builds the image the Dockerfile describes
APP_PORT = 7860  # the Dockerfile's GRADIO_SERVER_PORT
# The app's code (it imports nothing from training/ or hub/), its shipped models and the real cells it offers as
# examples; each only when present.
FOLDERS = ["cnmc", "serving", "models", "examples"]
# Of results/, only what the Models & results tab reads.
RESULTS = results.READS
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")


def gradio_version(requirements: Path) -> str:
    """The ``gradio==X`` pin of requirements.txt: the Space must run the Gradio the app was tested with."""
    match = re.search(r"^gradio==([\w.]+)\s*$", requirements.read_text(), re.MULTILINE)
    if not match:
        raise HubError(f"{requirements} pins no Gradio version (a line gradio==X.Y.Z); the Space needs one")
    return match[1]


def space_card(sdk_version: str | None, models: list[str], *, docker: bool = False) -> SpaceCard:
    """The Space's README.md: a Gradio Space pinned to ``sdk_version``, or a Docker Space serving on APP_PORT."""
    sdk = {"sdk": "docker", "app_port": APP_PORT} if docker else {
        "sdk": "gradio", "sdk_version": sdk_version, "python_version": "3.11", "app_file": "app.py"
    }  # fmt: skip
    data = SpaceCardData(
        title="C-NMC ALL detector",
        emoji="🩸",
        colorFrom="red",
        colorTo="indigo",
        **sdk,
        license="apache-2.0",
        models=models,
        short_description="ALL vs healthy blood cells (C-NMC 2019), research only",
        tags=["medical", "leukemia", "image-classification"],
    )
    body = (
        "# C-NMC ALL detector\n\n"
        "Classifies a single white-blood-cell microscope image as acute lymphoblastic leukaemia (ALL) or healthy "
        "(HEM) with four CNNs trained on C-NMC 2019 and evaluated on patients unseen in training.\n\n"
        "**Research and education only, not for diagnosis.**\n\n"
        f"Training images: C-NMC 2019, CC BY 3.0.\n\n> {CITATION}\n"
    )
    return SpaceCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def build_space_repo(
    out: Path, root: Path = ROOT, *, models: list[str] | None = None, docker: bool = False
) -> list[str]:
    """Write the Space's files into the empty folder ``out``; return the top-level names. ``models``: the model
    repos its header lists (default: the registry's published ones)."""
    for name in FILES + (DOCKER_FILES if docker else []):
        if not (root / name).is_file():
            raise HubError(f"{root / name} is missing: the Space needs it")
        shutil.copy2(root / name, out / name)
    for name in FOLDERS:
        if (root / name).is_dir():
            shutil.copytree(root / name, out / name, ignore=_IGNORE)
    for path in (p for pattern in RESULTS for p in sorted(root.glob(pattern))):
        (out / path.parent.relative_to(root)).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, out / path.relative_to(root))
    models = [model.repo_id for model in MODELS if model.revision] if models is None else models
    version = None if docker else gradio_version(root / "requirements.txt")
    space_card(version, models, docker=docker).save(out / "README.md")
    return sorted(p.name for p in out.iterdir())


def push_space(
    repo_id: str,
    *,
    private: bool = False,
    out: str | Path | None = None,
    docker: bool = False,
    org: str = HUB_ORG,
    models: list[str] | None = None,
) -> str:
    """Build the Space's folder and upload it as one commit; its app loads ``org``'s model repos."""
    check_repo_id(repo_id)
    folder = new_folder(out)
    try:
        build_space_repo(folder, models=models, docker=docker)
        return upload(
            folder,
            repo_id,
            repo_type="space",
            space_sdk="docker" if docker else "gradio",
            space_variables={ORG_SETTING: org},
            private=private,
            # The Space mirrors the app: code removed here goes there too, in the same commit.
            delete_patterns=[f"{name}/**" for name in [*FOLDERS, "results", "training", "hub"]],
            commit_message="Upload the app",
        )
    finally:
        if out is None:
            shutil.rmtree(folder, ignore_errors=True)


def dry_run(
    repo_id: str, *, out: str | Path | None = None, docker: bool = False, models: list[str] | None = None
) -> str:
    check_repo_id(repo_id)
    folder = new_folder(out)
    files = build_space_repo(folder, models=models, docker=docker)
    return f"Dry run: Space {repo_id} would get {', '.join(files)}, written to {folder}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hub.push_space", description=__doc__.split("\n")[0])
    add_upload_arguments(parser, "Space")
    add_docker_argument(parser)
    args = parser.parse_args(argv)
    if args.dry_run:
        return run(lambda: dry_run(args.repo_id, out=args.out, docker=args.docker))
    return run(lambda: push_space(args.repo_id, private=args.private, out=args.out, docker=args.docker))


def add_docker_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--docker", action="store_true", help="a Docker Space built from the Dockerfile, instead of a Gradio Space"
    )


if __name__ == "__main__":
    sys.exit(main())
