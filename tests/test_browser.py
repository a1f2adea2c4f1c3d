"""The demo in a real headless Chromium: an example, a webcam frame and a pasted image each get a
label; a bad upload says why.

Needs Debian's chromium at /usr/bin/chromium (Playwright cannot download its
own browsers here); CI installs it. The screenshot goes to
test-artifacts/demo.png; docs/demo.png is a copy of one taken with the
packaged PACS model:

    QTDOG_DEMO_MODEL=default pytest -m browser tests/test_browser.py
    cp test-artifacts/demo.png docs/demo.png
"""

from __future__ import annotations

import base64
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.browser,
    # gradio's queue uses pandas options that pandas 3 deprecates; not ours to fix.
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting:Warning"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated:Warning"),
]

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        "no Chromium at /usr/bin/chromium (apt-get install chromium)", allow_module_level=True
    )
pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")

from PIL import Image  # noqa: E402

from qtdog_sdk import QTDoGEnsemble  # noqa: E402
from qtdog_serve.app import build_app  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # A synthetic camera (a moving test pattern), granted without a permission prompt.
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]
TIMEOUT_MS = 30_000
EXAMPLE_PNG = ROOT / "examples" / "sketch_dog.png"


@pytest.fixture(scope="module")
def model(request: pytest.FixtureRequest) -> QTDoGEnsemble:
    # QTDOG_DEMO_MODEL (a model directory or Hub id, or "default" for the packaged
    # model) points the test at a real model, e.g. to retake docs/demo.png.
    choice = os.environ.get("QTDOG_DEMO_MODEL")
    if choice:
        return QTDoGEnsemble.from_pretrained(None if choice == "default" else choice)
    return QTDoGEnsemble.from_pretrained(request.getfixturevalue("tiny_repo"))


@pytest.fixture(scope="module")
def url(model: QTDoGEnsemble):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo = build_app(model, examples_dir=ROOT / "examples")
    _, local_url, _ = demo.launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True
    )
    try:
        yield local_url
    finally:
        demo.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def page(browser, url: str):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    yield page
    page.close()


@pytest.fixture
def media_page(browser, url: str):
    """A fresh page allowed to use the (fake) camera and the clipboard."""
    context = browser.new_context(
        viewport={"width": 1280, "height": 1000},
        permissions=["camera", "clipboard-read", "clipboard-write"],
    )
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    yield page
    context.close()


@contextmanager
def screenshot_on_failure(page, name: str) -> Iterator[None]:
    """Keep what the page showed when a check failed: test-artifacts/<name>-failure.png."""
    try:
        yield
    except BaseException:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{name}-failure.png"), full_page=True)
        raise


def top_label(page) -> str:
    """The label gr.Label shows in large type (the ensemble's prediction)."""
    return page.locator("#prediction [data-testid=label-output-value]").inner_text().strip()


def test_click_an_example_shows_a_label_and_the_member_votes(page, model: QTDoGEnsemble):
    page.locator("button.gallery-item").first.click()
    details = page.locator("#details")
    sync_api.expect(details).to_contain_text("member", timeout=TIMEOUT_MS)
    shown = page.locator("#prediction").inner_text()
    assert any(label in shown for label in model.labels), shown
    assert "%" in shown
    sync_api.expect(page.locator("#model-info")).to_contain_text("Ensemble members")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo.png"), full_page=True)
    assert (ARTIFACTS / "demo.png").stat().st_size > 10_000


def test_a_corrupt_upload_shows_a_readable_message(page, tmp_path: Path):
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    page.locator("#input-image input[type=file]").set_input_files(str(bad))
    sync_api.expect(page.locator("#details")).to_contain_text(
        "Could not classify this image", timeout=TIMEOUT_MS
    )
    sync_api.expect(page.locator("#details")).to_contain_text("corrupt.png")


def test_a_webcam_frame_is_classified(media_page, model: QTDoGEnsemble):
    page = media_page
    image = page.locator("#input-image")
    with screenshot_on_failure(page, "webcam"):
        image.get_by_role("button", name="Capture from camera").click()
        image.get_by_role("button", name="Click to Access Webcam").click()
        page.wait_for_function(  # the fake camera is streaming frames
            "() => { const v = document.querySelector('#input-image video');"
            " return v !== null && v.readyState >= 2 && v.videoWidth > 0; }"
        )
        width, height = page.evaluate(
            "() => { const v = document.querySelector('#input-image video');"
            " return [v.videoWidth, v.videoHeight]; }"
        )
        image.get_by_role("button", name="capture photo").click()
        sync_api.expect(page.locator("#details")).to_contain_text("member", timeout=TIMEOUT_MS)
        assert top_label(page) in model.labels
        # What the input now shows, and what was classified, is a frame of the camera.
        shown = image.locator("img").first
        sync_api.expect(shown).to_be_visible()
        size = shown.evaluate("img => [img.naturalWidth, img.naturalHeight]")
        assert size == [width, height], (size, width, height)


def test_a_pasted_image_is_classified(media_page, model: QTDoGEnsemble):
    page = media_page
    image = page.locator("#input-image")
    with screenshot_on_failure(page, "paste"):
        page.bring_to_front()  # the clipboard API wants a focused document
        page.evaluate(
            """async (b64) => {
                const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                const blob = new Blob([bytes], { type: "image/png" });
                await navigator.clipboard.write([new ClipboardItem({ "image/png": blob })]);
            }""",
            base64.b64encode(EXAMPLE_PNG.read_bytes()).decode(),
        )
        image.get_by_role("button", name="Paste from clipboard").click()
        sync_api.expect(page.locator("#details")).to_contain_text("member", timeout=TIMEOUT_MS)
        # The pasted image is what the input shows and what was classified (the SDK's label).
        shown = image.locator("img").first
        sync_api.expect(shown).to_be_visible()
        size = shown.evaluate("img => [img.naturalWidth, img.naturalHeight]")
        with Image.open(EXAMPLE_PNG) as original:
            assert size == list(original.size), size
        assert top_label(page) == model.predict(EXAMPLE_PNG).label
