"""Gradio app (a Hugging Face Space): is a white-blood-cell image ALL (leukaemia) or HEM (healthy)?

Tabs: Classify (one model, calibrated verdict, Grad-CAM on demand), Compare (the ticked models and their ensemble),
Batch (many files or a .zip, CSV out, per-patient summary) and Models & results. The handlers are thin; the work
is in ``serving/``. ``python app.py`` serves on GRADIO_SERVER_NAME:GRADIO_SERVER_PORT (gradio reads both).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path

import gradio as gr
import pandas as pd

from cnmc.cells import CLASS_NAMES, parse_cell_name
from serving import batch, gradcam, results
from serving.images import CheckedImage, ImageError, count_batch, load_batch, load_image
from serving.lookalike import Lookalike, check_lookalike
from serving.predict import (
    ALL_INDEX,
    NOT_A_CELL,
    UNCERTAIN_BAND,
    ServedModel,
    available,
    ensemble,
    load_models,
    predict,
    shift_caveat,
    verdict,
)
from serving.registry import ROOT

CELLS = ROOT / "tests" / "fixtures" / "cnmc" / "C-NMC_Leukemia" / "training_data"
EXAMPLES = [
    CELLS / "fold_0" / "all" / "UID_11_10_1_all.bmp",
    CELLS / "fold_0" / "all" / "UID_3_2_1_all.webp",
    CELLS / "fold_1" / "all" / "UID_16_12_1_all.webp",
    CELLS / "fold_0" / "hem" / "UID_H6_10_1_hem.webp",
    CELLS / "fold_0" / "hem" / "UID_H11_10_1_hem.webp",
    CELLS / "fold_1" / "hem" / "UID_H14_10_1_hem.webp",
]
PARITY_CELLS = sorted(CELLS.glob("*/*/*"))  # the bf16 path must match fp32 on every one of these real cells
# One CPU: model events share one queue slot. Two served within 6 % as fast in the load benchmark
# (benchmarks/app_load.py), and one keeps Grad-CAM's hooks from seeing another request's forward pass.
CONCURRENCY_LIMIT = 1
MAX_QUEUE = 64
NO_MODEL = "No model is available: see the model status at the top of the page."
GRADCAM_KEY = (
    "Grad-CAM for class ALL: red marks the regions that raised P(ALL) most, blue those that raised it least. The map "
    "is coarse (the last convolution's grid, scaled up): read it as where the model looked, not as an outline."
)
# On by default: a mirror changed 8.5 % of the shipped recipe's single-view verdicts on unseen cells (README, Results).
FLIPS_DEFAULT = True
FLIPS_INFO = (
    "Cells have no orientation, so a mirrored cell should get the same answer; single views of the shipped recipe "
    "changed 8.5 % of verdicts under a mirror. Averaging removes that and adds a little accuracy, at about three "
    "times the compute (applies to every tab)."
)


CACHE_SWEEP_S, CACHE_MAX_AGE_S = 600, 3600


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
    path = upload.get("path") if isinstance(upload, dict) else upload
    if not path:
        raise ImageError("Upload or paste a cell image first.")
    name = upload.get("orig_name") if isinstance(upload, dict) else None
    return load_image(Path(path), name=name or Path(path).name)


def _notes(checked: CheckedImage, lookalike: Lookalike) -> str:
    lines = [f"_Input: {note}._" for note in checked.notes]
    if not lookalike.looks_like_cell:
        lines.insert(
            0,
            "⚠️ **This doesn't look like a C-NMC cell** (one segmented cell centred on a black background): "
            f"{'; '.join(lookalike.reasons)}. The models are out of their depth, so no verdict is given.",
        )
    return "\n\n".join(lines)


class _Refused(Exception):
    """A request that can't be served; its text is the message shown to the user."""


def _pick(models: Sequence[ServedModel], name: str | None) -> ServedModel:
    """The named model, or with no name the first available; never another model than the one asked for."""
    ready = available(models)
    if not ready:
        raise _Refused(NO_MODEL)
    if name is None:
        return ready[0]
    model = next((m for m in ready if m.name == name), None)
    if model is None:
        known = next((m for m in models if m.name == name), None)
        why = f"is {known.status}" if known else "is not one of this app's models"
        raise _Refused(f"❌ Model {name!r} {why}; choose one of {', '.join(m.name for m in ready)}.")
    return model


def _chosen(models: Sequence[ServedModel], members: Sequence[str] | None) -> list[ServedModel]:
    """The available models among ``members`` (every available one when None), in the registry's order."""
    ready = available(models)
    if not ready:
        raise _Refused(NO_MODEL)
    if members is None:
        return ready
    if not members:
        raise _Refused("❌ Tick at least one model.")
    names = {_pick(models, name).name for name in members}  # refuses a name it cannot serve
    return [m for m in ready if m.name in names]


def _model_and_image(
    models: Sequence[ServedModel], upload: dict | str | None, model_name: str | None
) -> tuple[ServedModel, CheckedImage]:
    try:
        checked = _read(upload)
    except ImageError as error:
        raise _Refused(f"❌ {error}") from None
    return _pick(models, model_name), checked


