"""The HTML report as a reader sees it: opened from disk in a real Chromium, with no console
error, its Gantt chart visible, one bar per timeline entry, and the bars really drawn.

Chromium is Debian's (`make test` installs it); Playwright only drives it, never downloads one.
"""

from __future__ import annotations

import shutil
import struct
import zlib
from collections import Counter
from pathlib import Path

from playwright.async_api import ConsoleMessage, Error, async_playwright

from domain.review import EntryStatus
from drctl.history_reader import read_history
from drctl.report_gantt import AXIS_HEIGHT, LABEL_WIDTH, ROW_HEIGHT, STATUS_COLOURS
from drctl.report_render import render_html
from tests.unit.review.recorded import UNPLANNED, history

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PAGE_TIMEOUT_MS = 30_000


async def test_the_html_report_opens_in_chromium_with_a_drawn_gantt_chart(tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "no chromium on PATH: `make test` installs Debian's (apt-get install chromium)"
    review = read_history(history(UNPLANNED))
    page_path = tmp_path / "report.html"
    page_path.write_text(render_html(review), encoding="utf-8")
    shot_path = tmp_path / "gantt.png"

    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            problems.append(f"console {message.type}: {message.text}")

    def on_page_error(error: Error) -> None:
        problems.append(f"page error: {error}")

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            page.on("console", on_console)
            page.on("pageerror", on_page_error)
            await page.goto(page_path.as_uri(), wait_until="load")
            gantt = page.locator("svg.gantt")
            await gantt.wait_for(state="visible")
            bars = await gantt.locator(".bar").count()
            steps = await gantt.locator(".bar").evaluate_all(
                "bars => bars.map(b => b.dataset.step)"
            )
            png = await gantt.screenshot(path=str(shot_path))
        finally:
            await browser.close()

    assert problems == []
    assert bars == len(review.timeline) == 15
    assert steps[1] == "confirm_primary_down"
    assert shot_path.read_bytes() == png
    width, height, pixels = decode_png(png)
    # The SVG's own size; the element may sit on a fractional pixel, adding a row.
    assert width == 1130 and height - (AXIS_HEIGHT + ROW_HEIGHT * 15 + 36) in (0, 1)
    assert len(Counter(pixels)) > 20, "a picture of bars and labels has more than a few colours"
    green = _rgb(STATUS_COLOURS[EntryStatus.COMPLETED])
    rows_with_a_bar = {
        (y - AXIS_HEIGHT) // ROW_HEIGHT
        for y in range(AXIS_HEIGHT, height)
        for x in range(LABEL_WIDTH, width)
        if pixels[y * width + x] == green
    }
    # Every timeline row has a completed-green bar drawn in it, and nothing else is that green
    # but the legend's swatch below the rows.
    assert set(range(15)) <= rows_with_a_bar <= set(range(17))
    confirm_row = AXIS_HEIGHT + ROW_HEIGHT * 1 + ROW_HEIGHT // 2
    confirm_pixels = sum(pixels[confirm_row * width + x] == green for x in range(width))
    # confirm_primary_down ran about 2.07 s of a 6.98 s run drawn 720 px wide.
    assert 180 < confirm_pixels < 250


def decode_png(data: bytes) -> tuple[int, int, list[tuple[int, int, int]]]:
    """The RGB pixels of an 8-bit RGB or RGBA PNG, as Chromium writes screenshots."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    offset, idat, header = 8, b"", b""
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        offset += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6), f"unexpected PNG format: depth {depth} colour {colour}"
    channels = 3 if colour == 2 else 4
    stride = width * channels
    raw = zlib.decompress(idat)
    previous = bytearray(stride)
    pixels: list[tuple[int, int, int]] = []
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            upper_left = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                line[i] = (line[i] + _paeth(left, up, upper_left)) & 0xFF
        pixels += [(line[x], line[x + 1], line[x + 2]) for x in range(0, stride, channels)]
        previous = line
    return width, height, pixels


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)
