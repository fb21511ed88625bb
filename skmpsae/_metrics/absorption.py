"""Feature absorption (Chanin et al.), SAEBench-style, on the first letters of corpus tokens.

SAEBench prompts a causal language model to spell words and reads the activation at the
word; here the rows are corpus tokens that start a word, so a shipped encoder and its capture
are enough. The deterministic core, the per-token absorption fraction and full-absorption
test, is SAEBench's ``FeatureAbsorptionCalculator.calculate_absorption`` and
``_is_full_absorption`` (``sae_bench/evals/absorption/feature_absorption_calculator.py`` in
adamkarvonen/SAEBench) with its thresholds; the per-letter aggregation is that of its
``sae_bench/evals/absorption/main.py`` (``_aggregate_results_df``).
"""

from numbers import Integral, Real

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.utils import Bunch, check_random_state

from .._compat import HasMethods, validate_params
from .._utils import NotBoolInterval
from .probing import _check_rows, _probe, encode_rows
from .tasks import token_task_labels

EPS = 1e-8  # SAEBench's: a latent with |activation| below it did not fire


def absorption_scores(
    codes,
    cos_sims,
    probe_projection,
    main_latents,
    *,
    full_cos_threshold=0.025,
    fraction_cos_threshold=0.1,
    projection_threshold=0.4,
    max_absorbing_latents=3,
):
    """Per token, SAEBench's absorption fraction and whether it is a full absorption.

    ``codes`` (n_tokens, n_components) dense, ``cos_sims`` (n_components,) the cosine of each
    atom with the unit probe direction, ``probe_projection`` (n_tokens,) each activation's
    projection on it; vectorised over tokens, step for step as SAEBench's loop.
    """
    codes = np.asarray(codes, dtype=np.float64)
    cos = np.asarray(cos_sims, dtype=np.float64)
    act = np.asarray(probe_projection, dtype=np.float64)
    main = np.asarray(main_latents, dtype=np.int64)
    proj = codes * cos
    main_proj = proj[:, main].sum(axis=1)
    absorbers = np.ones(cos.size, dtype=bool)
    absorbers[main] = False
    absorbers &= cos >= fraction_cos_threshold
    candidates = np.where(absorbers & (proj > 0), proj, 0.0)  # kept ones are > 0
    m = min(max_absorbing_latents, cos.size)
    top_sum = -np.partition(-candidates, m - 1, axis=1)[:, :m].sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(act != 0, top_sum / act, -np.inf)
        unaccounted = act - main_proj
        absorbed = np.minimum(top_sum, unaccounted)
        partial = np.clip(absorbed / (absorbed + main_proj), 0.0, 1.0)
    none = (main_proj >= act) | (share < projection_threshold)
    fraction = np.where(none, 0.0, np.where(main_proj <= 0.0, 1.0, partial))

    top = np.argmax(proj, axis=1)
    top_proj = proj[np.arange(proj.shape[0]), top]
    with np.errstate(divide="ignore", invalid="ignore"):
        top_share = np.where(act != 0, top_proj / act, -np.inf)
    full = (
        np.all(np.abs(codes[:, main]) < EPS, axis=1)
        & (cos[top] >= full_cos_threshold)
        & (act >= 0)
        & (top_share >= projection_threshold)
    )
    return fraction, full


def _main_latents(codes, fit, fit_y, held, held_y, order, max_k, f1_jump):
    """The letter's main latents: the first ``k`` of ``order`` for the largest ``k`` up to
    which each added latent raised the F1 of a k-sparse probe by at least ``f1_jump``
    (SAEBench's split-feature rule)."""
    best, chosen = -np.inf, order[:1]
    for k in range(1, max_k + 1):
        cols = order[:k]
        probe = _probe().fit(codes[fit][:, cols].toarray(), fit_y)
        f1 = f1_score(held_y, probe.predict(codes[held][:, cols].toarray()), zero_division=0)
        if k > 1 and f1 - best < f1_jump:
            break
        best, chosen = f1, cols
    return chosen


