"""The models the app offers: the one place that says where each of the four backbones is found.

Each comes from its shipped folder, ``models/NAME``, when that holds weights; else from its Hub repo, pinned to the
revision that :mod:`hub.publish` recorded in :data:`REVISIONS_FILE`. A repo without a recorded revision is not
published yet and is not loaded at all: whoever owned that name on the Hub would otherwise have their weights
served. The organisation is :data:`DEFAULT_ORG`; set ``CNMC_HUB_ORG`` to publish and load under another.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from cnmc.backbones import BACKBONES
from cnmc.export import CONFIG_NAME, WEIGHTS_NAME
from cnmc.load import HUB_PREFIX, NOT_PUBLISHED, LoadedModel, ModelLoadError, load_model

DEFAULT_ORG = "cnmc-all-detector"
ORG_SETTING = "CNMC_HUB_ORG"
HUB_ORG = os.environ.get(ORG_SETTING) or DEFAULT_ORG
ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = ROOT / "models"  # models/NAME: each model's folder, with its card; with its weights when shipped
# Hub repo id -> the commit the app loads it at; hub.publish records each repo's upload here.
REVISIONS_FILE = Path(__file__).with_name("hub_revisions.json")


def repo_id(thesis_name: str, org: str = HUB_ORG) -> str:
    return f"{org}/cnmc-{thesis_name}"


def read_revisions(file: Path = REVISIONS_FILE) -> dict[str, str]:
    return json.loads(file.read_text()) if file.is_file() else {}


@dataclass(frozen=True)
class RegisteredModel:
    display_name: str
    timm_name: str
    local_dir: Path | None  # models/NAME
    repo_id: str
    revision: str | None = None  # the Hub commit it is pinned to; None until published

    @property
    def shipped(self) -> bool:
        folder = self.local_dir
        return folder is not None and (folder / CONFIG_NAME).is_file() and (folder / WEIGHTS_NAME).is_file()

    @property
    def source(self) -> str | None:
        """What to give ``cnmc.load.load_model``: the shipped folder, else the pinned Hub repo; None if neither."""
        if self.shipped:
            return str(self.local_dir)
        return f"{HUB_PREFIX}{self.repo_id}@{self.revision}" if self.revision else None

    @property
    def origin(self) -> str:
        """Where it comes from, as the app and its log say it: the shipped folder or the Hub id at its revision."""
        if self.shipped:
            return str(self.local_dir.relative_to(ROOT)) if self.local_dir.is_relative_to(ROOT) else str(self.local_dir)
        return f"{self.repo_id}@{self.revision}" if self.revision else self.repo_id

    def load(self, device: str = "cpu") -> LoadedModel:
        if self.source is None:
            shipped = f"{self.local_dir.name}/ holds no weights and " if self.local_dir is not None else ""
            raise ModelLoadError(
                f"{shipped}no Hub revision of {self.repo_id} is recorded "
                f"(serving/{REVISIONS_FILE.name}; `python -m hub.publish` records it)",
                NOT_PUBLISHED,
            )
        return load_model(self.source, device)


def registered_models(org: str = HUB_ORG, revisions: dict[str, str] | None = None) -> list[RegisteredModel]:
    """The four backbones under ``org``, each pinned to its recorded revision (:data:`REVISIONS_FILE`) if any."""
    revisions = read_revisions() if revisions is None else revisions
    return [
        RegisteredModel(
            b.display_name,
            b.timm_name,
            MODELS_DIR / b.thesis_name,
            repo_id(b.thesis_name, org),
            revisions.get(repo_id(b.thesis_name, org)),
        )
        for b in BACKBONES
    ]


MODELS = registered_models()


def registered_model(display_name: str) -> RegisteredModel:
    for model in MODELS:
        if model.display_name.lower() == display_name.lower():
            return model
    raise KeyError(f"No model {display_name!r}; the app has {', '.join(m.display_name for m in MODELS)}")
