"""The feature browser's image panels rendered in headless Chromium, as tests/test_report_browser.py
renders the text pages: heat maps over the top images, the activation bands, and for a
vision-language model the top texts with the modality score and the index sorted by it.

Screenshots go to ``$SKMPSAE_SCREENSHOTS`` when that is set (the docs' pictures).
"""

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from skmpsae.inspect import write_report

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the browser tests need playwright (pip install playwright)"
)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip(
        "the browser tests need Debian's chromium package (apt-get install chromium)",
        allow_module_level=True,
    )
sys.path.insert(0, str(Path(__file__).parent))
from test_report_browser import ARGS  # noqa: E402
from test_report_images import _captions, vision  # noqa: E402, F401

SHOTS = os.environ.get("SKMPSAE_SCREENSHOTS")


@pytest.fixture(scope="module")
def sites(vision, tmp_path_factory):  # noqa: F811
    root, sae, vl = vision
    out = tmp_path_factory.mktemp("sites")
    patches = write_report(sae, root / "p.npy", out / "patches")
    pair = [root / "i.npy", root / "t.npy"]
    both = write_report(vl, pair, out / "vl", texts=_captions())
    return patches, both


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def _open(browser, site, hash_=""):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.errors, page.outside = [], []
    inside = site.resolve().as_uri()
    page.on("request", lambda r: r.url.startswith(("data:", inside)) or page.outside.append(r.url))
    page.on("console", lambda m: m.type == "error" and page.errors.append(m.text))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto((site / "index.html").resolve().as_uri() + hash_)
    return page


def _close(page):
    assert page.errors == [], f"console errors: {page.errors}"
    assert page.outside == [], f"requests outside the folder: {page.outside}"
    page.close()


def _busiest(site):
    import json

    text = (site / "data" / "index.js").read_text()
    freq = json.loads(text[text.index("=") + 1 : text.rindex(";")])["atoms"]["freq"]
    return int(np.argmax(freq))


def test_atom_page_draws_heat_maps_over_top_images_and_bands(browser, sites):
    site = sites[0]
    atom = _busiest(site)
    page = _open(browser, site, f"#atom/{atom}")
    page.wait_for_selector("#top-images .vimg")
    n_top = page.eval_on_selector_all("#top-images .vimg", "e => e.length")
    heats = page.eval_on_selector_all("#top-images .vimg canvas.heat", "e => e.length")
    assert n_top >= 1 and heats == n_top
    # The heat canvas is the 4x4 patch grid, stretched over the thumbnail; its alpha follows
    # the activation, so the top image's brightest patch is opaque-ish and some patch is not.
    grid = page.eval_on_selector(
        "#top-images .vimg canvas.heat",
        "c => [c.width, c.height, Array.from(c.getContext('2d').getImageData(0, 0, c.width, "
        "c.height).data).filter((v, i) => i % 4 === 3)]",
    )
    assert grid[:2] == [4, 4] and max(grid[2]) == round(0.65 * 255) and min(grid[2]) < max(grid[2])
    loaded = page.eval_on_selector_all("#top-images img", "e => e.every(i => i.naturalWidth > 0)")
    assert loaded
    assert page.eval_on_selector_all("h4", "e => e.length") == 3  # the three lower bands
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / "report_images_atom.png"), full_page=True)
    _close(page)


def test_vision_language_page_and_index_sorted_by_modality(browser, sites):
    site = sites[1]
    page = _open(browser, site)
    page.wait_for_selector("#atoms tbody tr")
    page.click("th[data-key=modality]")
    column = page.eval_on_selector_all(
        "#atoms thead th", "h => h.findIndex(t => t.dataset.key === 'modality')"
    )
    cells = page.eval_on_selector_all(
        "#atoms tbody tr", f"rows => rows.map(r => r.children[{column}].textContent)"
    )
    values = [float(c) for c in cells if c != "–"]
    assert values and values == sorted(values, reverse=True)
    assert all(c == "–" for c in cells[len(values) :])  # atoms that never fire sort last
    atom = int(page.eval_on_selector("#atoms tbody tr", "r => r.dataset.atom"))
    page.click("#atoms tbody tr a")
    page.wait_for_selector("#top-texts")
    assert page.text_content("#modality").startswith("modality score " + cells[0])
    texts = page.eval_on_selector_all("#top-texts .ctx", "e => e.length")
    images = page.eval_on_selector_all("#top-images .vimg", "e => e.length")
    assert images >= 1 and texts >= 0 and atom >= 0
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / "report_vision_language.png"), full_page=True)
    _close(page)
