"""Hostile input through the public API, as an attacker sends it: gradio_client (and raw HTTP where the client
refuses to send it) against the app launched as ``python app.py`` launches it.

Every kind gets a short, clear message naming the problem, and the server keeps serving: a good request succeeds
right after each one. The batch's limits are tested the same way, through /batch.
"""

import csv
import io
import json
import struct
import zipfile
import zlib
from pathlib import Path

import httpx
import pytest
from conftest import ALL_CELL, CELLS, HEM_CELL
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import app
from serving import batch

MAX_MESSAGE = 300  # a clear message is short: no echoed megabytes, no tracebacks


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    demo = app.build_demo(models, results_dir=tmp_path_factory.mktemp("results"))
    app.serve(demo, server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    yield demo.local_url
    demo.close()


@pytest.fixture(scope="module")
def client(server):
    return Client(server, verbose=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """One hostile file per kind, written once."""
    folder = tmp_path_factory.mktemp("hostile")
    for name, make in FILES.items():
        (folder / name).write_bytes(make())
    return folder


def _png(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims another size: a decompression bomb without the memory."""
    data = bytearray(_png(Image.new("L", (8, 8))))
    ihdr = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr))
    return bytes(data)


def _animated() -> bytes:
    frames = [Image.new("RGB", (64, 64), colour) for colour in ("red", "green", "blue")]
    return _png(frames[0], "GIF", save_all=True, append_images=frames[1:])


FILES = {
    "text.png": lambda: b"not pixels at all\n" * 20,
    "empty.bmp": lambda: b"",
    "corrupt.png": lambda: b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
    "truncated.bmp": lambda: ALL_CELL.read_bytes()[:30_000],
    "bomb.png": lambda: _png_claiming(100_000, 100_000),
    "one-bit-huge.png": lambda: _png(Image.new("1", (5999, 5999))),  # 4.4 KB that decodes to 36 megapixels
    "speck.png": lambda: _png(Image.new("RGB", (1, 1))),
    "animated.gif": _animated,
    "vector.svg": lambda: b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
    "page.html": lambda: b"<html><body><img src=x onerror=alert(1)></body></html>",
    "eps.eps": lambda: _png(Image.new("RGB", (64, 64)), "EPS"),
}
# The file, and what its message must say.
REFUSED_FILES = {
    "text.png": "is not an image",
    "empty.bmp": "is not an image",
    "corrupt.png": "corrupt",
    "truncated.bmp": "corrupt or truncated",
    "bomb.png": "too large",
    "one-bit-huge.png": "5999x5999 pixels; the limit is",
    "speck.png": "only 1x1 pixels",
    "animated.gif": "has 3 frames",
    "vector.svg": "is not an image",
    "page.html": "is not an image",
    "eps.eps": "is a EPS file; use BMP, PNG, JPEG, TIFF or WebP",
}


def _still_serving(client: Client) -> None:
    label, message = client.predict(handle_file(str(HEM_CELL)), "Tiny B", False, api_name="/classify")
    assert label["label"] in ("ALL", "HEM") and "Tiny B: P(ALL) = " in message


def _clear(message: str, *expected: str) -> None:
    assert message.startswith("❌ ") and len(message) <= MAX_MESSAGE, message
    for text in expected:
        assert text in message, message
    assert "Traceback" not in message and " object at 0x" not in message


# --- Files ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", REFUSED_FILES)
def test_a_hostile_file_is_refused_in_every_image_endpoint(client, files, name):
    upload = handle_file(str(files / name))
    for endpoint, arguments in (("/classify", ("Tiny A", False)), ("/explain", ("Tiny A",))):
        value, message = client.predict(upload, *arguments, api_name=endpoint)
        assert not value
        _clear(message, REFUSED_FILES[name], name)
    message, table = client.predict(upload, False, api_name="/compare")
    _clear(message, REFUSED_FILES[name])
    assert table["data"] == []
    gallery, message = client.predict(upload, api_name="/explain_all")
    assert gallery == []
    _clear(message, REFUSED_FILES[name])
    _still_serving(client)


def test_a_file_on_the_server_that_no_one_uploaded_is_refused(client):
    for path in ("/etc/passwd", str(ALL_CELL), "../../../../etc/hostname", "\0"):
        label, message = client.predict({"path": path}, "Tiny A", False, api_name="/classify")
        assert not label
        _clear(message, "must be a file uploaded to this app")
    _still_serving(client)


def test_no_image_asks_for_one(client):
    label, message = client.predict(None, "Tiny A", False, api_name="/classify")
    assert not label and message == "❌ Upload or paste a cell image first."
    _still_serving(client)


# --- Arguments ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("M" * 2**20, "is not one of this app's models"),  # a megabyte of name
        ("Gone", "is unavailable"),
        (42, "must be given by its name, not a number"),
        (["Tiny A"], "must be given by its name, not a list"),
        ({"name": "Tiny A"}, "must be given by its name, not an object"),
    ],
    ids=["megabyte", "unavailable", "number", "list", "object"],
)
def test_a_bad_model_name_is_refused_and_never_echoed_whole(client, model, expected):
    label, message = client.predict(handle_file(str(ALL_CELL)), model, False, api_name="/classify")
    assert not label
    _clear(message, expected)
    _still_serving(client)


@pytest.mark.parametrize(("flips", "kind"), [("yes", "text"), (1, "a number"), ({}, "an object"), ([True], "a list")])
def test_only_true_or_false_switches_flip_averaging(client, flips, kind):
    _, message = client.predict(handle_file(str(ALL_CELL)), "Tiny A", flips, api_name="/classify")
    _clear(message, f"must be true or false, not {kind}")
    message, _ = client.predict(handle_file(str(ALL_CELL)), flips, api_name="/compare")
    _clear(message, f"must be true or false, not {kind}")
    *_, message = client.predict([handle_file(str(ALL_CELL))], flips, api_name="/batch")
    _clear(message, f"must be true or false, not {kind}")
    _still_serving(client)


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        ("Tiny A", "must be a list of model names, not text"),  # not read letter by letter
        ([1, 2], "must be a list of model names"),
        (["Tiny A"] * 1000, "1000 models were named"),
        ([], "Tick at least one model."),
        (["Tiny A", "x" * 100_000], "is not one of this app's models"),
    ],
    ids=["string", "numbers", "thousand", "none", "long-name"],
)
def test_a_bad_member_list_is_refused(client, members, expected):
    message, table = client.predict(handle_file(str(ALL_CELL)), False, members, api_name="/compare")
    _clear(message, expected)
    assert table["data"] == []
    gallery, message = client.predict(handle_file(str(ALL_CELL)), members, api_name="/explain_all")
    assert gallery == []
    _clear(message, expected)
    _still_serving(client)


def test_an_unknown_endpoint_is_a_404_naming_the_real_ones(client, server):
    with pytest.raises(ValueError, match="nope"):  # gradio_client refuses it before sending
        client.predict(handle_file(str(ALL_CELL)), api_name="/nope")
    api = f"{server.rstrip('/')}/gradio_api"
    for response in (
        httpx.post(f"{api}/call/nope", json={"data": []}),
        httpx.post(f"{api}/call/{'n' * 5000}", json={"data": []}),
        httpx.post(f"{api}/queue/join", json={"data": [], "fn_index": 999, "session_hash": "x"}),
    ):
        assert response.status_code == 404 and len(response.text) <= MAX_MESSAGE, response.text
        assert "/classify, /explain, /compare, /explain_all, /batch" in response.json()["error"]
    _still_serving(client)


def test_a_payload_of_the_wrong_shape_is_an_error_not_a_crash(client):
    """Gradio's own schema check refuses a string where an image belongs; the app keeps serving."""
    with pytest.raises(AppError, match="valid dictionary"):
        client.predict("/etc/passwd", "Tiny A", False, api_name="/classify")
    _still_serving(client)


# --- Batches --------------------------------------------------------------------------------------------


def _zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _zip_claiming(path: Path, size: int) -> Path:
    """A zip whose index declares its one member ``size`` bytes long: a zip bomb without the bytes."""
    data = bytearray(_zip(path, {"zeros.png": bytes(10)}, zipfile.ZIP_STORED).read_bytes())
    entry = data.index(b"PK\x01\x02")  # the central directory, which zipfile reads sizes from
    data[entry + 24 : entry + 28] = struct.pack("<I", size)
    path.write_bytes(bytes(data))
    return path


def test_a_batch_of_hostile_archives_reports_each_file_and_extracts_nothing(client, files, tmp_path):
    traversal = _zip(
        tmp_path / "traversal.zip",
        {"../../escaped.bmp": HEM_CELL.read_bytes(), "/abs/cell.webp": HEM_CELL.read_bytes(), "notes.txt": b"hi"},
    )
    bomb = _zip_claiming(tmp_path / "bomb.zip", 0xF000_0000)  # 4 GB by its index, a few bytes on disk
    not_zip = tmp_path / "fake.zip"
    not_zip.write_bytes(b"PK\x03\x04 not really a zip")
    uploads = [traversal, bomb, not_zip, files / "one-bit-huge.png", ALL_CELL]
    table, _, csv_path, message = client.predict([handle_file(str(p)) for p in uploads], False, api_name="/batch")
    errors = dict(zip((row[0] for row in table["data"]), (row[-1] for row in table["data"]), strict=True))
    assert errors["traversal.zip/../../escaped.bmp"] == "" and errors["traversal.zip//abs/cell.webp"] == ""
    assert "is not an image" in errors["traversal.zip/notes.txt"] and "holds too much" in errors["bomb.zip"]
    assert "not a readable zip" in errors["fake.zip"] and "the limit is" in errors["one-bit-huge.png"]
    assert errors[ALL_CELL.name] == "" and message == "3 files classified, 4 could not be read"
    assert not (tmp_path.parent / "escaped.bmp").exists() and Path(csv_path).is_file()
    _still_serving(client)


def test_a_file_name_that_is_a_formula_is_neutralised_in_the_csv(client, tmp_path):
    named = tmp_path / '=HYPERLINK("x","y").webp'
    named.write_bytes(HEM_CELL.read_bytes())
    _, _, csv_path, _ = client.predict([handle_file(str(named))], False, api_name="/batch")
    with open(csv_path, newline="") as handle:
        assert next(csv.DictReader(handle))["file"][0] not in batch.FORMULA_STARTS
    _still_serving(client)


@pytest.mark.parametrize(
    ("limit", "value", "expected"),
    [
        ("MAX_FILES", 2, "2 files classified (only the first 2 of 4 files are processed)"),
        ("MAX_PIXELS", 450 * 450, "1 file classified (stopped after 1 of 4 files: a batch may hold 202,500 pixels"),
        ("MAX_SECONDS", 0, "0 files classified (stopped after 0 of 4 files: a batch may take 0 s"),
    ],
    ids=["files", "pixels", "seconds"],
)
def test_a_batch_stops_at_its_budget_with_partial_results_and_says_so(client, monkeypatch, limit, value, expected):
    monkeypatch.setattr(batch, limit, value)  # the server runs in this process
    table, _, _, message = client.predict([handle_file(str(p)) for p in CELLS[:4]], False, api_name="/batch")
    assert message.startswith(expected) and len(table["data"]) == int(expected.split()[0])
    monkeypatch.undo()
    table, _, _, message = client.predict([handle_file(str(p)) for p in CELLS[:4]], False, api_name="/batch")
    assert message == "4 files classified", table["data"]


def test_a_batch_of_zip_bombs_by_count_is_refused_from_the_index(client, tmp_path):
    many = _zip(tmp_path / "many.zip", {f"{i}.png": b"" for i in range(1001)}, zipfile.ZIP_STORED)
    table, _, _, message = client.predict([handle_file(str(many))], False, api_name="/batch")
    assert [row[0] for row in table["data"]] == ["many.zip"] and "at most 1000 files" in table["data"][0][-1]
    assert message == "0 files classified, 1 could not be read"
    _still_serving(client)


# --- What the server shows and keeps --------------------------------------------------------------------


def test_config_names_no_folder_of_the_app_or_its_models_and_sends_no_telemetry(server, registered):
    """The page's config (which the HTML page embeds too) names files only by gradio's cache."""
    config = httpx.get(f"{server.rstrip('/')}/config").text
    assert str(app.ROOT) not in config and json.loads(config)["analytics_enabled"] is False
    assert not [r.local_dir for r in registered if str(r.local_dir) in config]
