"""Untrusted uploads -> RGB PIL images, or an :class:`ImageError` whose message the UI can show as is.

Nothing here writes to disk: zip members are read into memory, so a ``../`` name can never escape anywhere.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO, NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

FORMATS = {"BMP", "PNG", "JPEG", "TIFF", "WEBP"}
MAX_FILE_BYTES = 50 * 2**20
# C-NMC cells are 450 x 450. 2048 x 2048 leaves room for a larger scan and costs at most ~0.1 s to decode; the
# header is checked first, so a tiny 1-bit PNG claiming 6000 x 6000 is refused before any pixel is read.
MAX_PIXELS = 2048 * 2048
MIN_SIDE = 16  # the models resize to 224-299 px: below this there is no cell to see
MAX_ZIP_FILES = 1000
MAX_ZIP_BYTES = 1 * 2**30  # uncompressed, against zip bombs
# Mode -> what was done to it, shown to the user because it can change what the model sees.
_CONVERSIONS = {
    "L": "grayscale, copied to three channels",
    "LA": "grayscale with transparency: transparent pixels shown as black",
    "1": "black-and-white, copied to three channels",
    "P": "palette colours expanded",
    "PA": "palette colours expanded, transparent pixels shown as black",
    "RGBA": "transparent pixels shown as black, the C-NMC background",
    "CMYK": "converted from CMYK",
    "I;16": "16-bit, scaled to 8-bit",
    "I;16B": "16-bit, scaled to 8-bit",
    "I;16L": "16-bit, scaled to 8-bit",
    "I": "16/32-bit integer, scaled to 8-bit",
    "F": "floating point, clipped to 0-255",
}


class ImageError(ValueError):
    """An upload the app can't use; the message says why in words a user understands."""


class CheckedImage(NamedTuple):
    image: Image.Image  # RGB, fully decoded
    notes: list[str]  # conversions applied, for the UI


class BatchItem(NamedTuple):
    name: str
    image: CheckedImage | None
    error: str | None


Opener = Callable[[], IO[bytes]]


def load_image(source: str | Path | IO[bytes], *, name: str | None = None) -> CheckedImage:
    """Decode one image completely and convert it to RGB, refusing anything the models can't use."""
    label = name or (Path(source).name if isinstance(source, str | Path) else "the file")
    try:
        with Image.open(source) as image:  # PIL itself refuses bombs over 2 x Image.MAX_IMAGE_PIXELS
            _check_header(image, label)
            image.load()  # a truncated file only fails once its pixels are read
            return _to_rgb(image)
    except ImageError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageError(f"{label} is too large to decode safely ({error})") from error
    except UnidentifiedImageError as error:
        raise ImageError(f"{label} is not an image (use BMP, PNG, JPEG, TIFF or WebP)") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:  # what PIL raises for damaged files
        raise ImageError(f"{label} is corrupt or truncated ({type(error).__name__}: {error})") from error


def _check_header(image: Image.Image, label: str) -> None:
    """Refuse before decoding: the header alone gives the size, the format and the frame count."""
    if getattr(image, "n_frames", 1) > 1:
        raise ImageError(f"{label} has {image.n_frames} frames (animated or multi-page); send a single image")
    if image.format not in FORMATS:
        raise ImageError(f"{label} is a {image.format} file; use BMP, PNG, JPEG, TIFF or WebP")
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise ImageError(f"{label} is {width}x{height} pixels; the limit is {MAX_PIXELS:,} pixels")
    if min(width, height) < MIN_SIDE:
        raise ImageError(f"{label} is only {width}x{height} pixels; a cell image needs at least {MIN_SIDE} per side")


def _to_rgb(image: Image.Image) -> CheckedImage:
    mode = image.mode
    note = [] if mode == "RGB" else [_CONVERSIONS.get(mode, f"converted from {mode}")]
    if mode.startswith("I;16") or mode == "I":
        pixels = np.asarray(image, dtype=np.float64) / 257  # 0..65535 -> 0..255
        image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    elif mode == "F":
        image = Image.fromarray(np.asarray(image).clip(0, 255).astype(np.uint8))
    elif mode in ("P", "PA"):  # a palette may carry transparency
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        background = Image.new("RGB", image.size)  # black, like the C-NMC background
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        image = background
    return CheckedImage(image.convert("RGB"), note)


def load_batch(paths: list[str | Path]) -> Iterator[BatchItem]:
    """Each uploaded file, or each file inside an uploaded .zip, as a :class:`BatchItem` (errors included).

    Lazy: each image is decoded only when its item is reached, so a batch never holds more than one at a time.
    """
    return (_item(name, opener) for name, opener in _batch_files(paths))


def count_batch(paths: list[str | Path]) -> int:
    """How many items :func:`load_batch` yields, from the file list and zip indexes alone, decoding nothing."""
    return sum(1 for _ in _batch_files(paths))


def _batch_files(paths: list[str | Path]) -> Iterator[tuple[str, Opener]]:
    """(name, opener) per item; an opener raises :class:`ImageError` for an item that can't be read."""
    for path in map(Path, paths):
        if path.suffix.lower() == ".zip":
            yield from _zip_files(path)
        else:
            yield path.name, partial(_open_sized, path)


def _open_sized(path: Path) -> IO[bytes]:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ImageError(f"{path.name} is larger than {MAX_FILE_BYTES // 2**20} MiB")
        return path.open("rb")
    except OSError as error:
        raise ImageError(f"{path.name} can't be read ({error.strerror or error})") from error


def _refuse(message: str) -> IO[bytes]:
    raise ImageError(message)


def _item(name: str, opener: Opener) -> BatchItem:
    try:
        with opener() as handle:
            return BatchItem(name, load_image(handle, name=name), None)
    except ImageError as error:
        return BatchItem(name, None, str(error))


def _zip_files(path: Path) -> Iterator[tuple[str, Opener]]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        yield path.name, partial(_refuse, f"{path.name} is not a readable zip file ({error})")
        return
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir() and not _is_hidden(m.filename)]
        if len(members) > MAX_ZIP_FILES or sum(m.file_size for m in members) > MAX_ZIP_BYTES:
            yield path.name, partial(_refuse, f"{path.name} holds too much: at most {MAX_ZIP_FILES} files, 1 GiB")
            return
        for member in members:
            # The member's name is only a label here: nothing is extracted, so '../' or '/' can't escape.
            name = f"{path.name}/{member.filename}"
            if member.file_size > MAX_FILE_BYTES:
                yield name, partial(_refuse, f"{name} is larger than {MAX_FILE_BYTES // 2**20} MiB")
            else:
                yield name, partial(_read_member, archive, member)


def _read_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> IO[bytes]:
    try:
        return io.BytesIO(archive.read(member))
    except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError) as error:  # CRC, encryption
        raise ImageError(f"{member.filename} can't be read from the zip ({error})") from error


def _is_hidden(name: str) -> bool:
    """macOS resource forks and dot files that archivers add."""
    return any(
        part.startswith(".") and part not in (".", "..") or part == "__MACOSX" for part in PurePosixPath(name).parts
    )
