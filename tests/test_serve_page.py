"""The page at "/" in headless Chromium: the CAM overlay, gate values on hover, bridge sources."""

from __future__ import annotations

import math
import os
from pathlib import Path

import httpx
import pytest
from serve_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    encode,
    fashion_test_images,
    make_checkpoint,
    server,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed"),
]
# Set to a path to keep a screenshot of the page after the upload (the README's is one).
SCREENSHOT = os.environ.get("ECAB_PAGE_SCREENSHOT")

ALPHA = """() => { const c = document.getElementById('cam');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }"""


def test_page_overlays_the_cam_shows_gate_values_and_bridge_sources(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    ckpt = make_checkpoint(
        tmp_path / "ecab", "ecab", seed=7, attention_kwargs={"layers": "last2", "fusion": "concat"}
    )
    png = tmp_path / "coat.png"
    png.write_bytes(encode(fashion_test_images(7)[6][0]))
    with server(ckpt) as url:
        expected = httpx.post(
            f"{url}/predict?top_k=5&cam=true",
            files=[("files", ("coat.png", png.read_bytes(), "image/png"))],
            timeout=30,
        ).json()["predictions"][0]
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
                env={**os.environ, "HOME": str(tmp_path)},
            )  # fmt: skip
            try:
                page = browser.new_page(viewport={"width": 1000, "height": 900})
                page.goto(f"{url}/", timeout=30_000)
                page.wait_for_function(
                    "document.getElementById('model').textContent.includes('parameters')",
                    timeout=30_000,
                )
                page.set_input_files("#file", str(png))
                page.wait_for_function(
                    "document.getElementById('status').textContent.startsWith('done')",
                    timeout=30_000,
                )
                size = page.eval_on_selector("#cam", "c => [c.height, c.width]")
                painted = page.evaluate(ALPHA)
                shown = page.eval_on_selector("#cam", "c => getComputedStyle(c).display")
                page.fill("#cam-opacity", "20")
                opacity = page.eval_on_selector("#cam", "c => c.style.opacity")
                if SCREENSHOT:
                    page.fill("#cam-opacity", "55")
                    page.screenshot(path=SCREENSHOT, full_page=True)
                page.uncheck("#cam-toggle")
                hidden = page.eval_on_selector("#cam", "c => getComputedStyle(c).display")
                # Hover the first gate's chart over its first and its last channel.
                chart = page.locator(".attention-chart canvas.channel").first
                box = chart.bounding_box()
                chart.hover(position={"x": 1, "y": box["height"] / 2})
                first = page.locator(".attention-chart .gate-value").first.text_content()
                chart.hover(position={"x": box["width"] - 1, "y": box["height"] / 2})
                last = page.locator(".attention-chart .gate-value").first.text_content()
                sources = page.eval_on_selector_all(
                    ".attention-chart",
                    """els => Object.fromEntries(els.map(e => [e.dataset.module,
                        [...e.querySelectorAll('.source')].map(r => r.dataset.layer)]))""",
                )
            finally:
                browser.close()
    assert size == expected["cam_shape"] == [7, 7]
    # The overlay's see-through cells are exactly the map's zeros (alpha = round(255 v)).
    assert painted == sum(math.floor(255 * v + 0.5) > 0 for row in expected["cam"] for v in row)
    assert painted > 0
    assert (shown, opacity, hidden) == ("block", "0.2", "none")
    channel = expected["attention"]["stage1.block0.attn"]["channel"]
    assert first == f"channel 0: {channel[0]:.3f}"
    assert last == f"channel {len(channel) - 1}: {channel[-1]:.3f}"
    assert sources == {n: list(w["sources"]) for n, w in expected["attention"].items()}
    assert sources["stage3.block0.attn"][-1] == "stage3.block0.conv2"
