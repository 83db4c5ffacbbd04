"""Publish the four models and the app to the Hugging Face Hub in one command.

Usage::

    python -m hub.publish --org ORG [--private] [--docker] [--space NAME]
    python -m hub.publish --org ORG --dry-run [--out DIR] [--docker]

Each folder in models/ that holds weights becomes the model repo ORG/cnmc-NAME (:mod:`hub.push`): its weights,
config.json, calibration.json, the card (:mod:`hub.card`, from the committed copy of its run) and the plots the card
shows. A folder without weights is reported as skipped. Each upload's commit is recorded in
serving/hub_revisions.json, which pins the app to it: commit that file. Then the Space ORG/NAME gets the app
(:mod:`hub.push_space`) with that file: a Gradio Space, or with ``--docker`` one built from the Dockerfile.
``--dry-run`` uploads nothing: it writes into ``--out`` (else a new temporary folder) one folder per repo holding
exactly what would be uploaded. The token comes from ``HF_TOKEN`` or ``hf auth login``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from cnmc.export import WEIGHTS_NAME
from hub import push
from hub.card import shipped_run
from hub.push_space import add_docker_argument, build_space_repo, push_space
from hub.upload import check_repo_id, new_folder, run
from serving.registry import REVISIONS_FILE, ROOT, RegisteredModel, read_revisions, registered_models

SPACE_NAME = "cnmc-all-detector"


def skip_reason(model: RegisteredModel) -> str | None:
    """Why ``model`` has nothing to publish, or None."""
    if model.local_dir is None or not (model.local_dir / WEIGHTS_NAME).is_file():
        folder = model.local_dir.relative_to(ROOT) if model.local_dir else model.display_name
        return f"skipped: {folder} holds no {WEIGHTS_NAME} (the clone has its card, not its weights)"
    return None


def _on_the_hub(models: list[RegisteredModel]) -> list[str]:
    """The repos the Space's header may list: those this run uploads, and those published before."""
    return [m.repo_id for m in models if m.revision or not skip_reason(m)]


def _with_weights(models: list[RegisteredModel], lines: list[str]) -> Iterator[RegisteredModel]:
    """The models that can be uploaded; for each of the others, a line in ``lines`` saying why it is skipped."""
    for model in models:
        reason = skip_reason(model)
        if reason:
            lines.append(f"{model.repo_id}: {reason}")
        else:
            yield model


def _name(model: RegisteredModel) -> str:
    return model.repo_id.split("/")[1]


def dry_run(org: str, *, out: str | Path | None = None, docker: bool = False, space: str = SPACE_NAME) -> str:
    """Write each repo's folder into ``out``; return what each would get, and which are skipped and why."""
    models = registered_models(org)
    space_id = check_repo_id(f"{org}/{space}")
    folder = new_folder(out)
    lines = []
    for model in _with_weights(models, lines):
        repo, run_dir = new_folder(folder / _name(model)), shipped_run(model.local_dir)
        files = push.build_model_repo(model.local_dir, repo, repo_id=model.repo_id, run_dir=run_dir)
        lines.append(f"{model.repo_id}: would get {', '.join(files)}, written to {repo}")
    repo = new_folder(folder / space)
    files = build_space_repo(repo, models=_on_the_hub(models), docker=docker)
    lines.append(f"Space {space_id}: would get {', '.join(files)}, written to {repo}")
    return "Dry run, nothing uploaded:\n" + "\n".join(lines)


def publish(
    org: str,
    *,
    private: bool = False,
    docker: bool = False,
    space: str = SPACE_NAME,
    revisions_file: Path = REVISIONS_FILE,
) -> str:
    """Upload each model that has weights, record its commit in ``revisions_file``, then upload the Space."""
    models = registered_models(org)
    space_id = check_repo_id(f"{org}/{space}")
    lines = []
    for model in _with_weights(models, lines):
        commit = push.push(model.local_dir, model.repo_id, private=private, run_dir=shipped_run(model.local_dir))
        # Recorded at once, so that a later failure leaves the uploads before it pinned.
        record_revision(model.repo_id, commit.oid, revisions_file)
        lines.append(f"{model.repo_id}: uploaded, pinned at {commit.oid} ({commit})")
    url = push_space(space_id, private=private, docker=docker, org=org, models=_on_the_hub(models))
    lines.append(f"Space {space_id}: uploaded ({url})")
    lines.append(f"{revisions_file.name} records the revisions the app loads: commit it")
    return "\n".join(lines)


def record_revision(repo_id: str, revision: str, file: Path = REVISIONS_FILE) -> None:
    revisions = {**read_revisions(file), repo_id: revision}
    file.write_text(json.dumps(dict(sorted(revisions.items())), indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hub.publish", description=__doc__.split("\n")[0])
    parser.add_argument("--org", required=True, help="the Hub user or organisation that gets the repos")
    parser.add_argument("--space", default=SPACE_NAME, help=f"the Space's name under ORG (default {SPACE_NAME})")
    parser.add_argument("--private", action="store_true", help="create the repos private")
    parser.add_argument("--dry-run", action="store_true", help="only write the repos' folders; upload nothing")
    parser.add_argument("--out", help="with --dry-run: where to write them (must be new or empty)")
    add_docker_argument(parser)
    args = parser.parse_args(argv)
    if args.out and not args.dry_run:
        parser.error("--out goes with --dry-run")
    if args.dry_run:
        return run(lambda: dry_run(args.org, out=args.out, docker=args.docker, space=args.space))
    return run(lambda: publish(args.org, private=args.private, docker=args.docker, space=args.space))


if __name__ == "__main__":
    sys.exit(main())
