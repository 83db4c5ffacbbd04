"""Gradio app (a Hugging Face Space): is a white-blood-cell image ALL (leukaemia) or HEM (healthy)?

Tabs: Classify (one model, calibrated verdict, Grad-CAM on demand), Compare (the ticked models and their ensemble),
Batch (many files or a .zip, CSV out, per-patient summary) and Models & results. The handlers are thin; the work
is in ``serving/``. ``python app.py`` serves on GRADIO_SERVER_NAME:GRADIO_SERVER_PORT (gradio reads both).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
from fastapi import Request
from fastapi.responses import JSONResponse, PlainTextResponse
from gradio.route_utils import FnIndexInferError
from gradio.utils import get_upload_folder
from PIL import Image

from cnmc.cells import CLASS_NAMES, parse_cell_name
from serving import arguments, batch, cache, gradcam, results
from serving.arguments import ArgumentError
from serving.images import CheckedImage, ImageError, count_batch, load_batch, load_image
from serving.lookalike import Lookalike, check_lookalike
from serving.predict import (
    ALL_INDEX,
    NOT_A_CELL,
    UNCERTAIN,
    UNCERTAIN_BAND,
    ServedModel,
    available,
    default_members,
    ensemble,
    load_models,
    predict,
    shift_caveat,
    unlike_training,
    verdict,
)
from serving.registry import ROOT

CELLS = ROOT / "examples"  # real C-NMC cells that ship with the app (examples/README.md)
EXAMPLES = [
    CELLS / name
    for name in (
        "UID_11_10_1_all.bmp",
        "UID_3_2_1_all.webp",
        "UID_16_12_1_all.webp",
        "UID_H6_10_1_hem.webp",
        "UID_H11_10_1_hem.webp",
        "UID_H7_10_1_hem.webp",
    )
]
PARITY_CELLS = sorted(CELLS.glob("UID_*"))  # the bf16 path must match fp32 on every one of these real cells
# Single-cell events share one queue slot: two served within 6 % as fast in the load benchmark
# (benchmarks/app_load.py). Comparisons and batches queue in groups of their own, so neither holds up a single cell
# for longer than one model's pass over one image (ServedModel.lock): behind one queue with flip-averaged
# comparisons, /classify's p95 was 17 s in the load benchmark, which measures /classify beside both.
CONCURRENCY_LIMIT = 1
COMPARE_CONCURRENCY_LIMIT = 1
BATCH_CONCURRENCY_LIMIT = 1
MAX_QUEUE = 64
MAX_UPLOAD = "50mb"
NO_MODEL = "No model is available: see the model status at the top of the page."
GRADCAM_KEY = (
    "Grad-CAM for class ALL. Left, the cell as the model saw it; right, inside the cell, red marks the parts whose "
    "features raised P(ALL) most, blue those that raised it least (the model's grid at a sixteenth of its input, 8x8 "
    "for the shipped 128 px model, averaged over the cell's four flips when the switch is on). It shows where, not "
    "why: the model also reads the cell's size and overall colour, which no map can point at (a textureless disc of a "
    "typical cell's size and colour gets an ALL verdict), and its maps were never checked against a haematologist's "
    "reading. The share of the map that fell on the black background, where there is nothing to read, is given for "
    "each model."
)
# On by default: a mirror changed 8.5 % of the shipped recipe's single-view verdicts on unseen cells (README, Results).
FLIPS_DEFAULT = True
FLIPS_INFO = (
    "Cells have no orientation, so a mirrored cell should get the same answer; single views of the shipped recipe "
    "changed 8.5 % of verdicts under a mirror. Averaging removes that and adds a little accuracy, at about three "
    "times the compute (applies to every tab)."
)


CACHE_SWEEP_S, CACHE_MAX_AGE_S = 600, 3600
COMPARE_COLUMNS = ["model", "P(ALL)", "verdict", "latency (ms)", "agrees with ensemble"]
# What a browser can show; an upload in another accepted format (TIFF) is shown as a PNG copy of its pixels.
BROWSER_FORMATS = {"BMP", "PNG", "JPEG", "WEBP"}
PANEL_HEIGHT = 320  # px: the cell inputs, and the Grad-CAM pictures beside them
# Gradio's defaults break the results table's words mid-word, square every gallery thumbnail (a Grad-CAM picture
# is twice as wide as high) and hold a gallery at 450-550 px high, whatever it shows.
CSS = """
#comparison table { display: block; overflow-x: auto; width: max-content; max-width: 100%; }
#comparison th, #comparison td { word-break: normal; overflow-wrap: normal; hyphens: none; max-width: 16em; }
#comparison td:nth-child(-n+2) { min-width: 9em; }
#gradcam-gallery .thumbnail-item { aspect-ratio: 2 / 1; }
#gradcam-gallery .grid-wrap { min-height: 0; max-height: none; }
"""


class _Refused(Exception):
    """A request that can't be served; its text is the message shown to the user."""


