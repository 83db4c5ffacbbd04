"""A real browser on the app: Playwright drives Debian's Chromium (``apt-get install chromium``), offline.

The app is served as ``python app.py`` serves it (``app.serve``, with its CSS), around a tiny model, with the
committed results. Chromium is 1280 px wide, as a new user's would be. Each tab is checked by what a user sees:
element sizes, every image decoded (naturalWidth > 0) and whole, words unbroken, text. Screenshots go to the
test's temporary folder. Skipped only where /usr/bin/chromium is missing.
"""

import base64
import io
from pathlib import Path

import pytest
import torch
from conftest import CELLS, CNMC_ROOT
from PIL import Image

import app
from cnmc.backbones import create_model
from cnmc.export import export_model
from serving import results
from serving.predict import UNCERTAIN, load_models
from serving.registry import RegisteredModel

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 1000}
CELL = CNMC_ROOT / "training_data" / "fold_0" / "all" / "UID_11_10_1_all.bmp"
WAIT_MS = 60_000

pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} is missing: apt-get install chromium")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("mobilenetv2", pretrained=False, img_size=64).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(0.02)  # unsaturated: near 0.5, inside the uncertain band, and still per cell
    folder = export_model(model, tmp_path_factory.mktemp("m"))
    return load_models([RegisteredModel("Tiny", "mobilenetv2_100", folder, "cnmc-test/tiny")], precision="fp32")


@pytest.fixture(scope="module")
def url(models):
    demo = app.build_demo(models)  # the committed results, as the app shows them
    app.serve(demo, server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    yield demo.local_url
    demo.close()


@pytest.fixture
def page(url):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(url)
            yield page
        finally:
            browser.close()


def _box(locator) -> dict:
    box = locator.bounding_box()
    assert box is not None, f"{locator} is not shown"
    return box


def _decoded(image) -> dict:
    """The image's decoded and shown size; it must have loaded, and be shown whole (not cropped by its frame)."""
    image.scroll_into_view_if_needed()
    image.evaluate("img => img.complete || new Promise((done) => img.addEventListener('load', done))")
    size = image.evaluate(
        """img => {
            const shown = img.getBoundingClientRect(), frame = img.parentElement.getBoundingClientRect();
            return {natural: img.naturalWidth, naturalHeight: img.naturalHeight, width: shown.width,
                    height: shown.height, fit: getComputedStyle(img).objectFit,
                    block: img.closest(".block")?.getBoundingClientRect().width,
                    inside: shown.left >= frame.left - 1 && shown.right <= frame.right + 1
                        && shown.top >= frame.top - 1 && shown.bottom <= frame.bottom + 1};
        }"""
    )
    assert size["natural"] > 0, f"{image} is a broken image"
    assert size["inside"] or size["fit"] == "contain", f"{image} is cropped by its frame: {size}"
    return size


def _no_broken_images(page) -> int:
    """Every image shown on the page has decoded; returns how many there are."""
    shown = [image for image in page.locator("img").all() if image.is_visible()]
    for image in shown:
        _decoded(image)
    return len(shown)


def _words_broken(page, selector: str) -> list[str]:
    """The words inside ``selector`` that the browser split across two lines (a no-break space joins its words)."""
    return page.locator(selector).evaluate(
        """root => {
            const broken = [];
            const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
            for (let node = walker.nextNode(); node; node = walker.nextNode()) {
                // A word, or a hyphenated word's part: a line may end after a hyphen ("gradient-"), not inside.
                for (const match of node.textContent.matchAll(/[^ \\t\\n-]+-?/g)) {
                    const range = document.createRange();
                    range.setStart(node, match.index);
                    range.setEnd(node, match.index + match[0].length);
                    const tops = new Set([...range.getClientRects()].map((r) => Math.round(r.top)));
                    if (tops.size > 1) broken.push(match[0]);
                }
            }
            return broken;
        }"""
    )


def _tab(page, name: str):
    page.get_by_role("tab", name=name).click()
    return page.locator(".tabitem:visible")


def test_classify_shows_the_verdict_a_readable_grad_cam_and_what_uncertain_means(page, tmp_path):
    band = results.uncertain_band()
    page.locator("input[type=file]").first.set_input_files(str(CELL))
    page.locator("#classify-image img").first.wait_for(timeout=WAIT_MS)  # uploaded: a click now sends it
    page.get_by_role("button", name="Classify", exact=True).click()
    verdict = page.get_by_text("Tiny: P(ALL) = ")
    verdict.wait_for(timeout=WAIT_MS)
    heading = page.get_by_role("heading", level=2).first.inner_text()  # the verdict, the page's headline
    assert heading.strip() == UNCERTAIN
    assert page.get_by_text("Too close to call").first.is_visible()
    explainer = page.get_by_text("means the calibrated P(ALL) lies between 0.35 and 0.65").first
    assert explainer.is_visible() and f"{band.share:.0%} of cells" in explainer.inner_text()

    page.get_by_role("button", name="Explain (Grad-CAM)").click()
    page.get_by_text("of the map fell outside the cell").first.wait_for(timeout=WAIT_MS)
    overlay = page.locator("#gradcam img").first
    overlay.wait_for(timeout=WAIT_MS)
    overlay = _decoded(overlay)
    # The cell beside its map: twice as wide as high, filling most of its panel (it was 130 px wide).
    assert overlay["natural"] == 2 * overlay["naturalHeight"]
    assert overlay["width"] >= 0.8 * overlay["block"] and overlay["height"] <= app.PANEL_HEIGHT + 1
    _no_broken_images(page)
    page.screenshot(path=tmp_path / "classify.png", full_page=True)

    page.get_by_label("Remove Image").first.click()  # the answer must not stay beside the next image
    verdict.wait_for(state="detached", timeout=30_000)


def test_compare_table_gallery_and_a_tiff_upload(page, tmp_path):
    tab = _tab(page, "Compare")
    headers = tab.get_by_role("columnheader")
    headers.first.wait_for()
    assert [h.strip() for h in headers.all_inner_texts()] == app.COMPARE_COLUMNS  # before any run, not 1 | 2 | 3

    tiff = tmp_path / "UID_11_10_1_all.tiff"
    Image.open(CELL).save(tiff)
    tab.locator("input[type=file]").first.set_input_files(str(tiff))
    preview = page.locator("#compare-image img").first
    preview.wait_for(timeout=WAIT_MS)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=preview.element_handle(), timeout=WAIT_MS)
    assert preview.get_attribute("src").endswith(".png")  # browsers show no TIFF: a PNG copy is shown
    assert _decoded(preview)["natural"] == 450

    page.get_by_role("button", name="Compare", exact=True).click()
    page.get_by_text("Only Tiny is available, so there is no ensemble").wait_for(timeout=WAIT_MS)
    table = _box(tab.get_by_role("grid").first)
    cells = tab.get_by_role("row").nth(1).get_by_role("gridcell")  # row 0 holds the headers
    assert [c.strip() for c in cells.all_inner_texts()][2:5:2] == [UNCERTAIN, "yes"]  # the longest verdict there is
    for cell in cells.all():  # every column, the fifth too, whole inside the table's frame
        box = _box(cell)
        assert box["x"] + box["width"] <= table["x"] + table["width"] + 1
        assert cell.evaluate("e => e.scrollWidth <= e.clientWidth + 1"), f"{cell.inner_text()} is cut off"

    page.get_by_role("button", name="Grad-CAM for each").click()
    gallery = tab.locator("#gradcam-gallery")
    picture = gallery.locator("img").first
    picture.wait_for(timeout=WAIT_MS)
    shown = _decoded(picture)
    thumbnail = _box(gallery.locator(".thumbnail-item").first)
    # One model's picture is not blown up to the full width and cropped to a strip: half the width, whole.
    assert thumbnail["width"] <= 0.55 * _box(gallery)["width"]
    assert thumbnail["width"] == pytest.approx(2 * thumbnail["height"], rel=0.05)
    assert shown["fit"] == "contain" and shown["height"] <= thumbnail["height"] + 1
    assert _box(gallery)["height"] <= thumbnail["height"] + 100  # no empty screen below it
    _no_broken_images(page)
    page.screenshot(path=tmp_path / "compare.png", full_page=True)