def _averaged(flips: bool) -> str:
    return ", averaged over 4 flips" if flips else ""


def classify(
    models: Sequence[ServedModel], upload: dict | str | None, model_name: str | None, flips: bool = FLIPS_DEFAULT
):
    """-> (gr.Label value, verdict markdown)."""
    try:
        model, checked = _model_and_image(models, upload, model_name)
    except _Refused as refusal:
        return None, str(refusal)
    p = predict(model, checked.image, flips=flips)
    lookalike = check_lookalike(checked.image)
    calibration = "uncalibrated" if model.loaded.temperature is None else "calibrated"
    text = (
        f"## {verdict(p.prob_all, lookalike.looks_like_cell)}\n\n{model.name}: P(ALL) = {p.prob_all:.3f} "
        f"({calibration}, uncertain band {UNCERTAIN_BAND[0]:.2f}-{UNCERTAIN_BAND[1]:.2f}) · {p.latency_ms:.0f} ms "
        f"({model.runner.precision}{_averaged(flips)})"
    )
    bars = {"ALL": p.prob_all, "HEM": 1 - p.prob_all} if lookalike.looks_like_cell else None
    return bars, "\n\n".join(filter(None, [text, shift_caveat([model]), _notes(checked, lookalike)]))


def explain(models: Sequence[ServedModel], upload: dict | str | None, model_name: str | None):
    """-> (Grad-CAM overlay for ALL or None, message)."""
    try:
        model, checked = _model_and_image(models, upload, model_name)
    except _Refused as refusal:
        return None, str(refusal)
    return gradcam.overlay(model.loaded, checked.image, ALL_INDEX), f"Grad-CAM of {model.name}. {GRADCAM_KEY}"


def compare(
    models: Sequence[ServedModel],
    upload: dict | str | None,
    flips: bool = FLIPS_DEFAULT,
    members: Sequence[str] | None = None,
):
    """-> (ensemble markdown, per-model table) for the chosen ``members`` (default: every available model)."""
    empty = pd.DataFrame(columns=["model", "P(ALL)", "verdict", "latency (ms)", "agrees with ensemble"])
    try:
        checked = _read(upload)
        ready = _chosen(models, members)
    except ImageError as error:
        return f"❌ {error}", empty
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
        text = f"## {consensus}\n\nOnly {ready[0].name} is {why}, so there is no ensemble: P(ALL) = {mean_all:.3f}"
    else:
        text = f"## Ensemble: {consensus}\n\nMean P(ALL) of {len(ready)} models = {mean_all:.3f}"
    text += f" · {total:.0f} ms in all{_averaged(flips)}"
    table = pd.DataFrame(rows, columns=empty.columns)
    return "\n\n".join(filter(None, [text, shift_caveat(ready), _notes(checked, lookalike)])), table


def explain_all(models: Sequence[ServedModel], upload: dict | str | None, members: Sequence[str] | None = None):
    """-> (gallery of (overlay, caption), message) for the chosen ``members`` (default: every available model)."""
    try:
        checked = _read(upload)
        ready = _chosen(models, members)
    except ImageError as error:
        return [], f"❌ {error}"
    except _Refused as refusal:
        return [], str(refusal)
    return [(gradcam.overlay(m.loaded, checked.image, ALL_INDEX), m.name) for m in ready], GRADCAM_KEY


def run_batch(
    models: Sequence[ServedModel],
    files: list[str] | None,
    flips: bool = FLIPS_DEFAULT,
    progress=gr.Progress(),  # noqa: B008 (gradio finds its progress bar by this default)
):
    """-> (table, per-patient summary, CSV path, message)."""
    ready = available(models)
    if not files or not ready:
        message = "Upload images or a .zip of them first." if ready else NO_MODEL
        return None, None, None, message
    total = count_batch(files)
    table = batch.predict_batch(
        ready,
        load_batch(files),
        total,
        lambda done, total: progress(done / total, desc=f"{done}/{total} files"),
        flips=flips,
    )
    failed = int((table["error"] != "").sum())
    unlike = int((table["verdict"] == NOT_A_CELL).sum())
    csv = batch.write_csv(table)
    done = len(table) - failed
    message = f"{done} file{'' if done == 1 else 's'} classified{_averaged(flips)}"
    message += f", {unlike} of them unlike a C-NMC cell (no verdict, see warning)" if unlike else ""
    message += f", {failed} could not be read" if failed else ""
    if total > batch.MAX_FILES:
        message += f" (only the first {batch.MAX_FILES} of {total} files are processed)"
    return table, batch.patient_summary(table), str(csv), message


def _clear_on_change(trigger: gr.components.Component, cleared: dict) -> None:
    """A new input makes the answers on screen someone else's: reset each output in ``cleared`` to its value."""
    trigger.change(lambda: tuple(cleared.values()), None, list(cleared), queue=False, api_visibility="private")


