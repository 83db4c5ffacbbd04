"""Load a trained model, with its preprocessing and labels, from a local folder or the Hugging Face Hub.

``source`` is a folder written by :func:`cnmc.export.export_model`, ``hf-hub:ORG/NAME`` or ``ORG/NAME``, either
pinned to a revision as ``ORG/NAME@REVISION`` (a commit sha or tag). Hub models go through
``huggingface_hub.snapshot_download``, which with ``HF_HUB_OFFLINE=1`` serves the local cache.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import httpx2
import timm
import torch
from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

from cnmc.export import (
    CALIBRATION_NAME,
    CELL_NORMALIZATION_KEY,
    CONFIG_NAME,
    SHIFT_PROTOCOL_NAME,
    TRAIN_PATIENTS_KEY,
    TRAINING_RANGE_KEY,
    WEIGHTS_NAME,
)
from cnmc.preprocessing import CellNormalization, eval_transform

HUB_PREFIX = "hf-hub:"
# Only what the model needs: the card and plots stay on the Hub.
_MODEL_FILES = [CONFIG_NAME, WEIGHTS_NAME, CALIBRATION_NAME, SHIFT_PROTOCOL_NAME]


# Why a Hub model can't be loaded, as the app's status and log say it first.
NOT_PUBLISHED = "not published yet"  # no such repo, or no such revision, on the Hub
OFFLINE = "offline"  # HF_HUB_OFFLINE, or no connection to the Hub, and no cached copy
NETWORK_ERROR = "network error"  # the Hub was reached but the download failed


class ModelLoadError(OSError):
    """The model can't be found or fetched; the message says why, in one line, starting with its ``kind`` if any."""

    def __init__(self, message: str, kind: str | None = None):
        super().__init__(f"{kind}: {message}" if kind else message)
        self.kind = kind


class LoadedModel(NamedTuple):
    model: torch.nn.Module  # in eval mode, on the requested device
    transform: Callable  # PIL image -> input tensor: config.json's cell normalisation, then its pretrained_cfg
    label_names: list[str]  # config.json's, by class index: ["HEM (healthy)", "ALL (leukaemia)"]
    folder: Path  # the local folder the model was read from (a cache snapshot for Hub models)
    temperature: float | None  # from calibration.json: divide the logits by it before softmax
    # config.json's record of the patients it trained on; None where the folder predates that record
    train_patients: frozenset[str] | None = None
    # config.json's range of cell size and stain among its training cells (cnmc.training_range); None if unrecorded
    training_range: dict | None = None


def load_model(source: str, device: str | torch.device = "cpu", *, cache_dir: str | Path | None = None) -> LoadedModel:
    """Load ``source`` (a local folder, ``hf-hub:ORG/NAME[@REVISION]`` or ``ORG/NAME[@REVISION]``) for inference."""
    folder = resolve_folder(source, cache_dir=cache_dir)
    config = json.loads((folder / CONFIG_NAME).read_text())
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).to(device).eval()
    patients = config.get(TRAIN_PATIENTS_KEY)
    return LoadedModel(
        model,
        eval_transform(model, CellNormalization.from_config(config.get(CELL_NORMALIZATION_KEY))),
        _label_names(config, model),
        folder,
        _temperature(folder),
        None if patients is None else frozenset(patients),
        config.get(TRAINING_RANGE_KEY),
    )


def resolve_folder(source: str, *, cache_dir: str | Path | None = None) -> Path:
    """The local folder holding ``source``'s config.json and weights, downloading a Hub model if needed."""
    path = Path(source).expanduser()
    if source.startswith(HUB_PREFIX) or (not path.exists() and _looks_like_repo_id(source)):
        repo_id, _, revision = source.removeprefix(HUB_PREFIX).partition("@")
        folder = _download(repo_id, revision or None, cache_dir, named_as_hub=source.startswith(HUB_PREFIX))
    elif path.is_dir():
        folder = path
    else:
        raise ModelLoadError(f"Model folder not found: {path} (nor is it a Hub repo id like ORG/NAME)")
    if not (folder / CONFIG_NAME).is_file():
        raise ModelLoadError(f"{folder} holds no {CONFIG_NAME}: not a model folder written by cnmc.export")
    if not (folder / WEIGHTS_NAME).is_file():
        raise ModelLoadError(f"{folder} holds no {WEIGHTS_NAME}: the model weights are missing")
    return folder