def test_batch_of_twenty_files_keeps_the_results_in_view(page, tmp_path):
    tab = _tab(page, "Batch")
    files = [str(p) for p in CELLS[:20]]
    tab.locator("input[type=file][multiple]").first.set_input_files(files)
    tab.get_by_text(Path(files[0]).name).first.wait_for(timeout=WAIT_MS)
    upload = _box(page.locator("#batch-files"))
    assert upload["height"] <= 320  # the list of 20 scrolls inside, instead of filling two screens
    button = _box(page.get_by_role("button", name="Classify all"))
    assert button["y"] + button["height"] <= VIEWPORT["height"]
    button = page.get_by_role("button", name="Classify all")
    button.click()
    page.get_by_text("20 files classified").wait_for(timeout=WAIT_MS)
    assert _box(tab.get_by_role("grid").first)["y"] <= VIEWPORT["height"]  # the results start on the first screen
    page.screenshot(path=tmp_path / "batch.png", full_page=True)


def test_results_table_marks_the_shipped_model_says_what_its_figures_are_and_breaks_no_word(page, tmp_path):
    tab = _tab(page, "Models & results")
    table = tab.locator("#comparison table")
    table.wait_for()
    assert _words_broken(page, "#comparison table") == []  # not "Accu/racy"
    shipped = table.locator("tbody tr", has_text=results.SHIPPED_MARK)
    assert shipped.count() == 1 and shipped.locator("td").first.inner_text().endswith("MobileNetV2")
    caption = tab.locator("p", has_text="mean ± sd over runs").first
    assert "pooled out-of-fold" in caption.inner_text() and "0.828" in caption.inner_text()
    plot = tab.locator(".result-plot", has_text="roc_overlay").locator("img").first
    shown = _decoded(plot)
    assert shown["height"] >= 500 and shown["width"] >= 400  # whole and readable, not a cropped strip
    assert _no_broken_images(page) >= 1
    page.screenshot(path=tmp_path / "results.png", full_page=True)


def test_paste_a_cell_from_the_clipboard(url, models):
    sync_api = pytest.importorskip("playwright.sync_api")
    png = io.BytesIO()
    Image.open(CELL).save(png, "PNG")
    _, expected = app.classify(models, str(CELL), "Tiny")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            context = browser.new_context()
            context.grant_permissions(["clipboard-read", "clipboard-write"], origin=url.rstrip("/"))
            page = context.new_page()
            page.goto(url)
            page.evaluate(
                """async (data) => {
                    const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
                    const item = new ClipboardItem({"image/png": new Blob([bytes], {type: "image/png"})});
                    await navigator.clipboard.write([item]);
                }""",
                base64.b64encode(png.getvalue()).decode(),
            )
            page.get_by_label("Paste from clipboard").first.click()
            page.locator("#classify-image img").first.wait_for(timeout=WAIT_MS)
            page.get_by_role("button", name="Classify", exact=True).click()
            verdict = page.get_by_text("Tiny: P(ALL) = ")
            verdict.wait_for(timeout=WAIT_MS)
            # The same pixels as the file: the same probability, whatever the latency.
            assert verdict.inner_text().split(" · ")[0] == expected.split("\n\n")[1].split(" · ")[0]
        finally:
            browser.close()
