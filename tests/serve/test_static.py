"""The page at "/" in headless Chromium: predictions, attention charts, the CAM overlay, gate
values on hover, bridge sources."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from serve_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    FASHION,
    encode,
    fashion_test_images,
    make_checkpoint,
    sample_png,
)

from serve.testing import server

if TYPE_CHECKING:
    from playwright.sync_api import Page, Route

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian's chromium is not installed (apt-get install chromium)",
    ),
]
SCREENSHOT = os.environ.get("ECAB_PAGE_SCREENSHOT")


@contextlib.contextmanager
def chromium_page(tmp_path: Path, **options: Any) -> Iterator[Page]:
    """A page of a headless Chromium whose profile lives in tmp_path, closed on the way out."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            env={**os.environ, "HOME": str(tmp_path)},
        )
        try:
            yield browser.new_page(**options)
        finally:
            browser.close()


def open_page(page: Page, url: str) -> None:
    """Load the page and wait until it has described the model (its first request)."""
    page.goto(url, timeout=30_000)
    page.wait_for_function(
        "document.getElementById('model').textContent.includes('parameters')", timeout=30_000
    )


def upload(page: Page, path: Path, wait_for: str | None) -> None:
    """Choose a file on the page; with `wait_for`, until the status line starts with it."""
    page.set_input_files("#file", str(path))
    if wait_for is not None:
        page.wait_for_function(
            f"document.getElementById('status').textContent.startsWith({wait_for!r})",
            timeout=30_000,
        )


ALPHA = """() => { const c = document.getElementById('cam');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }"""


def test_page_in_headless_chromium(experiment: Path, tmp_path: Path) -> None:
    png = tmp_path / "shoe.png"
    png.write_bytes(sample_png(0))
    with server(experiment) as url:
        api = httpx.post(
            f"{url}/predict",
            files=[("files", ("shoe.png", png.read_bytes(), "image/png"))],
            timeout=30,
        ).json()
        expected = api["predictions"][0]
        with chromium_page(tmp_path) as page:
            open_page(page, f"{url}/")
            upload(page, png, wait_for="done")
            top1 = page.text_content("#top1")
            rows = page.locator("#top li").count()
            modules = page.eval_on_selector_all(
                ".attention-chart", "els => els.map(e => e.dataset.module)"
            )
            # Count painted bar pixels in each module's channel chart.
            painted = page.eval_on_selector_all(
                ".attention-chart canvas.channel",
                """els => els.map(c => {
                    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                    let n = 0;
                    for (let i = 0; i < d.length; i += 4)
                        if (d[i] === 0x2f && d[i + 1] === 0x6f && d[i + 2] === 0xed) n++;
                    return n; })""",
            )
            spatial = page.locator(".attention-chart canvas.spatial").count()
            status = page.text_content("#status")
    assert top1 == expected["top"][0]["label"]
    assert rows == 5
    assert modules == list(expected["attention"])
    assert len(painted) == len(modules) and all(n > 0 for n in painted), painted
    assert spatial == len(modules)  # CBAM: a spatial map per module
    assert status.startswith("done")


def test_page_overlays_the_cam_shows_gate_values_and_bridge_sources(tmp_path: Path) -> None:
    # Three classes (an image folder can have any number): fewer than the page's five rows.
    three = dataclasses.replace(FASHION, classes=FASHION.classes[:3])
    ckpt = make_checkpoint(
        tmp_path / "ecab",
        "ecab",
        three,
        seed=7,
        attention_kwargs={"layers": "last2", "fusion": "concat"},
    )
    png = tmp_path / "coat.png"
    png.write_bytes(encode(fashion_test_images(7)[6][0]))
    with server(ckpt) as url:
        expected = httpx.post(
            f"{url}/predict?cam=true",
            files=[("files", ("coat.png", png.read_bytes(), "image/png"))],
            timeout=30,
        ).json()["predictions"][0]
        with chromium_page(tmp_path, viewport={"width": 1000, "height": 900}) as page:
            open_page(page, f"{url}/")
            upload(page, png, wait_for="done")
            rows = page.locator("#top li").count()
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
    assert rows == len(expected["top"]) == 3
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