def _image_input() -> gr.Image:
    # type="filepath" and preprocess=False on the events: our loader, not gradio's, decodes untrusted uploads.
    return gr.Image(label="Cell image", type="filepath", sources=["upload", "clipboard"], height=320)


def build_demo(
    models: Sequence[ServedModel] | None = None,
    *,
    examples: Sequence[Path] = EXAMPLES,
    results_dir: Path = results.RESULTS_DIR,
    concurrency_limit: int = CONCURRENCY_LIMIT,
) -> gr.Blocks:
    """The app around ``models`` (default: the registry's, with bf16 checked against fp32 on real cells)."""
    examples = [str(p) for p in examples if p.is_file()]
    if models is None:
        models = load_models(parity_images=[load_image(p).image for p in PARITY_CELLS])
    names = [m.name for m in available(models)]
    concurrency = {"concurrency_id": "cpu", "concurrency_limit": concurrency_limit}
    # Image events skip gradio's decoding: our loader, not gradio's, decodes untrusted uploads.
    image_event = {"preprocess": False, **concurrency}
    status = "\n".join(f"- **{m.name}**: {m.status}" for m in models)
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
                    image = _image_input()
                    model_name = gr.Dropdown(names, value=names[0] if names else None, label="Model")
                    classify_button = gr.Button("Classify", variant="primary")
                    explain_button = gr.Button("Explain (Grad-CAM)")
                with gr.Column():
                    # The verdict below is the headline: inside the uncertain band it is not the top class.
                    label = gr.Label(label="Calibrated probability", num_top_classes=2, show_heading=False)
                    message = gr.Markdown()
                    heatmap = gr.Image(label="Grad-CAM", type="numpy", interactive=False)
                    explain_message = gr.Markdown()
            if examples:
                gr.Examples(examples, inputs=image, label=_examples_label(examples))
            _clear_on_change(image, {label: None, message: "", heatmap: None, explain_message: ""})
            classify_button.click(
                partial(classify, models),
                [image, model_name, flips],
                [label, message],
                api_name="classify",
                **image_event,
            )
            explain_button.click(
                partial(explain, models),
                [image, model_name],
                [heatmap, explain_message],
                api_name="explain",
                **image_event,
            )
        with gr.Tab("Compare"):
            with gr.Row():
                with gr.Column():
                    compare_image = _image_input()
                    members = gr.CheckboxGroup(
                        names, value=names, label="Models", info="The ensemble is the mean P(ALL) of those ticked."
                    )
                    compare_button = gr.Button("Compare", variant="primary")
                    explain_all_button = gr.Button("Grad-CAM for each")
                with gr.Column():
                    compare_message = gr.Markdown()
                    compare_table = gr.Dataframe(label="Per model", interactive=False)
            gallery = gr.Gallery(label="Grad-CAM", columns=4, height=320, object_fit="contain")
            gallery_message = gr.Markdown()
            if examples:
                gr.Examples(examples, inputs=compare_image, label=_examples_label(examples))
            _clear_on_change(
                compare_image, {compare_message: "", compare_table: None, gallery: [], gallery_message: ""}
            )
            compare_button.click(
                partial(compare, models),
                [compare_image, flips, members],
                [compare_message, compare_table],
                api_name="compare",
                **image_event,
            )
            explain_all_button.click(
                partial(explain_all, models),
                [compare_image, members],
                [gallery, gallery_message],
                api_name="explain_all",
                **image_event,
            )
        with gr.Tab("Batch"):
            files = gr.File(label="Images or .zip files", file_count="multiple", type="filepath")
            batch_button = gr.Button("Classify all", variant="primary")
            batch_message = gr.Markdown()
            no_files = pd.DataFrame(columns=batch.table_columns(available(models)))  # headers before the first run
            table = gr.Dataframe(no_files, label="P(ALL) per file", interactive=False)
            no_patients = batch.patient_summary(no_files)
            summary = gr.Dataframe(no_patients, label="Per patient (C-NMC file names)", interactive=False)
            csv = gr.File(label="CSV")
            _clear_on_change(files, {table: no_files, summary: no_patients, csv: None, batch_message: ""})
            batch_button.click(
                partial(run_batch, models),
                [files, flips],
                [table, summary, csv, batch_message],
                api_name="batch",
                **concurrency,
            )
        with gr.Tab("Models & results"):
            gr.Markdown(results.NEW_BATCH)
            gr.Markdown(results.comparison_markdown(results_dir))
            plots = results.result_plots(results_dir)
            if plots:
                gr.Gallery(plots, label="Plots", columns=2, height="auto")
            for model in models:
                with gr.Accordion(model.name, open=False):
                    gr.Markdown(results.model_card_markdown(model))
            gr.Markdown(f"{results.DATASET_CREDIT}\n\n{results.DISCLAIMER}")
    return demo.queue(max_size=MAX_QUEUE)


if __name__ == "__main__":
    build_demo().launch(max_file_size="50mb", show_error=True)
