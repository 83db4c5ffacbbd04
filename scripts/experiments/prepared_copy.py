"""Write a prepared copy of C-NMC whose every image has gone through one function (the experiments' altered data)."""

import json
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from training.data import PREPARED_MARKER, load_prepared


def write_mapped_copy(source: str, target: str, change: Callable[[Image.Image], Image.Image], note: dict) -> None:
    """Every split of ``source`` with ``change`` applied to each image, as a prepared copy in ``target``.

    ``note`` is recorded in the copy's marker file, so a run on the copy says what was done to its data.
    """
    out = Path(target)
    out.mkdir(parents=True, exist_ok=True)
    meta = json.loads((Path(source) / PREPARED_MARKER).read_text())
    for name, split in load_prepared(source).items():
        changed = split.map(lambda example: {"image": change(example["image"])}, desc=f"Writing {name}")
        changed.to_parquet(str(out / meta["splits"][name]["file"]))
    (out / PREPARED_MARKER).write_text(json.dumps(meta | note, indent=2) + "\n")
