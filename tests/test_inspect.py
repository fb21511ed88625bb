"""skmpsae.inspect against naive loops over dense codes, the provenance file that capture
writes (aligned through an interrupted capture), and the one-line errors of skmpsae report."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

from skmpsae import BatchTopKSAE, JumpReLUSAE, MatchingPursuitSAE, ReLUSAE, TopKSAE, io
from skmpsae._inspect.pairs import _PairSummary
from skmpsae.cli import main
from skmpsae.datasets import make_hierarchical_features
from skmpsae.inspect import (
    atom_hierarchy,
    context_activations,
    context_windows,
    feature_statistics,
    hierarchy_recovery,
    logit_effects,
    write_report,
)

RNG = np.random.RandomState(0)
X = RNG.rand(900, 12).astype(np.float32)


@pytest.mark.parametrize(
    "estimator",
    [
        MatchingPursuitSAE(n_components=24, n_nonzero_coefs=4, max_iter=2, random_state=0),
        TopKSAE(n_components=24, n_nonzero_coefs=4, max_iter=2, random_state=0),
        BatchTopKSAE(n_components=24, n_nonzero_coefs=4, max_iter=2, random_state=0),
        ReLUSAE(n_components=24, alpha=0.01, max_iter=2, random_state=0),
        JumpReLUSAE(n_components=24, alpha=0.01, max_iter=2, random_state=0),
    ],
    ids=lambda e: type(e).__name__,
)
def test_statistics_equal_a_naive_loop(estimator):
    estimator.fit(X)
    stats = feature_statistics(
        estimator, X, n_top=6, chunk_size=97, pair_steps=3, pair_min_cosine=0.0
    )
    C = estimator.transform(X)
    np.testing.assert_array_equal(stats.frequency, (C != 0).sum(axis=0))
    for a in range(C.shape[1]):
        col = C[:, a]
        fired = col[col != 0]
        order = [r for r in np.lexsort((np.arange(col.size), -col))[:6] if col[r] != 0]
        assert stats.top_rows[a, : len(order)].tolist() == order
        np.testing.assert_allclose(stats.top_values[a, : len(order)], col[order], rtol=1e-6)
        assert stats.histogram[a].sum() == fired.size
        if fired.size:
            np.testing.assert_allclose(stats.mean_activation[a], fired.mean(), rtol=1e-5)
            exact = np.quantile(np.abs(fired), stats.quantile_levels)
            width = stats.histogram_edges[a, 1]
            assert np.all(np.abs(exact - stats.quantiles[a]) <= width * (1 + 1e-9))
            assert stats.histogram_edges[a, -1] <= 2 * np.abs(fired).max() + 1e-12
    # Pairs among each row's 3 largest activations (MP: first 3 selections), counted naively.
    naive = np.zeros((C.shape[1], C.shape[1]), dtype=np.int64)
    if isinstance(estimator, MatchingPursuitSAE):
        params = estimator._params_as_tensors(X.dtype)
        import torch

        idx, val = (t.numpy() for t in estimator._select(torch.from_numpy(X), params))
        steps = np.zeros((C.shape[1], idx.shape[1]), dtype=np.int64)
        for r in range(X.shape[0]):
            seen, head = [], []
            for t in range(idx.shape[1]):
                if val[r, t] != 0 and idx[r, t] not in seen:
                    seen.append(idx[r, t])
                    steps[idx[r, t], t] += 1
                    if t < 3:  # pairs among the atoms first selected in the first 3 steps
                        head.append(idx[r, t])
            for s, i in enumerate(head):
                for j in head[s + 1 :]:
                    naive[i, j] += 1
        np.testing.assert_array_equal(stats.selection_steps, steps)
        assert stats.ordered
    else:
        assert stats.selection_steps is None and not stats.ordered
        for r in range(X.shape[0]):
            active = [a for a in np.lexsort((np.arange(C.shape[1]), -C[r])) if C[r, a] != 0][:3]
            for s, i in enumerate(active):
                for j in active[s + 1 :]:
                    naive[i, j] += 1
    np.testing.assert_array_equal(stats.pair_counts.toarray(), naive)
    assert not stats.pair_error.any()  # 24 atoms: fewer partners than max_partners
    if not isinstance(estimator, MatchingPursuitSAE):
        np.testing.assert_array_equal(stats.pair_frequency, stats.frequency)


def _naive_tree_selections(sae, X, n_steps, min_cosine, threshold):
    """Each row's atoms in the order first selected by a matching pursuit of ``n_steps``
    steps, stopped at the first value at most ``threshold`` or below ``min_cosine`` times the
    residual's norm: a loop over rows in float64."""
    D = sae.components_.astype(np.float64)
    out = []
    for x in X.astype(np.float64) - sae.intercept_:
        r, seen = x.copy(), []
        for _ in range(n_steps):
            c = D @ r
            a = int(np.argmax(c))
            if c[a] <= threshold or c[a] < min_cosine * np.linalg.norm(r):
                break
            if a not in seen:
                seen.append(a)
            r -= c[a] * D[a]
        out.append(seen)
    return out