@validate_params(
    {
        "estimator": [HasMethods(["transform"])],
        "X": ["array-like"],
        "tokens": ["array-like"],
        "test_size": [NotBoolInterval(Real, 0, 1, closed="neither")],
        "max_k": [NotBoolInterval(Integral, 1, None, closed="left")],
        "f1_jump_threshold": [NotBoolInterval(Real, 0, None, closed="left")],
        "min_tokens": [NotBoolInterval(Integral, 1, None, closed="left")],
        "max_samples": [NotBoolInterval(Integral, 2, None, closed="left")],
        "random_state": ["random_state"],
        "chunk_size": [NotBoolInterval(Integral, 1, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def absorption(
    estimator,
    X,
    tokens,
    *,
    test_size=0.2,
    max_k=10,
    f1_jump_threshold=0.03,
    min_tokens=10,
    max_samples=20000,
    random_state=None,
    chunk_size=4096,
):
    """SAEBench-style first-letter feature absorption on corpus tokens.

    1. The rows whose token is a whole word of letters (``" snake"``) are labelled with its
       first letter, and the distinct words are split into training and test words.
    2. A multinomial logistic probe on the activations ``X`` learns the first letter; its
       direction for a letter is that letter's probe direction.
    3. Per letter, the latents are ranked by the cosine of their atom with the probe
       direction, and the main latents are the first ``k`` (at most ``max_k``) for as long as
       each raises the F1 of a k-sparse probe by ``f1_jump_threshold``.
    4. On each test token the probe gets right (a true positive), SAEBench's absorption
       fraction (the share of the probe projection carried by at most 3 other latents aligned
       with the probe, where the main latents fall short) and full absorption (the main
       latents silent and one aligned latent carrying at least 40% of the projection).
    5. Per letter, the mean absorption fraction and the full-absorption rate over its true
       positives; the results average over the letters.

    Parameters
    ----------
    estimator : fitted estimator with ``transform`` and ``components_``
        Any of the package's SAEs, or a scikit-learn dictionary learner.
    X : array-like of shape (n_samples, n_features)
        Activation rows.
    tokens : array-like of str of shape (n_samples,)
        Each row's token as it reads in the text, a leading space marking a word start (the
        texts of ``ACTS.npy.vocab.json``).
    test_size : float, default=0.2
        Fraction of the distinct words held out: the probes are scored on unseen words.
    max_k : int, default=10
        The most main latents per letter.
    f1_jump_threshold : float, default=0.03
        The F1 gain that admits one more main latent (SAEBench's default).
    min_tokens : int, default=10
        Letters with fewer training tokens, or no true positive, are left out.
    max_samples : int, default=20000
        At most this many training rows for the letter probe.
    random_state : int, RandomState instance or None, default=None
        The word split and the subsampling.
    chunk_size : int, default=4096
        Rows encoded at a time.

    Returns
    -------
    result : Bunch
        ``mean_absorption_fraction`` and ``full_absorption_rate`` (means over the letters),
        ``letters``, ``absorption_fraction_per_letter``, ``full_absorption_rate_per_letter``,
        ``n_true_positives`` (per letter), ``main_latents`` (list of arrays per letter),
        ``probe_accuracy`` (of the letter probe on the test words).

    See Also
    --------
    skmpsae.metrics.sparse_probing : k-sparse probes on the latents.

    Examples
    --------
    >>> import numpy as np
    >>> from skmpsae import MatchingPursuitSAE
    >>> from skmpsae.metrics import absorption
    >>> rng = np.random.RandomState(0)
    >>> words = [f" {a}{b}" for a in "abc" for b in "xyzuvw"]
    >>> tokens = np.array(words * 30)
    >>> X = rng.randn(tokens.size, 8).astype(np.float32)
    >>> X[:, 0] += 3 * (np.char.find(tokens, " a") == 0)
    >>> sae = MatchingPursuitSAE(16, n_nonzero_coefs=2, max_iter=2, random_state=0).fit(X)
    >>> result = absorption(sae, X, tokens, random_state=0)
    >>> 0.0 <= result.mean_absorption_fraction <= 1.0
    True
    """
    X = _check_rows(estimator, X)
    tokens = np.asarray(tokens, dtype=object).ravel()
    if tokens.size != X.shape[0]:
        raise ValueError(f"tokens must have one entry per row of X ({X.shape[0]}).")
    rows, letters = token_task_labels("first-letter", tokens)
    rng = check_random_state(random_state)
    words = np.unique(tokens[rows].astype(str))
    held_words = words[rng.rand(words.size) < test_size]
    held = np.isin(tokens[rows].astype(str), held_words)
    train, test = np.flatnonzero(~held), np.flatnonzero(held)
    if train.size > max_samples:
        train = np.sort(rng.choice(train, max_samples, replace=False))
    if train.size == 0 or test.size == 0 or np.unique(letters[train]).size < 2:
        raise ValueError(
            "too few first-letter tokens to probe: need words of at least two first letters "
            "on both sides of the word split."
        )
    Xr = np.asarray(X[rows], dtype=np.float64)
    probe = LogisticRegression(max_iter=1000).fit(Xr[train], letters[train])
    predicted = probe.predict(Xr[test])
    codes = encode_rows(estimator, X, rows, chunk_size)
    atoms = np.asarray(estimator.components_, dtype=np.float64)
    atom_norms = np.maximum(np.linalg.norm(atoms, axis=1), EPS)

    out = {k: [] for k in ("letters", "fraction", "full", "n_tp", "main")}
    for c, letter in enumerate(probe.classes_):
        direction = probe.coef_[c] if probe.coef_.shape[0] > 1 else probe.coef_[0]
        direction = direction / np.linalg.norm(direction)
        tp = test[(letters[test] == letter) & (predicted == letter)]
        if np.count_nonzero(letters[train] == letter) < min_tokens or tp.size == 0:
            continue
        cos = atoms @ direction / atom_norms
        order = np.argsort(-cos, kind="stable")
        main = _main_latents(
            codes,
            train,
            letters[train] == letter,
            test,
            letters[test] == letter,
            order,
            min(max_k, cos.size),
            f1_jump_threshold,
        )
        fraction, full = absorption_scores(codes[tp].toarray(), cos, Xr[tp] @ direction, main)
        out["letters"].append(str(letter))
        out["fraction"].append(fraction.sum() / tp.size)
        out["full"].append(full.sum() / tp.size)
        out["n_tp"].append(tp.size)
        out["main"].append(main)
    if not out["letters"]:
        raise ValueError(
            f"no letter has {min_tokens} training tokens and a correctly probed test token."
        )
    return Bunch(
        mean_absorption_fraction=float(np.mean(out["fraction"])),
        full_absorption_rate=float(np.mean(out["full"])),
        letters=np.array(out["letters"]),
        absorption_fraction_per_letter=np.array(out["fraction"]),
        full_absorption_rate_per_letter=np.array(out["full"]),
        n_true_positives=np.array(out["n_tp"]),
        main_latents=out["main"],
        probe_accuracy=float(np.mean(predicted == letters[test])),
    )