def _examples_label(examples: Sequence[str]) -> str:
    """The examples' true classes in order, from their C-NMC file names (the thumbnails stay images)."""
    classes = []
    for name in (Path(e).name for e in examples):
        try:
            classes.append(CLASS_NAMES[parse_cell_name(name)[1]].upper())
        except ValueError:
            classes.append("?")
    return f"Real C-NMC cells, in order {', '.join(classes)} (from patients the shipped model trained on)"


def _read(upload: dict | str | None) -> CheckedImage:
    """The upload, decoded by our own safe loader (gradio's preprocessing is off for image inputs)."""
    try:
        found = arguments.upload(upload)
        if found is None:
            raise ImageError("Upload or paste a cell image first.")
        return load_image(found[0], name=found[1])
    except (ArgumentError, ImageError) as error:
        raise _Refused(f"❌ {error}") from None


def _notes(checked: CheckedImage, lookalike: Lookalike, unlike: str = "") -> str:
    """Warnings first (no verdict, or a verdict on a cell unlike the training cells), then input conversions."""
    lines = [f"_Input: {note}._" for note in checked.notes]
    if not lookalike.looks_like_cell:
        lines.insert(
            0,
            "⚠️ **This doesn't look like a C-NMC cell** (one segmented cell centred on a black background): "
            f"{'; '.join(lookalike.reasons)}. The models are out of their depth, so no verdict is given.",
        )
    elif unlike:
        lines.insert(
            0,
            f"⚠️ **Read this verdict as unproven**: the cell is {unlike}. The models' verdicts follow cell size and "
            "stain, so a cell from another magnification, stain or scanner can get a confident verdict that means "
            "nothing.",
        )
    return "\n\n".join(lines)


def _pick(models: Sequence[ServedModel], name: object) -> ServedModel:
    """The named model, or with no name the first available; never another model than the one asked for."""
    try:
        name = arguments.model_name(name)
    except ArgumentError as error:
        raise _Refused(f"❌ {error}") from None
    ready = available(models)
    if not ready:
        raise _Refused(NO_MODEL)
    if name is None:
        return ready[0]
    model = next((m for m in ready if m.name == name), None)
    if model is None:
        known = next((m for m in models if m.name == name), None)
        why = f"is {known.status}" if known else "is not one of this app's models"
        raise _Refused(f"❌ Model {arguments.quote(name)} {why}; choose one of {', '.join(m.name for m in ready)}.")
    return model


def _chosen(models: Sequence[ServedModel], members: object) -> list[ServedModel]:
    """The available models among ``members`` (when None, the default ensemble's), in the registry's order."""
    try:
        members = arguments.model_names(members)
    except ArgumentError as error:
        raise _Refused(f"❌ {error}") from None
    ready = available(models)
    if not ready:
        raise _Refused(NO_MODEL)
    if members is None:
        return default_members(ready)
    if not members:
        raise _Refused("❌ Tick at least one model.")
    names = {_pick(models, name).name for name in members}  # refuses a name it cannot serve
    return [m for m in ready if m.name in names]


def _flips(value: object) -> bool:
    try:
        return arguments.flag(value, "The flip-averaging switch")
    except ArgumentError as error:
        raise _Refused(f"❌ {error}") from None


def _averaged(flips: bool) -> str:
    return ", averaged over 4 flips" if flips else ""