@pytest.mark.parametrize("pair_steps", [2, 6])
def test_matching_pursuit_pairs_follow_the_pursuit_cut_by_cosine(pair_steps):
    # k=4: 2 pair steps reuse the model's pursuit, 6 take it further; rows stop at the first
    # step whose atom has a cosine below 0.45 with the residual.
    sae = MatchingPursuitSAE(n_components=24, n_nonzero_coefs=4, max_iter=2, random_state=0)
    sae.fit(X)
    stats = feature_statistics(
        sae, X, chunk_size=97, pair_steps=pair_steps, pair_min_cosine=0.45, threshold=1e-4
    )
    K = sae.n_components
    naive, frequency = np.zeros((K, K), dtype=np.int64), np.zeros(K, dtype=np.int64)
    lengths = []
    for atoms in _naive_tree_selections(sae, X, pair_steps, 0.45, 1e-4):
        lengths.append(len(atoms))
        frequency[atoms] += 1
        for s, i in enumerate(atoms):
            for j in atoms[s + 1 :]:
                naive[i, j] += 1
    # The cut is not idle: some rows stop early, some reach pair_steps atoms (6: past k).
    assert min(lengths) < pair_steps == max(lengths)
    np.testing.assert_array_equal(stats.pair_frequency, frequency)
    np.testing.assert_array_equal(stats.pair_counts.toarray(), naive)
    # The codes' statistics stay those of transform's 4 steps.
    np.testing.assert_array_equal(stats.frequency, (sae.transform(X) != 0).sum(axis=0))


def _naive_pairs(first, second, K):
    ordered = np.zeros((K, K), dtype=np.int64)
    np.add.at(ordered, (first, second), 1)
    return ordered


@pytest.mark.parametrize("m", [1, 4, 16])
def test_pair_summary_bounds_its_error(m):
    """Each atom keeps m partners: counts are never above the truth, at most the atom's error
    below it, the error is at most its pairs / (m + 1), and every partner counted above the
    error is kept; the partner-first counts are exact where nothing was subtracted."""
    K, rng = 30, np.random.default_rng(m)
    summary = _PairSummary(K, m)
    firsts, seconds = [], []
    for _ in range(7):  # chunks merged one by one (the buffer is emptied by hand)
        # Zipfian atoms: a few strong partners and a long tail, as real codes have.
        a = rng.zipf(1.6, size=(300, 2)) % K
        a = a[a[:, 0] != a[:, 1]]
        summary.add(a[:, 0], a[:, 1])
        summary._merge()
        firsts.append(a[:, 0]), seconds.append(a[:, 1])
    ordered = _naive_pairs(np.concatenate(firsts), np.concatenate(seconds), K)
    both = ordered + ordered.T
    counts, error = summary.matrix()
    got = counts.toarray()
    got_both = got + got.T
    bound = np.minimum(error[:, None], error[None, :])
    assert np.all(got_both <= both) and np.all(got_both >= both - bound)
    assert np.all(error <= both.sum(axis=1) / (m + 1))
    assert np.all((got_both > 0) | ((both <= error[:, None]) & (both <= error[None, :])))
    exact = (error[:, None] == 0) | (error[None, :] == 0)
    np.testing.assert_array_equal(got[exact], ordered[exact])
    if m == 1:
        assert error.any()  # the bound was exercised