def _looks_like_repo_id(source: str) -> bool:
    if source.count("/") != 1 or source.startswith((".", "/", "~")):
        return False
    try:
        validate_repo_id(source.partition("@")[0])
    except HFValidationError:
        return False
    return True


def _download(repo_id: str, revision: str | None, cache_dir: str | Path | None, *, named_as_hub: bool) -> Path:
    where = f"Hub model {repo_id}" + (f"@{revision}" if revision else "")
    where += "" if named_as_hub else " (no local folder of that name either)"
    try:
        validate_repo_id(repo_id)
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=_MODEL_FILES, cache_dir=cache_dir))
    except HFValidationError as error:
        raise ModelLoadError(f"Invalid Hub repo id {repo_id!r}: {error}") from error
    except GatedRepoError as error:
        raise ModelLoadError(f"{where} is gated: accept its terms on the Hub and log in (`hf auth login`)") from error
    except RepositoryNotFoundError as error:
        raise ModelLoadError(
            f"{where} not found on the Hub (if it is private, log in: `hf auth login` or HF_TOKEN)", NOT_PUBLISHED
        ) from error
    except RevisionNotFoundError as error:
        raise ModelLoadError(f"{where}: the Hub repo has no such revision", NOT_PUBLISHED) from error
    except LocalEntryNotFoundError as error:  # the Hub could not be asked, and the cache has no copy
        cause = error.__cause__  # why the Hub could not be asked
        if isinstance(cause, HfHubHTTPError | httpx2.TimeoutException):
            answer = f"HTTP {cause.response.status_code}" if isinstance(cause, HfHubHTTPError) else "no answer in time"
            raise ModelLoadError(
                f"The Hub gave {answer} for {where}, and it is not cached: try again later", NETWORK_ERROR
            ) from error
        if constants.HF_HUB_OFFLINE:
            raise ModelLoadError(
                f"HF_HUB_OFFLINE=1 and no cached copy of {where}: "
                "load it once online, or unset HF_HUB_OFFLINE, or pass a local model folder",
                OFFLINE,
            ) from error
        raise ModelLoadError(
            f"Could not reach the Hugging Face Hub for {where}, and it is not cached: check the network connection",
            OFFLINE,
        ) from error
    except HfHubHTTPError as error:
        status = error.response.status_code
        if status == 401:
            raise ModelLoadError(f"The Hub refused the token for {where} (HTTP 401): run `hf auth login`") from error
        raise ModelLoadError(f"The Hub answered HTTP {status} for {where}: try again later", NETWORK_ERROR) from error
    except httpx2.TransportError as error:
        raise ModelLoadError(
            f"the download of {where} failed ({type(error).__name__}): try again later", NETWORK_ERROR
        ) from error


def _label_names(config: dict, model: torch.nn.Module) -> list[str]:
    names = config.get("label_names") or {}
    if isinstance(names, list):
        names = dict(enumerate(names))
    # timm also allows {index: name} (JSON turns the keys into strings) when some indices have no name.
    names = {int(index): name for index, name in names.items()}
    return [names.get(index, str(index)) for index in range(model.num_classes)]


def read_calibration(folder: Path) -> dict | None:
    """The folder's calibration.json (temperature, and what fitting it measured), if it has one."""
    file = folder / CALIBRATION_NAME
    return json.loads(file.read_text()) if file.is_file() else None


def read_shift_protocol(folder: Path) -> dict | None:
    """What the model's cross-validation measured under the shift protocol, if its folder records it."""
    file = folder / SHIFT_PROTOCOL_NAME
    return json.loads(file.read_text()) if file.is_file() else None


def _temperature(folder: Path) -> float | None:
    calibration = read_calibration(folder)
    return float(calibration["temperature"]) if calibration else None
