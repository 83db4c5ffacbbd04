"""Write a trained model as a timm Hub folder that timm, transformers and the app all load.

Training calls :func:`export_model` instead of ``timm.models.save_for_hf``; :mod:`hub.push` applies
:func:`transformers_compatible` to folders written before that.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Iterable
from pathlib import Path

import timm
import torch

from cnmc.cells import CLASS_NAMES
from cnmc.preprocessing import CellNormalization

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CALIBRATION_NAME = "calibration.json"
# What the model's cross-validation measured under the shift protocol (training.shifts), for the app's caveat.
SHIFT_PROTOCOL_NAME = "shift_protocol.json"
# config.json's list of the patients the weights were trained on, so that evaluation can flag them wherever the
# model goes (the Hub included); timm and transformers ignore it.
TRAIN_PATIENTS_KEY = "train_patients"
# config.json's cell normalisation (cnmc.preprocessing.CellNormalization), applied before timm's eval transform.
CELL_NORMALIZATION_KEY = "cell_normalization"


def transformers_compatible(config: dict) -> dict:
    """A copy of a timm ``config.json`` that transformers' ``TimmWrapperForImageClassification`` also builds.

    timm (1.0.31 here) records the construction arguments in ``model_args``, ``num_classes`` included. transformers
    5.x calls ``timm.create_model(arch, num_classes=config.num_labels, **config.model_args)``, so the duplicate
    ``num_classes`` raises a TypeError. timm itself takes ``num_classes`` from the root of config.json (and
    transformers takes ``num_labels`` from there too), so dropping the copy in ``model_args`` changes nothing
    for timm. transformers derives id2label/label2id from ``label_names`` itself; nothing else is needed.
    """
    config = json.loads(json.dumps(config))
    model_args = config.get("model_args") or {}
    num_classes = model_args.pop("num_classes", None)
    if num_classes is not None and num_classes != config.get("num_classes"):
        raise ValueError(
            f"config.json disagrees on num_classes: {num_classes} in model_args, root has {config.get('num_classes')}"
        )
    if "model_args" in config and not model_args:
        del config["model_args"]
    return config


def export_model(
    model: torch.nn.Module,
    folder: str | Path,
    *,
    label_names: list[str] | None = None,
    train_patients: Iterable[str] | None = None,
    cell_normalization: CellNormalization | None = None,
    extra_files: Iterable[str | Path] = (),
) -> Path:
    """Save ``model`` to ``folder`` as ``config.json`` + ``model.safetensors``; copy ``extra_files`` beside them.

    ``label_names`` defaults to the model's own (``cnmc.backbones.create_model`` sets them), else C-NMC's.
    ``train_patients`` go into config.json (:data:`TRAIN_PATIENTS_KEY`), and so does ``cell_normalization``
    (:data:`CELL_NORMALIZATION_KEY`), the preprocessing that runs before timm's own. ``extra_files`` is for files
    that travel with the weights, such as ``calibration.json``.
    """
    folder = Path(folder)
    names = list(label_names or model.pretrained_cfg.get("label_names") or CLASS_NAMES)
    if any(not t.is_contiguous() for t in model.state_dict().values()):
        # GPU training runs channels_last; safetensors stores only contiguous tensors, in the standard layout.
        model = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    timm.models.save_for_hf(model, folder, model_config={"label_names": names}, safe_serialization=True)
    config_path = folder / CONFIG_NAME
    config = json.loads(config_path.read_text())
    if train_patients is not None:
        config[TRAIN_PATIENTS_KEY] = sorted(train_patients)
    if cell_normalization is not None:
        config[CELL_NORMALIZATION_KEY] = cell_normalization.to_config()
    config_path.write_text(json.dumps(transformers_compatible(config), indent=2) + "\n")
    for file in map(Path, extra_files):
        shutil.copy2(file, folder / file.name)
    return folder