def test_pair_summary_memory_is_bounded():
    K, m = 50, 3
    summary = _PairSummary(K, m)
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.integers(0, K, size=(5000, 2))
        a = a[a[:, 0] != a[:, 1]]
        summary.add(a[:, 0], a[:, 1])
        summary._merge()
        assert summary.keys.size <= K * m


def test_hierarchy_from_counts_and_its_recovery():
    # Atom 0 fires in 100 rows, atom 1 in 40 (always with 0, selected after it 30 times),
    # atom 2 in 30 (with 0 only 10 times): 1 is 0's child, 2 has no parent at 0.5.
    counts = sparse.csr_matrix(([30, 10, 10], ([0, 1, 0], [1, 0, 2])), shape=(3, 3))
    stats = {"frequency": np.array([100, 40, 30]), "pair_counts": counts, "ordered": True}
    tree = atom_hierarchy(stats)
    assert tree.parent.tolist() == [-1, 0, -1]
    np.testing.assert_allclose(tree.probability, [0, 1.0, 1 / 3])
    np.testing.assert_allclose(tree.parent_first, [0, 0.75, 0])
    assert [c.tolist() for c in tree.children] == [[1], [], []]
    F = np.eye(3)
    assert hierarchy_recovery(F[[2, 0, 1]], [-1, -1, 1], F, [-1, 0, -1]) == (1.0, 1.0, 1.0)
    assert hierarchy_recovery(F, [-1, -1, 1], F, [-1, 0, -1])[:2] == (0.0, 0.0)


def _fixed_dictionary_mp(D, X, k):
    """An MP-SAE whose atoms are ``D``: fitted one epoch at a rate that leaves them."""
    return MatchingPursuitSAE(
        D.shape[0],
        n_nonzero_coefs=k,
        fit_intercept=False,
        max_iter=1,
        dict_init=D,
        learning_rate=1e-12,
        random_state=0,
    ).fit(X)


def test_hierarchy_on_the_toy_tree_with_the_true_dictionary():
    # With the true features as atoms, MP's co-selection gives exactly the true tree.
    Xh, F, _, tree = make_hierarchical_features(3000, random_state=0, return_tree=True)
    sae = _fixed_dictionary_mp(F, Xh, 2)
    # Past the first step a parent-only row has nothing left but float rounding: threshold.
    stats = feature_statistics(sae, Xh, threshold=1e-3)
    h = atom_hierarchy(stats)
    recall, precision, cosine = hierarchy_recovery(sae.components_, h.parent, F, tree.parent_of)
    assert cosine > 0.999 and recall == 1.0 and precision == 1.0


def test_matching_pursuit_tree_finds_a_parent_its_child_absorbed():
    # Atoms: parent e0, a child that absorbed it, (e0 + e1) / sqrt(2), and a singleton e2.
    # 20 rows of the parent alone; 30 of parent and child (1.2 e0 + e1): the child's atom
    # first, the parent's at step 2 (cosine 0.71 with the residual); 40 of the singleton
    # with a little of e1 and e3 on top, where a second step would fit the child's atom to a
    # residual it has cosine 0.12 with.
    D = np.zeros((3, 4))
    D[0, 0] = D[2, 2] = 1.0
    D[1, :2] = 2**-0.5
    rows = [[1, 0, 0, 0]] * 20 + [[1.2, 1, 0, 0]] * 30 + [[0, 0.05, 1, 0.3]] * 40
    Xt = np.array(rows)
    sae = _fixed_dictionary_mp(D, Xt, 1)

    def tree(**params):
        stats = feature_statistics(sae, Xt, threshold=1e-3, **params)
        return stats.pair_frequency.tolist(), atom_hierarchy(stats).parent.tolist()

    # The rule: the pursuit past the model's one step, cut at cosine 0.3.
    assert tree() == ([50, 30, 40], [-1, 0, -1])
    # The model's own step only: no pairs, no tree.
    assert tree(pair_steps=1, pair_min_cosine=0.0) == ([20, 30, 40], [-1, -1, -1])
    # Every step: the fitted residuals make the child the most frequent, the parent's parent.
    assert tree(pair_min_cosine=0.0) == ([50, 70, 40], [1, -1, 1])