def classify(
    models: Sequence[ServedModel],
    upload: object,
    model_name: object,
    flips: object = FLIPS_DEFAULT,
    *,
    band: results.Band | None = None,
):
    """-> (gr.Label value, verdict markdown); ``band`` says how often unseen cells fall in the uncertain band."""
    try:
        model, flips, checked = _pick(models, model_name), _flips(flips), _read(upload)
    except _Refused as refusal:
        return None, str(refusal)
    p = predict(model, checked.image, flips=flips)
    lookalike = check_lookalike(checked.image)
    calibration = "uncalibrated" if model.loaded.temperature is None else "calibrated"
    figures = (
        f"{model.name}: P(ALL) = {p.prob_all:.3f} ({calibration}, uncertain band {UNCERTAIN_BAND[0]:.2f}-"
        f"{UNCERTAIN_BAND[1]:.2f}) · {p.latency_ms:.0f} ms ({model.runner.precision}{_averaged(flips)})"
    )
    called = verdict(p.prob_all, lookalike.looks_like_cell)
    head = f"## {called}"
    if not lookalike.looks_like_cell:  # no verdict: the probability only as a footnote, not as a reading
        return None, "\n\n".join([head, _notes(checked, lookalike), _for_reference(figures)])
    bars = {"ALL": p.prob_all, "HEM": 1 - p.prob_all}
    notes = _notes(checked, lookalike, unlike_training([model], checked.image))
    uncertain = results.uncertain_note(band) if called == UNCERTAIN else ""
    return bars, "\n\n".join(filter(None, [f"{head}\n\n{figures}", uncertain, notes, shift_caveat([model])]))


def _for_reference(figures: str) -> str:
    return f"<small>Not a reading, since there is no verdict; for reference only: {figures}</small>"


def _explained(model: ServedModel, image: Image.Image, flips: bool) -> tuple[np.ndarray, str]:
    """(the cell beside its Grad-CAM for ALL, a caption naming the model and what fell outside the cell)."""
    with model.lock:  # Grad-CAM's hooks must see only this forward pass
        found = gradcam.explain(model.loaded, image, ALL_INDEX, flips=flips)
    return found.picture(), f"{model.name}: {found.outside_share:.0%} of the map fell outside the cell"


def explain(models: Sequence[ServedModel], upload: object, model_name: object, flips: object = FLIPS_DEFAULT):
    """-> (the cell beside its Grad-CAM for ALL, or None; message)."""
    try:
        model, flips, checked = _pick(models, model_name), _flips(flips), _read(upload)
    except _Refused as refusal:
        return None, str(refusal)
    picture, caption = _explained(model, checked.image, flips)
    return picture, f"**Grad-CAM of {caption}.** {GRADCAM_KEY}"


def compare(
    models: Sequence[ServedModel],
    upload: object,
    flips: object = FLIPS_DEFAULT,
    members: object = None,
    *,
    band: results.Band | None = None,
):
    """-> (ensemble markdown, per-model table) for the chosen ``members`` (default: the default ensemble's)."""
    empty = pd.DataFrame(columns=COMPARE_COLUMNS)
    try:
        ready, flips, checked = _chosen(models, members), _flips(flips), _read(upload)
    except _Refused as refusal:
        return str(refusal), empty
    predictions = [predict(m, checked.image, flips=flips) for m in ready]
    lookalike = check_lookalike(checked.image)
    mean_all = ensemble(predictions)
    consensus = verdict(mean_all, lookalike.looks_like_cell)
    rows = [
        [
            p.model,
            round(p.prob_all, 4),
            verdict(p.prob_all, lookalike.looks_like_cell),
            round(p.latency_ms, 1),
            "yes" if verdict(p.prob_all) == verdict(mean_all) else "no",
        ]
        for p in predictions
    ]
    total = sum(p.latency_ms for p in predictions)
    if len(ready) == 1:
        why = "available" if len(available(models)) == 1 else "ticked"
        head = f"## {consensus}"
        figures = f"Only {ready[0].name} is {why}, so there is no ensemble: P(ALL) = {mean_all:.3f}"
    else:
        head = f"## Ensemble: {consensus}"
        figures = f"Mean P(ALL) of {len(ready)} models = {mean_all:.3f}"
    figures += f" · {total:.0f} ms in all{_averaged(flips)}"
    table = pd.DataFrame(rows, columns=empty.columns)
    if not lookalike.looks_like_cell:
        return "\n\n".join([head, _notes(checked, lookalike), _for_reference(figures)]), table
    notes = _notes(checked, lookalike, unlike_training(ready, checked.image))
    uncertain = results.uncertain_note(band) if consensus == UNCERTAIN else ""
    return "\n\n".join(filter(None, [f"{head}\n\n{figures}", uncertain, notes, shift_caveat(ready)])), table


