"""Training recipes. Every field can be overridden on the command line and is recorded in the run folder."""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields, replace

from cnmc.backbones import DEFAULT_CROP_PCT
from training.transforms import Augmentation


@dataclass(frozen=True)
class Recipe:
    epochs: int
    batch_size: int
    optimizer: str  # "adam" or "adamw"
    lr: float
    weight_decay: float
    warmup_epochs: float  # linear warm-up, then cosine annealing to zero
    drop_rate: float
    label_smoothing: float
    class_weights: bool  # weight the loss by inverse class frequency (ALL outnumbers HEM ~2:1)
    ema_decay: float  # 0 turns the weight EMA off; the EMA weights are evaluated and saved when on
    crop_pct: float  # fraction of the 450 px field kept by the centre crop, saved with the model
    augmentation: Augmentation = field(default_factory=Augmentation)
    # Start the classifier head at zero: timm sizes its random init by the 2 outputs, so a from-scratch model
    # starts with logits of magnitude ~5 and spends its first epochs shrinking them. Off before the field existed.
    zero_head: bool = False
    # Mixup's Beta(alpha, alpha); 0 turns it off. The loss's label smoothing and class weights apply to the mix.
    mixup: float = 0.0
    # CutMix's Beta(alpha, alpha): a box of the batch's mirror image pasted in; 0 turns it off. With mixup on
    # too, each batch uses one of the two.
    cutmix: float = 0.0
    # Bring each cell to one size, place and stain intensity before the model sees it
    # (cnmc.preprocessing.CellNormalization, saved with the model), so neither the batch's cell size nor its stain
    # can carry the verdict (training.shifts). Off before the field existed.
    cell_normalization: bool = False


PRESETS: dict[str, Recipe] = {
    # The thesis: Adam lr 0.01, cosine annealing, batch 32, dropout 0.25, flips, rotations and a centre-crop
    # zoom with probability 0.7, plain cross-entropy, the whole field resized to the input size.
    "thesis": Recipe(
        epochs=30,
        batch_size=32,
        optimizer="adam",
        lr=0.01,
        weight_decay=0.0,
        warmup_epochs=0,
        drop_rate=0.25,
        label_smoothing=0.0,
        class_weights=False,
        ema_decay=0.0,
        crop_pct=1.0,
        augmentation=Augmentation(hflip=0.5, vflip=0.5, rotation=90, zoom=0.2, zoom_prob=0.7),
    ),
    # Our recipe for training from scratch: AdamW, warm-up, label smoothing, class weights, stain/colour
    # jitter, full rotations, EMA weights, a fixed centre crop that keeps the cell's size, the head started at
    # zero (results/cpu-mobilenetv2-zerohead-cv3/: it ranks cells of the same size better), mixup, which
    # stopped 20 epochs from overfitting one fold (results/cpu-mobilenetv2-mixup-cv3/), and half the colour jitter
    # with no hue shift, better than 0.2/0.02 over three seeds (results/cpu-mobilenetv2-mildcolour-cv3/).
    "best": Recipe(
        epochs=20,
        batch_size=64,
        optimizer="adamw",
        lr=2e-3,
        weight_decay=0.05,
        warmup_epochs=2,
        drop_rate=0.25,
        label_smoothing=0.1,
        class_weights=True,
        ema_decay=0.99,  # 0.998 lagged for ~6 epochs at 75 steps/epoch; 0.99 tracked well (results/)
        crop_pct=DEFAULT_CROP_PCT,
        augmentation=Augmentation(
            hflip=0.5, vflip=0.5, rotation=180, zoom=0.1, zoom_prob=0.5, color_jitter=0.1, hue=0.0
        ),
        zero_head=True,
        mixup=0.4,
    ),
}
# The best preset on cells brought to one size and stain intensity: what the shift protocol asks of a recipe.
PRESETS["cellnorm"] = replace(PRESETS["best"], cell_normalization=True)

RECIPE_FIELDS = [f.name for f in fields(Recipe) if f.name != "augmentation"]
AUGMENTATION_FIELDS = [f.name for f in fields(Augmentation)]
# What a run recorded before a recipe field existed trained with: the field's default.
_PREDATED = {f.name: f.default for f in fields(Recipe) if f.default is not MISSING}


def build_recipe(preset: str, overrides: dict) -> Recipe:
    """The preset with every non-None override applied (recipe and augmentation fields alike)."""
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    base = PRESETS[preset]
    recipe_changes = {k: v for k, v in overrides.items() if k in RECIPE_FIELDS and v is not None}
    aug_changes = {k: v for k, v in overrides.items() if k in AUGMENTATION_FIELDS and v is not None}
    return replace(base, augmentation=replace(base.augmentation, **aug_changes), **recipe_changes)


def as_ran(run_config: dict) -> dict:
    """A run's ``run_config.json`` with every recipe field it predates filled in as the run trained with it.

    A file written before a field existed trained with the field's default, whatever its preset says now: a run
    without ``zero_head`` kept timm's head init.
    """
    return {k: v for k, v in _PREDATED.items() if k not in run_config} | run_config


def overrides_of(run_config: dict) -> dict:
    """The recipe fields of a run's ``run_config.json`` that differ from its preset, e.g. ``{"epochs": 12}``."""
    ran = as_ran(run_config)
    preset = asdict(PRESETS[ran["preset"]])
    changed = {k: ran[k] for k in RECIPE_FIELDS if ran.get(k, preset[k]) != preset[k]}
    augmentation = ran.get("augmentation", {})
    return changed | {k: v for k, v in augmentation.items() if v != preset["augmentation"].get(k)}
