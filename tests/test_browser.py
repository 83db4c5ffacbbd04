"""A real browser on the app: Playwright drives Debian's Chromium (``apt-get install chromium``), offline.

It uploads a cell in the Classify tab and reads the label shown, then screenshots the Compare tab into
``test-artifacts/``; and it pastes a cell from the clipboard. Skipped only where /usr/bin/chromium is missing.
"""

import base64
import io
from pathlib import Path

import pytest
import torch
from conftest import CNMC_ROOT
from PIL import Image

import app
from cnmc.backbones import create_model
from cnmc.export import export_model
from serving.predict import UNCERTAIN, load_models
from serving.registry import RegisteredModel

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
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
CELL = CNMC_ROOT / "training_data" / "fold_0" / "all" / "UID_11_10_1_all.bmp"

pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} is missing: apt-get install chromium")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    model = create_model("mobilenetv2", pretrained=False, img_size=64).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(0.02)  # unsaturated: different cells get different probabilities
    folder = export_model(model, tmp_path_factory.mktemp("m"))
    return load_models([RegisteredModel("Tiny", "mobilenetv2_100", folder, "cnmc-test/tiny")], precision="fp32")


@pytest.fixture(scope="module")
def url(models, tmp_path_factory):
    demo = app.build_demo(models, results_dir=tmp_path_factory.mktemp("results"))
    demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    yield demo.local_url
    demo.close()


def test_classify_a_cell_and_screenshot_compare(url):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url)
            page.locator("input[type=file]").first.set_input_files(str(CELL))
            page.get_by_role("button", name="Classify", exact=True).click()
            verdict = page.get_by_text("Tiny: P(ALL) = ")
            verdict.wait_for(timeout=60_000)
            heading = page.get_by_role("heading", level=2).first.inner_text()  # the verdict, the page's headline
            assert heading.strip() in ("ALL", "HEM", UNCERTAIN)
            page.get_by_label("Remove Image").first.click()  # the answer must not stay beside the next image
            verdict.wait_for(state="detached", timeout=30_000)
            page.get_by_role("tab", name="Compare").click()
            page.locator("input[type=file]").nth(1).set_input_files(str(CELL))
            page.get_by_role("button", name="Compare", exact=True).click()
            page.get_by_text("Only Tiny is available, so there is no ensemble").wait_for(timeout=60_000)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=ARTIFACTS / "compare_tab.png", full_page=True)
        finally:
            browser.close()
    assert (ARTIFACTS / "compare_tab.png").stat().st_size > 10_000


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
            page.get_by_role("button", name="Classify", exact=True).click()
            verdict = page.get_by_text("Tiny: P(ALL) = ")
            verdict.wait_for(timeout=60_000)
            # The same pixels as the file: the same probability, whatever the latency.
            assert verdict.inner_text().split(" · ")[0] == expected.split("\n\n")[1].split(" · ")[0]
        finally:
            browser.close()