def explain_all(models: Sequence[ServedModel], upload: object, members: object = None, flips: object = FLIPS_DEFAULT):
    """-> (gallery of (the cell beside its Grad-CAM, caption), message) for the chosen ``members`` (default: the
    default ensemble's)."""
    try:
        ready, flips, checked = _chosen(models, members), _flips(flips), _read(upload)
    except _Refused as refusal:
        return [], str(refusal)
    return [_explained(model, checked.image, flips) for model in ready], GRADCAM_KEY


def run_batch(
    models: Sequence[ServedModel],
    files: object,
    flips: object = FLIPS_DEFAULT,
    progress=gr.Progress(),  # noqa: B008 (gradio finds its progress bar by this default)
):
    """-> (table, per-patient summary, CSV path, message), from Compare's default ensemble. The CSV is written into
    gradio's cache, which prunes it."""
    ready = default_members(models)
    if not ready:
        return None, None, None, NO_MODEL
    if not files:
        return None, None, None, "Upload images or a .zip of them first."
    try:
        flips = _flips(flips)
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise _Refused("❌ The files must be a list of uploaded files.")
    except _Refused as refusal:
        return None, None, None, str(refusal)
    total = count_batch(files)
    table, cut = batch.predict_batch(
        ready,
        load_batch(files),
        total,
        lambda done, total: progress(done / total, desc=f"{done}/{total} files"),
        flips=flips,
    )
    failed = int((table["error"] != "").sum())
    unlike = int((table["verdict"] == NOT_A_CELL).sum())
    csv = batch.write_csv(table, Path(get_upload_folder()))
    done = len(table) - failed
    message = f"{done} file{'' if done == 1 else 's'} classified{_averaged(flips)}"
    message += f", {unlike} of them unlike a C-NMC cell (no verdict, see warning)" if unlike else ""
    message += f", {failed} could not be read" if failed else ""
    message += f" ({cut})" if cut else ""
    return table, batch.patient_summary(table, batch.verdict_column(ready)), str(csv), message


def batch_basis(models: Sequence[ServedModel]) -> str:
    """What Batch's verdicts rest on, in one sentence."""
    ready = default_members(models)
    if len(ready) == 1:
        alone = "model" if len(available(models)) == 1 else "member of Compare's default ensemble"
        return f"Verdicts on {ready[0].name}'s P(ALL), the only {alone} available."
    return f"Verdicts on the {batch.ENSEMBLE}: the mean P(ALL) of {_names(ready)}, Compare's default ensemble."


def _names(models: Sequence[ServedModel]) -> str:
    names = [m.name for m in models]
    return ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]


def _clear_on_change(trigger: gr.components.Component, cleared: dict) -> None:
    """A new input makes the answers on screen someone else's: reset each output in ``cleared`` to its value."""
    trigger.change(lambda: tuple(cleared.values()), None, list(cleared), queue=False, api_visibility="private")


def _image_input(elem_id: str) -> gr.Image:
    # type="filepath" and preprocess=False on the events: our loader, not gradio's, decodes untrusted uploads.
    return gr.Image(
        label="Cell image", type="filepath", sources=["upload", "clipboard"], height=PANEL_HEIGHT, elem_id=elem_id
    )


def shown_upload(upload: object):
    """A TIFF upload replaced by a PNG copy of its pixels, which a browser can show; any other upload kept as it is.

    The copy keeps the TIFF's mode where PNG has it, so the models see the same pixels. An upload our loader refuses
    stays, and the next click says why.
    """
    try:
        checked = _read(upload)
        path, name = arguments.upload(upload)
    except _Refused:
        return gr.skip()
    with Image.open(path) as original:
        if original.format in BROWSER_FORMATS:
            return gr.skip()
        folder = Path(get_upload_folder())
        folder.mkdir(parents=True, exist_ok=True)
        copy = Path(tempfile.mkdtemp(dir=folder)) / f"{Path(name).stem or 'cell'}.png"
        try:
            original.save(copy)
        except (OSError, ValueError):  # a mode PNG lacks (CMYK): the RGB our loader makes of it
            checked.image.save(copy)
    return str(copy)


