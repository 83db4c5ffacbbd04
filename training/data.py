"""C-NMC 2019 as a Hugging Face ``DatasetDict``: discovery, validation, summary and a compact prepared copy.

Layouts understood (``root`` may be the unpacked folder or the folder above it):

Kaggle::

    C-NMC_Leukemia/training_data/fold_{0,1,2}/{all,hem}/UID_<patient>_<image>_<cell>_<all|hem>.bmp
    C-NMC_Leukemia/validation_data/C-NMC_test_prelim_phase_data/<n>.bmp
    C-NMC_Leukemia/validation_data/C-NMC_test_prelim_phase_data_labels.csv
    C-NMC_Leukemia/testing_data/C-NMC_test_final_phase_data/<n>.bmp

TCIA::

    C-NMC_training_data/fold_{0,1,2}/{all,hem}/...
    C-NMC_test_prelim_phase_data/C-NMC_test_prelim_phase_data/<n>.bmp (+ ..._labels.csv beside it or above)
    C-NMC_test_final_phase_data/C-NMC_test_final_phase_data/<n>.bmp

Usage::

    python -m training.data summary --data-dir PATH
    python -m training.data prepare --data-dir PATH --output DIR
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import re
import sys
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import datasets
from PIL import Image
from tqdm.auto import tqdm

from cnmc.cells import CLASS_NAMES, UNKNOWN_LABEL, parse_cell_name

logger = logging.getLogger(__name__)

SPLIT_ORDER = ["fold_0", "fold_1", "fold_2", "prelim_test", "final_test"]
FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "label": datasets.ClassLabel(names=CLASS_NAMES),
        "patient_id": datasets.Value("string"),
        "fold": datasets.Value("string"),
        "path": datasets.Value("string"),
    }
)
PREPARED_MARKER = "cnmc_prepared.json"
PRELIM_DIR = "C-NMC_test_prelim_phase_data"
PRELIM_LABELS = "C-NMC_test_prelim_phase_data_labels.csv"
FINAL_DIR = "C-NMC_test_final_phase_data"
EXPECTED_LAYOUT = """Expected one of these C-NMC 2019 layouts under the data folder:
  Kaggle: C-NMC_Leukemia/training_data/fold_<k>/{all,hem}/UID_<patient>_<image>_<cell>_<all|hem>.<ext>
          C-NMC_Leukemia/validation_data/C-NMC_test_prelim_phase_data/<n>.bmp
            with C-NMC_Leukemia/validation_data/C-NMC_test_prelim_phase_data_labels.csv
          C-NMC_Leukemia/testing_data/C-NMC_test_final_phase_data/<n>.bmp
  TCIA:   C-NMC_training_data/fold_<k>/{all,hem}/...
          C-NMC_test_prelim_phase_data/C-NMC_test_prelim_phase_data/<n>.bmp (+ labels CSV)
          C-NMC_test_final_phase_data/C-NMC_test_final_phase_data/<n>.bmp
  or a prepared copy written by `python -m training.data prepare` (holds cnmc_prepared.json)."""

# Operating-system clutter that is never data; anything else in a data folder must be a valid cell image.
_IGNORED_FILES = {"thumbs.db", "desktop.ini"}


class CNMCDataError(ValueError):
    """The data folder is missing, empty, or holds files that can't be used as labelled cells."""


@dataclass(frozen=True)
class BadFile:
    path: str
    reason: str


@dataclass
class _Record:
    path: str
    label: int
    patient_id: str | None
    fold: str


def _listing(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name.lower() not in _IGNORED_FILES
    )


def _check_image(path: str) -> str | None:
    """Decode the whole file: a truncated image only fails when its pixels are read."""
    try:
        with Image.open(path) as image:
            image.load()
            if min(image.size) < 2:
                return f"image is only {image.size[0]}x{image.size[1]} pixels"
    except Exception as error:  # PIL raises many types for bad files
        return f"unreadable image ({type(error).__name__}: {error})"
    return None


def _check_images(paths: list[str], progress: bool) -> list[BadFile]:
    with ThreadPoolExecutor() as pool:  # PIL decoders release the GIL
        reasons = list(
            tqdm(
                pool.map(_check_image, paths, chunksize=64),
                total=len(paths),
                desc="Checking images",
                unit="img",
                disable=not progress,
            )
        )
    return [BadFile(p, r) for p, r in zip(paths, reasons, strict=True) if r]


