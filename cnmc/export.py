"""Write a trained model as a timm Hub folder that timm, transformers and the app all load.

Training calls :func:`export_model` instead of ``timm.models.save_for_hf``; :mod:`hub.push` applies
:func:`transformers_compatible` to folders written before that.
"""

from __future__ import annotations

import copy
import json
import shutil
import warnings
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
# config.json's range of cell size and stain among the training cells (cnmc.training_range), for the app's warning.
TRAINING_RANGE_KEY = "training_range"
# model.safetensors stores the weights in half precision: half the size, and the probabilities of the shipped
# model move by at most 0.001 on the fixture cells (tests/test_model_cards.py). timm casts them back on loading.
STORED_DTYPE = torch.float16
# config.json's precision to compute in (transformers' name for it); timm ignores it.
DTYPE_KEY = "dtype"
# pretrained_cfg's tag names the weights (timm's ARCHITECTURE.TAG): those trained here, not the ImageNet weights
# that the architecture's default tag names. From scratch: "cnmc"; fine-tuned from ImageNet weights TAG:
# "TAG_ft_cnmc", as timm names its fine-tunes (augreg_in21k_ft_in1k).
TRAINED_TAG = "cnmc"
_FINE_TUNED = f"_ft_{TRAINED_TAG}"
# What label_names, and so transformers' id2label and the Hub's widget, call each class of cnmc.cells.CLASS_NAMES:
# the dataset's folder names alone, `hem` and `all`, read as plain words.
LABEL_NAMES = {"hem": "HEM (healthy)", "all": "ALL (leukaemia)"}


def _fits(model: torch.nn.Module, dtype: torch.dtype) -> bool:
    """Whether every floating-point weight of ``model`` stays finite in ``dtype``."""
    tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
    return all(torch.isfinite(t.to(dtype)).all() or not torch.isfinite(t).all() for t in tensors)


def weights_tag(imagenet_tag: str | None, *, pretrained: bool) -> str:
    """The tag of weights trained here, from the tag of the ImageNet weights that training started from."""
    return f"{imagenet_tag}{_FINE_TUNED}" if pretrained and imagenet_tag else TRAINED_TAG


def imagenet_tag(tag: str | None) -> str | None:
    """The tag of the ImageNet weights that weights tagged ``tag`` started from; None if trained from scratch.

    Folders exported before :func:`weights_tag` carry the ImageNet tag itself, which is returned as it is.
    """
    if tag == TRAINED_TAG:
        return None
    return tag.removesuffix(_FINE_TUNED) if tag else None


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
    training_range: dict | None = None,
    extra_files: Iterable[str | Path] = (),
    dtype: torch.dtype | None = STORED_DTYPE,
) -> Path:
    """Save ``model`` to ``folder`` as ``config.json`` + ``model.safetensors``; copy ``extra_files`` beside them.

    ``label_names`` defaults to :data:`LABEL_NAMES` of the model's own classes (``cnmc.backbones.create_model`` sets
    them), else of C-NMC's.
    ``train_patients`` go into config.json (:data:`TRAIN_PATIENTS_KEY`), and so does ``cell_normalization``
    (:data:`CELL_NORMALIZATION_KEY`), the preprocessing that runs before timm's own, and ``training_range``
    (:data:`TRAINING_RANGE_KEY`, from :func:`cnmc.training_range.measure_folder`). ``extra_files`` is for files
    that travel with the weights, such as ``calibration.json``. ``dtype`` is the precision the floating-point
    weights are stored in (None: the model's own); loaders compute in the model's own precision, which config.json
    records as ``dtype``.
    """
    folder = Path(folder)
    computed = next((t.dtype for t in model.state_dict().values() if t.is_floating_point()), torch.float32)
    if dtype is not None and not _fits(model, dtype):
        warnings.warn(f"Weights beyond the range of {dtype}: stored in {computed} instead", stacklevel=2)
        dtype = None
    names = list(label_names or (LABEL_NAMES.get(n, n) for n in model.pretrained_cfg.get("label_names") or CLASS_NAMES))
    if dtype is not None or any(not t.is_contiguous() for t in model.state_dict().values()):
        # A copy: GPU training runs channels_last, and safetensors stores only contiguous tensors, in the standard
        # layout; and stored in half precision, the weights are cast back to the model's when loaded.
        model = copy.deepcopy(model).to(dtype=dtype, memory_format=torch.contiguous_format)
    timm.models.save_for_hf(model, folder, model_config={"label_names": names}, safe_serialization=True)
    config_path = folder / CONFIG_NAME
    config = json.loads(config_path.read_text())
    # transformers' from_pretrained would otherwise compute in the precision the weights are stored in.
    config[DTYPE_KEY] = str(computed).removeprefix("torch.")
    if train_patients is not None:
        config[TRAIN_PATIENTS_KEY] = sorted(train_patients)
    if cell_normalization is not None:
        config[CELL_NORMALIZATION_KEY] = cell_normalization.to_config()
    if training_range is not None:
        config[TRAINING_RANGE_KEY] = training_range
    config_path.write_text(json.dumps(transformers_compatible(config), indent=2) + "\n")
    for file in map(Path, extra_files):
        shutil.copy2(file, folder / file.name)
    return folder