def build_demo(
    models: Sequence[ServedModel] | None = None,
    *,
    examples: Sequence[Path] = EXAMPLES,
    results_dir: Path = results.RESULTS_DIR,
    concurrency_limit: int = CONCURRENCY_LIMIT,
    batch_concurrency_limit: int = BATCH_CONCURRENCY_LIMIT,
) -> gr.Blocks:
    """The app around ``models`` (default: the registry's, with bf16 checked against fp32 on real cells)."""
    examples = [str(p) for p in examples if p.is_file()]
    if models is None:
        models = load_models(parity_images=[load_image(p).image for p in PARITY_CELLS])
    names = [m.name for m in available(models)]
    concurrency = {"concurrency_id": "cpu", "concurrency_limit": concurrency_limit}
    # Image events skip gradio's decoding: our loader, not gradio's, decodes untrusted uploads.
    image_event = {"preprocess": False, **concurrency}
    compare_event = {"preprocess": False, "concurrency_id": "compare", "concurrency_limit": COMPARE_CONCURRENCY_LIMIT}
    status = "\n".join(f"- **{m.name}**: {m.status}" for m in models)
    band = results.uncertain_band(results_dir)
    # Uploads are patient-derived: Gradio's cache keeps nothing past an hour, nor across a restart; no telemetry.
    with gr.Blocks(
        title="C-NMC ALL detector", analytics_enabled=False, delete_cache=(CACHE_SWEEP_S, CACHE_MAX_AGE_S)
    ) as demo:
        gr.Markdown(
            "# Acute lymphoblastic leukaemia (ALL) vs healthy (HEM) white blood cells\n"
            f"{results.DISCLAIMER}\n\n{len(names)} of {len(models)} models available: {', '.join(names) or 'none'}"
        )
        with gr.Accordion("Model status", open=not names):
            gr.Markdown(status)
        flips = gr.Checkbox(
            label="Average over the four flips of each cell",
            info=FLIPS_INFO,
            value=FLIPS_DEFAULT,
        )
        with gr.Tab("Classify"):
            with gr.Row():
                with gr.Column():
                    image = _image_input("classify-image")
                    model_name = gr.Dropdown(names, value=names[0] if names else None, label="Model")
                    classify_button = gr.Button("Classify", variant="primary")
                    explain_button = gr.Button("Explain (Grad-CAM)")
                with gr.Column():
                    # The verdict below is the headline: inside the uncertain band it is not the top class.
                    label = gr.Label(label="Calibrated probability", num_top_classes=2, show_heading=False)
                    message = gr.Markdown()
                    heatmap = gr.Image(
                        label="Grad-CAM", type="numpy", interactive=False, height=PANEL_HEIGHT, elem_id="gradcam"
                    )
                    explain_message = gr.Markdown()
            if examples:
                gr.Examples(examples, inputs=image, label=_examples_label(examples))
            gr.Markdown(results.band_markdown(band))
            _clear_on_change(image, {label: None, message: "", heatmap: None, explain_message: ""})
            image.upload(shown_upload, image, image, api_visibility="private", **image_event)
            classify_button.click(
                partial(classify, models, band=band),
                [image, model_name, flips],
                [label, message],
                api_name="classify",
                **image_event,
            )
            explain_button.click(
                partial(explain, models),
                [image, model_name, flips],
                [heatmap, explain_message],
                api_name="explain",
                **image_event,
            )
        with gr.Tab("Compare"):
            no_comparison = pd.DataFrame(columns=COMPARE_COLUMNS)  # headers before the first run
            with gr.Row():
                with gr.Column():
                    compare_image = _image_input("compare-image")
                    members = gr.CheckboxGroup(
                        names,
                        value=[m.name for m in default_members(models)],
                        label="Models",
                        info="The ensemble is the mean P(ALL) of those ticked; ticked first, the best measured.",
                    )
                    compare_button = gr.Button("Compare", variant="primary")
                    explain_all_button = gr.Button("Grad-CAM for each")
                with gr.Column():
                    compare_message = gr.Markdown()
                    compare_table = gr.Dataframe(
                        no_comparison,
                        label="Per model",
                        interactive=False,
                        wrap=True,
                        column_widths=["24%", "14%", "26%", "16%", "20%"],
                    )
            # Two pictures a row, each whole: one model's picture is not stretched to the page's width and cropped.
            gallery = gr.Gallery(
                label="Grad-CAM",
                columns=2,
                fit_columns=False,
                height="auto",
                object_fit="contain",
                allow_preview=False,
                elem_id="gradcam-gallery",
            )
            gallery_message = gr.Markdown()
            if examples:
                gr.Examples(examples, inputs=compare_image, label=_examples_label(examples))
            _clear_on_change(
                compare_image, {compare_message: "", compare_table: no_comparison, gallery: [], gallery_message: ""}
            )
            compare_image.upload(shown_upload, compare_image, compare_image, api_visibility="private", **image_event)
            compare_button.click(
                partial(compare, models, band=band),
                [compare_image, flips, members],
                [compare_message, compare_table],
                api_name="compare",
                **compare_event,
            )
            explain_all_button.click(
                partial(explain_all, models),
                [compare_image, members, flips],
                [gallery, gallery_message],
                api_name="explain_all",
                **compare_event,
            )
        with gr.Tab("Batch"):
            # A list of 20 files scrolls within this height instead of pushing the results down the page.
            files = gr.File(
                label="Images or .zip files", file_count="multiple", type="filepath", height=240, elem_id="batch-files"
            )
            batch_button = gr.Button("Classify all", variant="primary")
            batch_message = gr.Markdown()
            batch_members = default_members(models)
            gr.Markdown(batch_basis(models) if batch_members else NO_MODEL)
            no_files = pd.DataFrame(columns=batch.table_columns(batch_members))  # headers before the first run
            table = gr.Dataframe(no_files, label="P(ALL) per file", interactive=False, wrap=True)
            no_patients = batch.patient_summary(no_files, "")
            summary = gr.Dataframe(no_patients, label="Per patient (C-NMC file names)", interactive=False)
            csv = gr.File(label="CSV")
            _clear_on_change(files, {table: no_files, summary: no_patients, csv: None, batch_message: ""})
            batch_button.click(
                partial(run_batch, models),
                [files, flips],
                [table, summary, csv, batch_message],
                api_name="batch",
                concurrency_id="batch",
                concurrency_limit=batch_concurrency_limit,
            )
        with gr.Tab("Models & results"):
            gr.Markdown(results.NEW_BATCH)
            gr.Markdown(results.band_markdown(band))
            gr.Markdown(results.comparison_markdown(results_dir), elem_id="comparison")
            for plot in results.result_plots(results_dir):  # each whole, at a readable size
                gr.Image(
                    plot,
                    label=Path(plot).stem,
                    height=640,
                    interactive=False,
                    buttons=["download", "fullscreen"],
                    elem_classes="result-plot",
                )
            for model in models:
                with gr.Accordion(model.name, open=False):
                    gr.Markdown(results.model_card_markdown(model))
            gr.Markdown(f"{results.DATASET_CREDIT}\n\n{results.DISCLAIMER}")
    return demo.queue(max_size=MAX_QUEUE)