def _find_dir(root: Path, candidates: Iterable[str]) -> Path | None:
    for candidate in candidates:
        if (root / candidate).is_dir():
            return root / candidate
    return None


def _scan_fold(fold_dir: Path, bad: list[BadFile]) -> list[_Record]:
    records = []
    for class_name in CLASS_NAMES:
        class_dir = fold_dir / class_name
        if not class_dir.is_dir():
            bad.append(BadFile(str(class_dir), "class folder is missing"))
            continue
        files = _listing(class_dir)
        if not files:
            bad.append(BadFile(str(class_dir), "class folder is empty"))
        for path in files:
            try:
                patient_id, label = parse_cell_name(path.name)
            except ValueError as error:
                bad.append(BadFile(str(path), str(error)))
                continue
            if CLASS_NAMES[label] != class_name:
                bad.append(BadFile(str(path), f"suffix says '{CLASS_NAMES[label]}' but the file is in {class_name}/"))
                continue
            records.append(_Record(str(path), label, patient_id, fold_dir.name))
    return records


def _scan_prelim(image_dir: Path, labels_csv: Path | None, bad: list[BadFile]) -> list[_Record]:
    files = _listing(image_dir)
    if not files:
        bad.append(BadFile(str(image_dir), "folder is empty"))
        return []
    if labels_csv is None:
        bad.append(BadFile(str(image_dir / PRELIM_LABELS), "labels CSV is missing"))
        return []
    rows: dict[str, tuple[str, int]] = {}
    with labels_csv.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"Patient_ID", "new_names", "labels"} - set(reader.fieldnames or [])
        if missing:
            bad.append(BadFile(str(labels_csv), f"missing columns {sorted(missing)}"))
            return []
        for line, row in enumerate(reader, start=2):
            where = f"{labels_csv}:{line}"
            try:
                patient_id, name_label = parse_cell_name(row["Patient_ID"])
                label = int(row["labels"])
            except ValueError as error:
                bad.append(BadFile(where, str(error)))
                continue
            if label not in (0, 1):
                bad.append(BadFile(where, f"label {label} is neither 1 (ALL) nor 0 (HEM)"))
            elif label != name_label:
                bad.append(BadFile(where, f"label {label} contradicts the name {row['Patient_ID']}"))
            else:
                rows[row["new_names"].strip()] = (patient_id, label)
    records = []
    for path in files:
        if path.name not in rows:
            bad.append(BadFile(str(path), f"no row in {labels_csv.name}"))
            continue
        patient_id, label = rows.pop(path.name)
        records.append(_Record(str(path), label, patient_id, "prelim_test"))
    bad.extend(BadFile(f"{labels_csv} ({name})", "listed in the CSV but the image is missing") for name in rows)
    return records


def _scan_unlabelled(image_dir: Path, bad: list[BadFile]) -> list[_Record]:
    files = _listing(image_dir)
    if not files:
        bad.append(BadFile(str(image_dir), "folder is empty"))
    return [_Record(str(p), UNKNOWN_LABEL, None, "final_test") for p in files]


