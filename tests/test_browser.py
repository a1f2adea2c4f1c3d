"""The demo in a real headless Chromium: click an example, see a label; a bad upload, see why.

Needs Debian's chromium at /usr/bin/chromium (Playwright cannot download its
own browsers here); CI installs it. The screenshot goes to
test-artifacts/demo.png; docs/demo.png is a copy of one taken with the
packaged PACS model:

    QTDOG_DEMO_MODEL=default pytest -m browser tests/test_browser.py
    cp test-artifacts/demo.png docs/demo.png
"""

from __future__ import annotations

import os
import socket
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
]
TIMEOUT_MS = 30_000


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
def page(url: str):
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url)
        try:
            yield page
        finally:
            browser.close()


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
