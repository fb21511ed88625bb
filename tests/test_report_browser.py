"""The feature browser rendered in headless Chromium (Debian's ``chromium``), driven by
Playwright's Python client (``pip install playwright``; its own browser download is never used:
the system Chromium is launched by path). Skipped, with the missing piece named, where either is
absent. One browser for the module; the report comes from a tiny GPT-2 over a few hundred
tokens, captured with its provenance.

Screenshots go to ``$SKMPSAE_SCREENSHOTS`` when that is set (the docs' pictures).
"""

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from skmpsae import MatchingPursuitSAE, io
from skmpsae.cli import main

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the browser tests need playwright (pip install playwright)"
)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip(
        "the browser tests need Debian's chromium package (apt-get install chromium)",
        allow_module_level=True,
    )
from skmpsae.activations import capture  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from test_activations import TEXTS, _tokenizer  # noqa: E402

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = os.environ.get("SKMPSAE_SCREENSHOTS")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=2,
        n_embd=32,
        n_head=2,
        vocab_size=40,
        n_positions=64,
        bos_token_id=None,
        eos_token_id=None,
    )
    lm, tokenizer = transformers.GPT2LMHeadModel(config).eval(), _tokenizer(special=False)
    lm.save_pretrained(root / "lm")
    tokenizer.save_pretrained(root / "lm")
    X = capture(lm, TEXTS * 12, "transformer.h.1", root / "acts.npy", tokenizer=tokenizer)
    sae = MatchingPursuitSAE(48, n_nonzero_coefs=4, max_iter=3, random_state=0).fit(X)
    io.save(sae, root / "mp.safetensors")
    argv = ["report", str(root / "mp.safetensors"), "--acts", str(root / "acts.npy")]
    argv += ["--model-dir", str(root / "lm"), "-o", str(root / "site"), "-q", "--window", "3"]
    assert main(argv) == 0
    return root / "site", sae, X


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, report):
    site = report[0]
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.outside, page.errors = [], []
    inside = site.resolve().as_uri()

    def on_request(request):
        if not request.url.startswith(inside):
            page.outside.append(request.url)

    page.on("request", on_request)
    page.on("console", lambda m: m.type == "error" and page.errors.append(m.text))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto((site / "index.html").resolve().as_uri())
    yield page
    assert page.outside == [], f"requests outside the folder: {page.outside}"
    assert page.errors == [], f"console errors: {page.errors}"
    page.close()


def _shot(page, name):
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / name), full_page=False)


def test_index_lists_every_atom_and_sorts(page, report):
    _, sae, X = report
    page.wait_for_selector("#atoms tbody tr")
    ids = page.eval_on_selector_all("#atoms tbody tr", "rows => rows.map(r => +r.dataset.atom)")
    assert sorted(ids) == list(range(sae.n_components))  # 48 atoms fit on one page
    freq = (sae.transform(X) != 0).sum(axis=0)
    # Sorted by firing rate, most frequent first (ties by atom id).
    assert ids == sorted(range(sae.n_components), key=lambda i: (-freq[i], i))
    _shot(page, "report_index.png")
    page.click("th[data-key=id]")
    ids = page.eval_on_selector_all("#atoms tbody tr", "rows => rows.map(r => +r.dataset.atom)")
    assert ids == list(range(sae.n_components))


def test_search_finds_a_token_and_an_atom(page, report):
    page.wait_for_selector("#atoms tbody tr")
    page.fill("#search", "zebra")
    page.wait_for_function("document.querySelector('#count').textContent.includes('zebra')")
    tops = page.eval_on_selector_all(
        "#atoms tbody tr td:last-child", "c => c.map(x => x.textContent)"
    )
    assert tops and all("zebra" in t for t in tops)
    page.fill("#search", "7")
    page.wait_for_function("document.querySelectorAll('#atoms tbody tr').length === 1")
    assert page.eval_on_selector("#atoms tbody tr", "r => r.dataset.atom") == "7"


def test_atom_page_shows_highlighted_contexts_and_the_hierarchy_links_resolve(page, report):
    site, sae, X = report
    freq = (sae.transform(X) != 0).sum(axis=0)
    atom = int(np.argmax(freq))
    page.goto((site / "index.html").resolve().as_uri() + f"#atom/{atom}")
    page.wait_for_selector("#contexts .ctx")
    assert page.text_content("#title") == f"Atom {atom}"
    lines = page.query_selector_all("#contexts .ctx")
    assert len(lines) == min(20, freq[atom])
    # Every context's centre token is highlighted; its strength is the atom's activation.
    centre = page.eval_on_selector_all(
        "#contexts .ctx .tok.centre", "t => t.map(x => +x.dataset.act)"
    )
    assert len(centre) == len(lines) and all(a > 0 for a in centre)
    assert centre == sorted(centre, reverse=True)
    assert page.query_selector("#histogram rect") is not None
    assert page.query_selector("#steps") is not None
    _shot(page, "report_atom.png")
    # Every parent and child link leads to an atom page that renders.
    links = page.eval_on_selector_all(
        ".card .links a[href^='#atom/'], .card div > a[href^='#atom/']",
        "a => a.map(x => x.getAttribute('href'))",
    )
    for href in links[:6]:
        page.goto((site / "index.html").resolve().as_uri() + href)
        page.wait_for_selector("#title")
        assert page.text_content("#title") == "Atom " + href.split("/")[1]


def test_atom_page_shows_contexts_from_each_quantile_band(page, report):
    site, sae, X = report
    codes = sae.transform(X)
    freq = (codes != 0).sum(axis=0)
    atom = int(np.argmax(freq))
    page.goto((site / "index.html").resolve().as_uri() + f"#atom/{atom}")
    page.wait_for_selector("#bands .band")
    heads = page.eval_on_selector_all("#bands .band h4", "h => h.map(x => x.textContent)")
    assert [h.split(" of its")[0] for h in heads] == [
        "Quantiles 75–100%",
        "Quantiles 50–75%",
        "Quantiles 25–50%",
        "Quantiles 0–25%",
    ]
    assert heads[0].split("activation ")[1].startswith("above ")
    assert heads[-1].split("activation ")[1].startswith("up to ")
    bands = page.eval_on_selector_all(
        "#bands .band",
        """b => b.map(x => ({lo: +x.dataset.lo, hi: x.dataset.hi === '' ? Infinity :
            +x.dataset.hi, acts: [...x.querySelectorAll('.ctx .tok.centre')].map(
            t => +t.dataset.act), rows: [...x.querySelectorAll('.ctx .tok.centre')].map(
            t => +t.title.split(':')[0].slice(4))}))""",
    )
    mags = np.sort(np.abs(codes[codes[:, atom] != 0, atom]))
    # The edges split the atom's firings in quarters (to the histogram's resolution).
    assert bands[2]["lo"] <= mags[mags.size // 4] and bands[0]["lo"] <= mags[-1]
    shown = 0
    for band in bands:
        assert len(band["acts"]) <= 4
        for row, act in zip(band["rows"], band["acts"], strict=True):
            assert act == pytest.approx(codes[row, atom], rel=5e-3)
            assert band["lo"] * (1 - 1e-3) < abs(codes[row, atom]) <= band["hi"] * (1 + 1e-3)
        shown += len(band["acts"])
    assert shown == 16  # the most frequent atom has firings enough in every band
    if SHOTS:
        page.locator("#bands").screenshot(path=str(Path(SHOTS) / "report_bands.png"))