def _unknown_endpoint(request: Request, error: Exception) -> JSONResponse | PlainTextResponse:
    """A call to an api name or function index that this app doesn't have: 404 with one line, not an HTTP 500."""
    name = request.path_params.get("api_name")
    if isinstance(error, KeyError) and not request.url.path.endswith("/queue/join"):
        return PlainTextResponse("Internal Server Error", status_code=500)  # starlette's answer to the rest
    endpoints = ", ".join(
        f"/{fn.api_name}" for fn in request.app.get_blocks().fns.values() if fn.api_visibility == "public"
    )
    what = f"endpoint {arguments.quote('/' + name)}" if name else "function index"
    return JSONResponse({"error": f"This app has no such {what}; its endpoints are {endpoints}."}, status_code=404)


def serve(demo: gr.Blocks, **launch_options):
    """Launch ``demo`` as the public app runs: uploads capped, errors shown as text, unknown endpoints a 404, and
    :data:`CSS` (gradio takes it at launch)."""
    handlers = {FnIndexInferError: _unknown_endpoint, KeyError: _unknown_endpoint}
    return demo.launch(
        max_file_size=MAX_UPLOAD,
        show_error=True,
        css=CSS,
        app_kwargs={"exception_handlers": handlers},
        **launch_options,
    )


if __name__ == "__main__":
    logging.basicConfig(format="%(message)s")
    logging.getLogger("serving").setLevel(logging.INFO)  # a start-up line per model (serving.predict)
    cache.private_cache()  # before the app is built: gradio reads its cache folder then
    serve(build_demo())
