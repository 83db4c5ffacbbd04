"""Create a Hub repo and upload a folder to it in one commit; every failure becomes one line without the token.

Shared by :mod:`hub.push` (models) and :mod:`hub.push_space` (the app). The token is whatever huggingface_hub
resolves (``HF_TOKEN`` or ``hf auth login``); it is looked up here only to check it exists and to scrub it.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx2
from huggingface_hub import CommitInfo, HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, OfflineModeIsEnabled, RepositoryNotFoundError
from huggingface_hub.utils import validate_repo_id

# User access tokens look like hf_<letters and digits>; scrubbed even when they are not the one in use.
_TOKEN_PATTERN = re.compile(r"hf_[A-Za-z0-9]{8,}")


def add_upload_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """The options every push command shares; ``what`` names the repo kind in the help."""
    parser.add_argument("--repo-id", required=True, help=f"ORG/NAME of the {what} on the Hugging Face Hub")
    parser.add_argument("--private", action="store_true", help=f"create the {what} private")
    parser.add_argument("--dry-run", action="store_true", help=f"only build the {what} folder; upload nothing")
    parser.add_argument("--out", help=f"where to build the {what} folder (must be new or empty)")


class HubError(Exception):
    """A failure the user can act on; the message is one line and never holds a token."""


def check_repo_id(repo_id: str) -> str:
    """``ORG/NAME`` as the Hub accepts it, or a :class:`HubError` saying what is wrong."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise HubError(f"Invalid repo id {repo_id!r}: {str(error).splitlines()[0]}") from None
    if "/" not in repo_id:
        raise HubError(f"Invalid repo id {repo_id!r}: give the owner too, as ORG/NAME (a user or organisation)")
    return repo_id


def new_folder(out: str | Path | None) -> Path:
    """``out`` (created, and required to be empty so it holds exactly what is built), else a temporary folder."""
    if out is None:
        return Path(tempfile.mkdtemp(prefix="cnmc-hub-"))
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise HubError(f"--out {out} exists and is not an empty folder: choose a new one")
    out.mkdir(parents=True, exist_ok=True)
    return out


def scrub(text: str, token: str | None = None) -> str:
    if token:
        text = text.replace(token, "***")
    return _TOKEN_PATTERN.sub("hf_***", text)


def upload(
    folder: Path,
    repo_id: str,
    *,
    repo_type: str,
    private: bool = False,
    space_sdk: str | None = None,
    space_variables: dict[str, str] | None = None,
    delete_patterns: list[str] | None = None,
    commit_message: str,
) -> CommitInfo:
    """Create ``repo_id`` if needed and upload ``folder`` as one commit; return the commit (a str, its URL; its
    ``oid`` is the revision to pin).

    ``space_variables`` are set in a Space's settings, where its app reads them from the environment.
    ``delete_patterns`` removes remote files matching them that this commit doesn't bring again (stale plots,
    a calibration.json that no longer applies).
    """
    check_repo_id(repo_id)
    token = get_token()
    if not token:
        raise HubError("No Hugging Face token: run `hf auth login` or set HF_TOKEN (with write access), then retry")
    extra = {"space_sdk": space_sdk} if space_sdk else {}
    try:
        api = HfApi()
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type=repo_type, **extra)
        for key, value in (space_variables or {}).items():
            api.add_space_variable(repo_id, key, value)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            repo_type=repo_type,
            commit_message=commit_message,
            delete_patterns=delete_patterns,
        )
    except Exception as error:  # every failure becomes one line, scrubbed of tokens, whatever its type
        first_line = (str(error).splitlines() or [""])[0]
        message = _explain(error, repo_id) or f"Upload to {repo_id} failed ({type(error).__name__}: {first_line})"
        # `from None`: the original exception (whose text may hold the token) must not be printed with it.
        raise HubError(scrub(message, token)) from None
    return commit


def _explain(error: Exception, repo_id: str) -> str | None:
    owner = repo_id.split("/")[0]
    if isinstance(error, OfflineModeIsEnabled):
        return "HF_HUB_OFFLINE is set: unset it (or set HF_HUB_OFFLINE=0) to upload to the Hub"
    if isinstance(error, RepositoryNotFoundError):
        return f"{repo_id} can't be created or found: check that {owner!r} exists and that your token may write to it"
    if isinstance(error, HfHubHTTPError):
        status = error.response.status_code
        if status == 401:
            return "The Hub rejected the token (HTTP 401): run `hf auth login` again or set HF_TOKEN to a valid token"
        if status == 403:
            return (
                f"The token may not write to {repo_id} (HTTP 403): use a token with write access to {owner!r} "
                "(`hf auth login` or HF_TOKEN)"
            )
        return f"The Hub answered HTTP {status} for {repo_id}: {str(error).splitlines()[0]}"
    if isinstance(error, httpx2.TransportError | ConnectionError | TimeoutError):
        return f"Could not reach the Hugging Face Hub ({type(error).__name__}): check the network connection and retry"
    return None


def run(action: Callable[[], str]) -> int:
    """Run a command's ``action``; print its result, or its :class:`HubError` as one line, exit status 2."""
    try:
        print(action())
    except HubError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