def discover(root: str | Path) -> tuple[dict[str, list[_Record]], list[BadFile]]:
    """Find every part of the release under ``root``; return its records and every problem found."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise CNMCDataError(f"Data folder not found: {root}\n{EXPECTED_LAYOUT}")
    if (root / "C-NMC_Leukemia").is_dir():
        root = root / "C-NMC_Leukemia"
    bad: list[BadFile] = []
    parts: dict[str, list[_Record]] = {}

    training = _find_dir(root, ["training_data", "C-NMC_training_data"])
    if training is not None:
        fold_dirs = sorted(p for p in training.iterdir() if p.is_dir() and re.fullmatch(r"fold_\d+", p.name))
        if not fold_dirs:
            bad.append(BadFile(str(training), "holds no fold_<k> folders"))
        for fold_dir in fold_dirs:
            parts[fold_dir.name] = _scan_fold(fold_dir, bad)

    prelim = _find_dir(root, [f"validation_data/{PRELIM_DIR}", f"{PRELIM_DIR}/{PRELIM_DIR}", PRELIM_DIR])
    if prelim is not None:
        csvs = [prelim.parent / PRELIM_LABELS, prelim.parent.parent / PRELIM_LABELS, prelim / PRELIM_LABELS]
        parts["prelim_test"] = _scan_prelim(prelim, next((c for c in csvs if c.is_file()), None), bad)

    final = _find_dir(root, [f"testing_data/{FINAL_DIR}", f"{FINAL_DIR}/{FINAL_DIR}", FINAL_DIR])
    if final is not None:
        parts["final_test"] = _scan_unlabelled(final, bad)

    if not parts:
        raise CNMCDataError(f"No C-NMC data found in {root}\n{EXPECTED_LAYOUT}")
    return parts, bad


def _raise_or_report(bad: list[BadFile], skip_bad: bool, report_path: str | Path | None) -> None:
    if not bad:
        return
    if not skip_bad:
        listed = "\n".join(f"  {b.path}: {b.reason}" for b in bad)
        raise CNMCDataError(
            f"{len(bad)} problem(s) in the C-NMC data:\n{listed}\n{EXPECTED_LAYOUT}\n"
            "Fix or remove these files, or pass --skip-bad to skip them and write a report."
        )
    report = Path(report_path or "cnmc_skipped_files.csv")
    report.parent.mkdir(parents=True, exist_ok=True)
    with report.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "reason"])
        writer.writerows((b.path, b.reason) for b in bad)
    logger.warning("Skipped %d problem file(s); the list is in %s", len(bad), report)


def load_cnmc(
    root: str | Path,
    *,
    skip_bad: bool = False,
    report_path: str | Path | None = None,
    verify: bool = True,
    progress: bool = True,
) -> datasets.DatasetDict:
    """Load a C-NMC download (or a prepared copy) as a DatasetDict with one split per part present.

    Columns: ``image`` (decoded lazily), ``label`` (ClassLabel ``["hem", "all"]``, -1 if unknown),
    ``patient_id``, ``fold`` and ``path``. Problems raise :class:`CNMCDataError` naming every offending
    path, unless ``skip_bad`` is set: then they are written to ``report_path`` and left out.
    """
    if (Path(root) / PREPARED_MARKER).is_file():
        return load_prepared(root)
    parts, bad = discover(root)
    if verify:
        all_paths = [r.path for records in parts.values() for r in records]
        bad += _check_images(all_paths, progress)
    _raise_or_report(bad, skip_bad, report_path)
    bad_paths = {b.path for b in bad}
    splits = {}
    for name in sorted(parts, key=_split_key):
        records = [r for r in parts[name] if r.path not in bad_paths]
        if not records and skip_bad:  # its problems are in the report; the other splits still load
            logger.warning("Split %s has no usable images left, so it is left out", name)
            continue
        if not records:
            raise CNMCDataError(f"Split {name} has no usable images left.\n{EXPECTED_LAYOUT}")
        columns = {
            "image": [r.path for r in records],
            "label": [r.label for r in records],
            "patient_id": [r.patient_id for r in records],
            "fold": [r.fold for r in records],
            "path": [r.path for r in records],
        }
        splits[name] = datasets.Dataset.from_dict(columns, features=FEATURES)
    if not splits:
        raise CNMCDataError(f"No split of {root} has usable images left.\n{EXPECTED_LAYOUT}")
    return datasets.DatasetDict(splits)


def _split_key(name: str) -> tuple[int, str]:
    return (SPLIT_ORDER.index(name) if name in SPLIT_ORDER else len(SPLIT_ORDER), name)


def summarize(dataset_dict: datasets.DatasetDict) -> list[dict]:
    """Cells and patients per class for each split."""
    rows = []
    for name, split in dataset_dict.items():
        labels, patients = split["label"], split["patient_id"]
        row = {"split": name}
        for index, class_name in enumerate(CLASS_NAMES):
            chosen = [p for label, p in zip(labels, patients, strict=True) if label == index]
            row[f"{class_name}_cells"] = len(chosen)
            row[f"{class_name}_patients"] = len(set(chosen))
        row["unlabelled_cells"] = sum(1 for label in labels if label == UNKNOWN_LABEL)
        rows.append(row)
    return rows


def format_summary(rows: list[dict]) -> str:
    header = ["split", "ALL cells", "ALL patients", "HEM cells", "HEM patients", "unlabelled"]
    keys = ["all_cells", "all_patients", "hem_cells", "hem_patients", "unlabelled_cells"]
    table = [header] + [[r["split"]] + [f"{r[k]:,}" for k in keys] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = []
    for line in table:
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))]
        lines.append("  ".join(cells))
    return "\n".join(lines)


# --- Prepared copy ------------------------------------------------------------------------------------


def _shrink(example: dict, size: int, image_format: str, quality: int, root: str | None) -> dict:
    """Resize the whole field (no crop), so every model's own resize/crop still applies unchanged."""
    image = example["image"].convert("RGB")
    if max(image.size) > size:
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, quality=quality)
    shrunk = {"image": {"bytes": buffer.getvalue(), "path": None}}
    if root is not None:  # name the cell inside the download, not by where this machine keeps it
        path = Path(example["path"]).resolve()
        if path.is_relative_to(root):
            shrunk["path"] = path.relative_to(root).as_posix()
    return shrunk


