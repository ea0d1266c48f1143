"""The annotator at /annotate, driven in headless Chromium (Debian's) over loopback.

A reader signs in through the /login form, opens the case from the worklist,
scrolls slices, zooms and pans, draws a box, picks the lesion label by its
shortcut key, paints a brush stroke (and undoes a stray one), outlines a polygon
and submits; the API then holds the
annotations, in image pixels, submitted by that reader. A screenshot is left in
``$MIDA_TEST_ARTIFACTS_DIR`` (``.ci/run`` sets it) or the test's temporary folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from mida.annotations import store
from mida.annotations.schema import parse_schema
from mida.api.annotations import decode_rle_slices
from mida.deid.pseudonyms import Pseudonymizer
from mida.node import Node
from tests.annotations.conftest import SCHEMA, ingest_ct
from tests.conftest import REQUIRE_SERVICES
from tests.dicomweb.conftest import free_port, serve
from tests.factories import bearer, make_token

CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_MS = 20_000


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        if REQUIRE_SERVICES:
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium to run the browser test")
    return CHROMIUM


def _artifacts(tmp_path: Path) -> Path:
    out = Path(os.environ.get("MIDA_TEST_ARTIFACTS_DIR") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _screen(page: Any, image_xy: tuple[float, float]) -> tuple[float, float]:
    """Page coordinates of an image-pixel position, from the viewer's current transform."""
    t = page.eval_on_selector(
        "[data-testid=viewer-canvas]",
        "c => { const r = c.getBoundingClientRect(); return [r.left, r.top, "
        "Number(c.dataset.scale), Number(c.dataset.offsetX), Number(c.dataset.offsetY)]; }")
    left, top, scale, ox, oy = t
    return left + ox + image_xy[0] * scale, top + oy + image_xy[1] * scale