STATIC = Path(__file__).resolve().parents[2] / "serve" / "static"


def answer_of(label: str) -> dict[str, Any]:
    """/predict's answer for one image whose top class is `label`, with a 2×2 CAM."""
    top = [{"label": label, "index": 0, "probability": 0.9}]
    cam = [[0.0, 1.0], [0.5, 0.0]]
    return {"model": "m", "predictions": [
        {"name": f"{label}.png", "top": top, "attention": {}, "cam": cam, "cam_shape": [2, 2]}
    ]}  # fmt: skip


@contextlib.contextmanager
def canned_page(tmp_path: Path, on_predict: Callable[[Route], None]) -> Iterator[Page]:
    """The page with no model server behind it: its files and /model answered from here, and
    every /predict handed to `on_predict`."""
    info = {"architecture": "resnet8", "attention": "ecab", "parameters": 1,
            "input_shape": [1, 2, 2], "classes": ["coat"], "metrics": {}}  # fmt: skip

    def answer(route: Route) -> None:
        path = route.request.url.split("://", 1)[1].partition("/")[2].partition("?")[0]
        if path in ("", "static/app.js"):
            file = STATIC / ("index.html" if not path else "app.js")
            kind = "text/html" if not path else "application/javascript"
            route.fulfill(status=200, body=file.read_text(), content_type=kind)
        elif path == "model":
            route.fulfill(status=200, body=json.dumps(info), content_type="application/json")
        else:
            on_predict(route)

    with chromium_page(tmp_path) as page:
        page.route("http://page.test/**", answer)
        open_page(page, "http://page.test/")
        yield page


def write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def fulfil(route: Route, status: int, body: dict[str, Any]) -> None:
    route.fulfill(status=status, body=json.dumps(body), content_type="application/json")


def test_a_failed_upload_leaves_no_earlier_cam_over_the_new_image(tmp_path: Path) -> None:
    """A first image gets its CAM, the server refuses a second one: the first image's map
    must not stay over the second."""
    answers = iter([(200, answer_of("coat")), (422, {"detail": "image 0 is not an image"})])
    displayed = "() => getComputedStyle(document.getElementById('cam')).display"
    with canned_page(tmp_path, lambda route: fulfil(route, *next(answers))) as page:
        upload(page, write(tmp_path / "a.png", sample_png(0)), wait_for="done")
        shown_first = page.evaluate(displayed)
        upload(page, write(tmp_path / "b.png", b"not an image"), wait_for="error")
        shown_second = page.evaluate(displayed)
        status = page.text_content("#status")
    assert shown_first == "block"
    assert "422" in status
    assert shown_second == "none"  # was "block": a.png's map over b.png


def test_a_late_answer_to_an_earlier_upload_is_not_drawn_over_a_newer_one(tmp_path: Path):
    """The first image's answer is held back until the second's has been drawn."""
    held: list[Route] = []

    def on_predict(route: Route) -> None:
        if not held:
            held.append(route)  # answered below, late
        else:
            fulfil(route, 200, answer_of("bag"))

    with canned_page(tmp_path, on_predict) as page:
        upload(page, write(tmp_path / "a.png", sample_png(0)), wait_for=None)
        for _ in range(600):  # until the first request is held (Playwright serves it here)
            if held:
                break
            page.wait_for_timeout(50)
        upload(page, write(tmp_path / "b.png", sample_png(1)), wait_for="done")
        with contextlib.suppress(Exception):  # the page aborted it: nothing left to answer
            fulfil(held[0], 200, answer_of("coat"))
        page.wait_for_timeout(500)  # time for a late answer to be drawn, if it were
        top1, status = page.text_content("#top1"), page.text_content("#status")
    assert (top1, status) == ("bag", "done: b.png")  # was ("coat", "done: a.png")
