"""The models the app offers: the one place that says where each of the four backbones is found.

The Hub organisation defaults to :data:`DEFAULT_ORG`; set ``CNMC_HUB_ORG`` to publish and load under another.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cnmc.backbones import BACKBONES
from cnmc.export import CONFIG_NAME, WEIGHTS_NAME

DEFAULT_ORG = "cnmc-all-detector"
HUB_ORG = os.environ.get("CNMC_HUB_ORG", DEFAULT_ORG)
ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = ROOT / "models"  # models/NAME: each model's folder, with its card; with its weights when shipped


@dataclass(frozen=True)
class RegisteredModel:
    display_name: str
    timm_name: str
    local_dir: Path
    repo_id: str

    @property
    def source(self) -> str:
        """What to give ``cnmc.load.load_model``: the shipped folder when it is there, else the Hub repo."""
        if (self.local_dir / CONFIG_NAME).is_file() and (self.local_dir / WEIGHTS_NAME).is_file():
            return str(self.local_dir)
        return self.repo_id


MODELS = [
    RegisteredModel(b.display_name, b.timm_name, MODELS_DIR / b.thesis_name, f"{HUB_ORG}/cnmc-{b.thesis_name}")
    for b in BACKBONES
]


def registered_model(display_name: str) -> RegisteredModel:
    for model in MODELS:
        if model.display_name.lower() == display_name.lower():
            return model
    raise KeyError(f"No model {display_name!r}; the app has {', '.join(m.display_name for m in MODELS)}")