def test_annotate_in_a_browser(node: Node, tmp_path: Path, chromium: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    info = ingest_ct(node, tmp_path / "ct", "ct", slices=8, size=64)
    with node.catalog().session() as s:
        store.add_schema(s, parse_schema(SCHEMA))
    token = make_token(node, "ann", "annotator", "write", "ct", grant="write")
    p = Pseudonymizer(node.key())
    series, sops = p.uid(info["series"]), [p.uid(u) for u in info["sops"]]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    rendered: list[str] = []
    problems: list[str] = []

    with serve(node, port), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.set_default_timeout(TIMEOUT_MS)
            page.on("request", lambda r: rendered.append(r.url) if "/rendered" in r.url else None)
            page.on("console", lambda m: problems.append(m.text)
                    if m.type == "error" and not m.text.startswith("Failed to load") else None)
            page.on("response", lambda r: problems.append(f"{r.status} {r.url}")
                    if r.status >= 400 and "/login" not in r.url and "favicon" not in r.url
                    else None)  # the sign-in form answers 401 by design
            page.on("pageerror", lambda e: problems.append(str(e)))

            # sign in: /annotate sends an unauthenticated visitor to the login form
            page.goto(f"{base}/annotate")
            assert page.url == f"{base}/login?next=/annotate"
            page.fill("#token", token)
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/annotate")
            page.wait_for_selector("body[data-ready=true]")
            expect(page.get_by_test_id("user")).to_have_text("ann")

            # open the case: the middle slice of 8 (index 4) is shown
            def frame(k: int) -> Any:
                return lambda r: f"/instances/{sops[k]}/frames/1/rendered" in r.url

            index = page.get_by_test_id("slice-index")
            with page.expect_request(frame(4)):
                page.get_by_test_id("case-0").click()
            expect(index).to_have_text("Slice 5 / 8")
            expect(page.get_by_test_id("status")).to_contain_text("Opened")

            # scroll: the wheel and the arrow keys step through slices in anatomical order
            canvas = page.get_by_test_id("viewer-canvas")
            box = canvas.bounding_box()
            assert box is not None
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            with page.expect_request(frame(5)):
                page.mouse.wheel(0, 120)
            expect(index).to_have_text("Slice 6 / 8")
            k = 6
            with page.expect_request(frame(k)):
                page.keyboard.press("ArrowUp")
            expect(index).to_have_text("Slice 7 / 8")
            with page.expect_request(lambda r: "window=-600%2C1500" in r.url):
                page.select_option("[data-testid=window-preset]", "-600,1500")
            assert len({u.split("?")[0] for u in rendered}) == 3  # one image per slice shown

            # zoom and pan: what is drawn next is still measured in image pixels
            scale0 = float(canvas.get_attribute("data-scale") or 0)
            page.keyboard.press("Equal")  # "=" (or "+") zooms in
            assert float(canvas.get_attribute("data-scale") or 0) == pytest.approx(scale0 * 1.25)
            ox0 = float(canvas.get_attribute("data-offset-x") or 0)
            page.mouse.move(box["x"] + 300, box["y"] + 300)
            page.mouse.down(button="middle")
            page.mouse.move(box["x"] + 260, box["y"] + 320, steps=4)
            page.mouse.up(button="middle")
            assert float(canvas.get_attribute("data-offset-x") or 0) == pytest.approx(ox0 - 40)

            # a box: 'b' picks the nodule-box label (and the box tool); drag on the image
            page.keyboard.press("b")
            expect(page.get_by_test_id("label-nodule-box")).to_have_attribute("aria-checked",
                                                                                "true")
            expect(page.get_by_test_id("tool-box")).to_have_attribute("aria-pressed", "true")
            page.mouse.move(*_screen(page, (10, 12)))
            page.mouse.down()
            page.mouse.move(*_screen(page, (40, 30)), steps=5)
            page.mouse.up()

            # a brush stroke: '1' picks the lesion label (a mask: the brush)
            page.keyboard.press("1")
            expect(page.get_by_test_id("label-lesion")).to_have_attribute("aria-checked", "true")
            expect(page.get_by_test_id("tool-brush")).to_have_attribute("aria-pressed", "true")
            page.mouse.move(*_screen(page, (20.5, 45.5)))
            page.mouse.down()
            page.mouse.move(*_screen(page, (44.5, 45.5)), steps=8)
            page.mouse.up()

            # a stray stroke, undone with Ctrl+Z
            page.mouse.move(*_screen(page, (40.5, 35.5)))
            page.mouse.down()
            page.mouse.move(*_screen(page, (55.5, 35.5)), steps=4)
            page.mouse.up()
            page.keyboard.press("Control+z")

            # a polygon: 'p' picks the outline label; click the points, Enter closes it
            page.keyboard.press("p")
            expect(page.get_by_test_id("tool-polygon")).to_have_attribute("aria-pressed", "true")
            for xy in ((50, 5), (60, 5), (55, 12)):
                page.mouse.click(*_screen(page, xy))
            page.keyboard.press("Enter")

            page.get_by_test_id("submit").click()
            expect(page.get_by_test_id("status")).to_have_text("Submitted: 3 annotations.")
            page.screenshot(path=str(_artifacts(tmp_path) / "annotator.png"))

            # later: the page shows what was saved, and an edit adds a revision
            page.reload()
            page.wait_for_selector("body[data-ready=true]")
            page.get_by_test_id("case-0").click()
            saved = page.get_by_test_id("annotation-list")
            expect(saved).to_contain_text("lesion (mask) · submitted")
            expect(saved).to_contain_text("nodule-box (bbox) · slice 7 · submitted")
            page.keyboard.press("ArrowUp")
            page.keyboard.press("ArrowUp")
            expect(index).to_have_text("Slice 7 / 8")
            page.keyboard.press("1")
            page.mouse.move(*_screen(page, (20.5, 20.5)))
            page.mouse.down()
            page.mouse.move(*_screen(page, (30.5, 20.5)), steps=4)
            page.mouse.up()
            page.get_by_test_id("save-draft").click()
            expect(page.get_by_test_id("status")).to_have_text("Saved as draft: 1 annotation.")
        finally:
            browser.close()

        listed = requests.get(f"{base}/api/annotations", params={"series": series},
                              headers=bearer(token), timeout=30).json()["data"]
        by_label = {a["label"]: a for a in listed}
        assert sorted(by_label) == ["lesion", "nodule-box", "outline"] and len(listed) == 3
        for a in listed:
            assert a["reader"] == "ann" and a["reader_kind"] == "person"
            assert a["schema"] == "liver@1.0.0"
        assert by_label["nodule-box"]["status"] == by_label["outline"]["status"] == "submitted"
        outline = by_label["outline"]
        assert outline["target"]["SOPInstanceUID"] == sops[k]
        assert np.allclose(outline["data"]["points"], [[50, 5], [60, 5], [55, 12]], atol=1.0)
        assert (by_label["lesion"]["revision"], by_label["lesion"]["status"]) == (2, "draft")
        nb = by_label["nodule-box"]
        assert nb["target"]["SOPInstanceUID"] == sops[k]
        assert nb["data"]["box"] == pytest.approx([10, 12, 40, 30], abs=1.0)
        masks = [decode_rle_slices(requests.get(
            f"{base}/api/annotations/{by_label['lesion']['uid']}/mask",
            params={"revision": n}, headers=bearer(token), timeout=30).json(), (8, 64, 64))
            for n in (1, 2)]
    first, edited = masks
    assert list(np.flatnonzero(first.any(axis=(1, 2)))) == [k]  # the slice on screen only
    assert first[k, 45, 21:44].all()  # along the stroke (brush 4 px wide, row 45)
    assert not first[k, :40].any() and not first[k, 51:].any()  # the stray stroke was undone
    assert edited[k, 20, 21:30].all() and not first[k, 20].any()  # the second stroke
    assert np.array_equal(edited[k, 30:], first[k, 30:])  # the first one kept
    assert problems == []