def test_matching_pursuit_tree_recovers_the_toy_hierarchy():
    # Seed 109, the settings of benchmarks/bench_inspect.py --part tree: 6 of the 9 links
    # with the rule, 4 with the pairs of the model's 2 steps only (the rule before).
    Xh, F, _, tree = make_hierarchical_features(4000, random_state=109, return_tree=True)
    Xh = Xh.astype(np.float32)
    sae = MatchingPursuitSAE(
        20,
        n_nonzero_coefs=2,
        fit_intercept=False,
        learning_rate=1e-2,
        max_iter=30,
        random_state=109,
    ).fit(Xh)

    def recall(**params):
        stats = feature_statistics(sae, Xh, threshold=1e-3, **params)
        parent = atom_hierarchy(stats).parent
        return hierarchy_recovery(sae.components_, parent, F, tree.parent_of)[0]

    assert recall() >= 6 / 9 - 1e-9
    assert recall(pair_steps=2, pair_min_cosine=0.0) <= 4 / 9 + 1e-9


def test_contexts_and_logit_effects():
    texts = np.array([0, 0, 0, 1, 1, 2])
    assert context_windows([[2, 3], [-1, 5]], texts, window=1).tolist() == [
        [[1, 2, -1], [-1, 3, 4]],
        [[-1, -1, -1], [-1, 5, -1]],
    ]
    sae = TopKSAE(n_components=10, n_nonzero_coefs=3, max_iter=2, random_state=0).fit(X)
    rows = np.array([[0, 5, -1], [7, 8, 9]])
    acts = context_activations(sae, X, rows, [2, 4], chunk_size=2)
    C = sae.transform(X)
    np.testing.assert_allclose(acts, [[C[0, 2], C[5, 2], 0], [C[7, 4], C[8, 4], C[9, 4]]])
    W = RNG.randn(30, 12)
    effects = logit_effects(sae, W, n_top=4)
    logits = sae.components_ @ W.T
    for a in range(10):
        assert effects.promoted[a].tolist() == np.argsort(-logits[a])[:4].tolist()
        assert effects.suppressed[a].tolist() == np.argsort(logits[a])[:4].tolist()
    with pytest.raises(ValueError, match="unembedding has shape"):
        logit_effects(sae, W[:, :5])


def test_capture_writes_aligned_provenance_through_a_resume(tmp_path):
    pytest.importorskip("transformers")
    sys.path.insert(0, str(Path(__file__).parent))
    import torch
    import transformers

    from skmpsae.activations import capture
    from test_activations import TEXTS, _tokenizer

    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=1,
        n_embd=16,
        n_head=2,
        vocab_size=40,
        n_positions=64,
        bos_token_id=None,
        eos_token_id=None,
    )
    model, tok = transformers.GPT2LMHeadModel(config).eval(), _tokenizer(special=False)
    calls = []

    def interrupt(*args):
        calls.append(1)
        if len(calls) == 3:  # the probe, one batch, then Ctrl-C in the second
            raise KeyboardInterrupt

    handle = model.transformer.h[0].register_forward_pre_hook(interrupt)
    with pytest.raises(KeyboardInterrupt):
        capture(model, TEXTS, "transformer.h.0", tmp_path / "a.npy", tokenizer=tok, batch_size=3)
    handle.remove()
    with open(tmp_path / "a.npy.tokens.npy", "ab") as f:
        f.write(b"\1" * 20)  # part of a batch written when the process died
    acts = capture(model, TEXTS, "transformer.h.0", tmp_path / "a.npy", tokenizer=tok, batch_size=3)
    table = np.load(tmp_path / "a.npy.tokens.npy")
    expected = [  # no special tokens: every row a plain text token, not in an image
        (t, p, i, 0, -1, -1, 0)
        for t, text in enumerate(TEXTS)
        for p, i in enumerate(tok(text)["input_ids"])
    ]
    assert table.shape == (acts.shape[0], 7) and table.tolist() == [list(e) for e in expected]
    vocab = json.loads((tmp_path / "a.npy.vocab.json").read_text())["vocab"]
    assert vocab[str(tok.convert_tokens_to_ids("zebra"))] == " zebra"
    # The report reads them: contexts show the tokens around the activating one.
    sae = TopKSAE(n_components=8, n_nonzero_coefs=2, max_iter=1, random_state=0).fit(acts)
    site = write_report(sae, tmp_path / "a.npy", tmp_path / "site", window=2)
    chunk = (site / "data" / "atoms_0000.js").read_text()
    assert '" zebra"' in chunk and "row " not in chunk


