"""The four models as models/*/config.json configures them, for the speed benchmarks.

A folder with weights loads them; the others are built by timm from their config (architecture, its arguments,
input size, transform) with random weights, since speed doesn't depend on weight values.
"""

from __future__ import annotations

import json
from pathlib import Path

import timm

from cnmc.export import CELL_NORMALIZATION_KEY, CONFIG_NAME
from cnmc.load import LoadedModel, load_model
from cnmc.preprocessing import CellNormalization, eval_transform
from serving.registry import RegisteredModel

# Real cells: what each runtime's outputs are checked against eager fp32 on.
CELLS = Path(__file__).resolve().parents[1] / "tests/fixtures/cnmc/C-NMC_Leukemia"


def configured(entry: RegisteredModel) -> tuple[LoadedModel, str]:
    """The model as its folder's config.json builds it, and where its weights came from."""
    if entry.shipped:
        return load_model(str(entry.local_dir)), "shipped"
    config = json.loads((entry.local_dir / CONFIG_NAME).read_text())
    model = timm.create_model(f"local-dir:{entry.local_dir}", pretrained=False).eval()
    transform = eval_transform(model, CellNormalization.from_config(config.get(CELL_NORMALIZATION_KEY)))
    return LoadedModel(model, transform, config["label_names"], entry.local_dir, None), "random (not shipped)"
