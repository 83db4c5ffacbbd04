"""The API's arguments, checked at the edge: the image events skip gradio's preprocessing, so a value arrives as the
caller wrote it. Each check returns the value as the handler wants it or raises :class:`ArgumentError`, whose short
message names the argument and quotes at most :data:`MAX_QUOTE` characters of what was sent.
"""

from __future__ import annotations

from pathlib import Path

from gradio.utils import get_upload_folder, is_in_or_equal

MAX_QUOTE = 40
MAX_MEMBERS = 16  # far more than the four models; a longer list is not a choice among them
MAX_NAME = 200  # an uploaded file's name, as the messages show it
MAX_PATH = 4096  # Linux's own limit
_JSON_TYPES = {bool: "true/false", int: "a number", float: "a number", str: "text", list: "a list", dict: "an object"}


class ArgumentError(ValueError):
    """An argument of the wrong type or size; the message says which and what is expected."""


def quote(text: str) -> str:
    """``text`` as a message may show it: quoted, and cut to :data:`MAX_QUOTE` characters."""
    return repr(text if len(text) <= MAX_QUOTE else text[:MAX_QUOTE] + "…")


def _kind(value: object) -> str:
    """What was sent, in JSON's words, without echoing it."""
    return "nothing" if value is None else _JSON_TYPES.get(type(value), "an unsupported value")


def flag(value: object, what: str) -> bool:
    """A switch: JSON's true or false, not any value that Python finds truthy."""
    if isinstance(value, bool):
        return value
    raise ArgumentError(f"{what} must be true or false, not {_kind(value)}")


def model_name(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ArgumentError(f"The model must be given by its name, not {_kind(value)}")


def model_names(value: object) -> list[str] | None:
    """The Compare tab's ticked models: a list of names (a lone string would be read letter by letter)."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise ArgumentError(f"The models must be a list of model names, not {_kind(value)}")
    if len(value) > MAX_MEMBERS:
        raise ArgumentError(f"{len(value)} models were named; this app has far fewer")
    return value


def upload(value: object) -> tuple[Path, str] | None:
    """(path, name to show) of an uploaded image, or None when nothing was uploaded.

    Gradio hands an image event its upload as a dict, whose path must lie in gradio's upload folder: any other path
    is a file on this server that no one uploaded. A plain string is a path given by Python code calling a handler.
    """
    if value is None:
        return None
    if isinstance(value, str):
        return Path(value), Path(value).name
    if not isinstance(value, dict):
        raise ArgumentError(f"The image must be an uploaded file, not {_kind(value)}")
    path, name = value.get("path"), value.get("orig_name")
    if not path:
        return None
    uploaded = isinstance(path, str) and len(path) <= MAX_PATH and "\0" not in path
    if not uploaded or not is_in_or_equal(path, get_upload_folder()):
        raise ArgumentError("The image must be a file uploaded to this app")
    name = name if isinstance(name, str) and name else Path(path).name
    return Path(path), name if len(name) <= MAX_NAME else name[:MAX_NAME] + "…"