def test_report_cli_errors(tmp_path, capsys):
    sae = MatchingPursuitSAE(n_components=8, n_nonzero_coefs=2, max_iter=1, random_state=0)
    sae.fit(X)
    io.save(sae, tmp_path / "m.safetensors")
    np.save(tmp_path / "acts.npy", X)
    base = ["report", str(tmp_path / "m.safetensors"), "--acts", str(tmp_path / "acts.npy")]

    def error(argv):
        assert main(argv) != 0
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "Traceback" not in err
        return err

    np.save(tmp_path / "acts.npy.tokens.npy", np.zeros((5, 3), dtype=np.int32))
    assert "5 rows of provenance for 900 rows" in error(base + ["-o", str(tmp_path / "r")])
    (tmp_path / "acts.npy.tokens.npy").unlink()
    np.save(tmp_path / "wide.npy", np.zeros((4, 7), dtype=np.float32))
    wide = ["report", str(tmp_path / "m.safetensors"), "--acts", str(tmp_path / "wide.npy")]
    assert "has 7 features but the model's atoms have 12" in error(
        wide + ["-o", str(tmp_path / "r")]
    )
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.tex").write_text("precious")
    assert "not a skmpsae report" in error(base + ["-o", str(tmp_path / "busy")])
    assert (tmp_path / "busy" / "thesis.tex").read_text() == "precious"
    data = (tmp_path / "acts.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[: len(data) // 2])
    cut = ["report", str(tmp_path / "m.safetensors"), "--acts", str(tmp_path / "cut.npy")]
    assert "truncated" in error(cut + ["-o", str(tmp_path / "r")])
    # A report folder is replaced; a non-report one only with --force.
    assert main(base + ["-o", str(tmp_path / "r"), "-q"]) == 0
    assert main(base + ["-o", str(tmp_path / "r"), "-q"]) == 0
    assert main(base + ["-o", str(tmp_path / "busy"), "-q", "--force"]) == 0
    assert not (tmp_path / "busy" / "thesis.tex").exists()
    out = ["-o", str(tmp_path / "r")]
    assert "--pair-steps must be >= 0" in error(base + out + ["--pair-steps", "-1"])
    assert "--min-probability must be in [0, 1]" in error(base + out + ["--min-probability", "2"])
    # The tree's flags reach the report: no pair steps, no parents.
    assert main(base + out + ["-q", "--pair-steps", "0", "--max-partners", "4"]) == 0
    script = (tmp_path / "r" / "data" / "index.js").read_text()
    index = json.loads(script.removeprefix("window.SKMPSAE_INDEX = ").rstrip().rstrip(";"))
    assert index["atoms"]["parent"] is None
    assert "--pair-min-cosine must be in [0, 1]" in error(base + out + ["--pair-min-cosine", "2"])
    # The cut reaches the report: its parents are those of the same statistics in Python.
    cut = ["--pair-min-cosine", "0.4", "--min-probability", "0.2", "--pair-steps", "4"]
    assert main(base + out + ["-q", *cut]) == 0
    script = (tmp_path / "r" / "data" / "index.js").read_text()
    index = json.loads(script.removeprefix("window.SKMPSAE_INDEX = ").rstrip().rstrip(";"))
    stats = feature_statistics(sae, X, pair_steps=4, pair_min_cosine=0.4)
    parent = atom_hierarchy(stats, min_probability=0.2).parent
    assert (parent >= 0).any() and index["atoms"]["parent"] == parent.tolist()
    default = atom_hierarchy(feature_statistics(sae, X, pair_steps=4), min_probability=0.2)
    assert default.parent.tolist() != parent.tolist()
    mnist = base + ["-o", str(tmp_path / "img"), "-q", "--image-shape", "3,4"]
    assert main(mnist) == 0
    assert '"image":' in (tmp_path / "img" / "data" / "atoms_0000.js").read_text()
    assert "--image-shape" in error(base + ["-o", str(tmp_path / "i2"), "--image-shape", "5,5"])