def prepare(
    dataset_dict: datasets.DatasetDict,
    output: str | Path,
    *,
    size: int = 320,
    image_format: str = "WEBP",
    quality: int = 90,
    num_proc: int | None = None,
    root: str | Path | None = None,
) -> Path:
    """Write a compact copy: one parquet file per split of resized, re-encoded images, same columns.

    With ``root`` (the download's folder), paths under it are stored relative to it, so the copy and any
    predictions made from it name each cell the same way wherever they are used.
    """
    output = Path(output)
    root = str(Path(root).resolve()) if root is not None else None
    output.mkdir(parents=True, exist_ok=True)
    meta = {"size": size, "format": image_format, "quality": quality, "splits": {}}
    for name, split in dataset_dict.items():
        shrunk = split.map(
            _shrink,
            fn_kwargs={"size": size, "image_format": image_format, "quality": quality, "root": root},
            num_proc=num_proc,
            desc=f"Preparing {name}",
        )
        file = output / f"{name}.parquet"
        shrunk.to_parquet(str(file))
        meta["splits"][name] = {"file": file.name, "rows": len(shrunk), "bytes": file.stat().st_size}
    (output / PREPARED_MARKER).write_text(json.dumps(meta, indent=2) + "\n")
    return output


def load_prepared(root: str | Path) -> datasets.DatasetDict:
    """Load a copy written by :func:`prepare`."""
    root = Path(root)
    meta = json.loads((root / PREPARED_MARKER).read_text())
    splits = {}
    for name in sorted(meta["splits"], key=_split_key):
        file = root / meta["splits"][name]["file"]
        if not file.is_file():
            raise CNMCDataError(f"Prepared copy {root} lacks {file.name}; rerun `python -m training.data prepare`.")
        splits[name] = datasets.Dataset.from_parquet(str(file), features=FEATURES)
    return datasets.DatasetDict(splits)


# --- Command line -------------------------------------------------------------------------------------


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", required=True, help="unpacked C-NMC download, or a prepared copy")
    parser.add_argument("--skip-bad", action="store_true", help="skip bad files and write a report of them")
    parser.add_argument("--skip-report", default="cnmc_skipped_files.csv", help="where --skip-bad writes")
    parser.add_argument("--no-verify", action="store_true", help="don't decode every image up front")


def load_from_args(args: argparse.Namespace) -> datasets.DatasetDict:
    return load_cnmc(args.data_dir, skip_bad=args.skip_bad, report_path=args.skip_report, verify=not args.no_verify)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.data", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    summary = commands.add_parser("summary", help="cells and patients per class for each split")
    add_data_arguments(summary)
    prep = commands.add_parser("prepare", help="write a compact parquet copy for fast loading")
    add_data_arguments(prep)
    prep.add_argument("--output", required=True)
    prep.add_argument("--size", type=int, default=320, help="side of the stored square images (px)")
    prep.add_argument("--format", default="WEBP", choices=["WEBP", "JPEG", "PNG"])
    prep.add_argument("--quality", type=int, default=90)
    prep.add_argument("--num-proc", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        dataset_dict = load_from_args(args)
    except CNMCDataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.command == "summary":
        print(format_summary(summarize(dataset_dict)))
    else:
        out = prepare(
            dataset_dict,
            args.output,
            size=args.size,
            image_format=args.format,
            quality=args.quality,
            num_proc=args.num_proc,
            root=args.data_dir,
        )
        meta = json.loads((out / PREPARED_MARKER).read_text())
        total = sum(s["bytes"] for s in meta["splits"].values())
        print(f"Wrote {out}: {total / 2**20:.1f} MiB in {len(meta['splits'])} split(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
