"""scikit-learn's image-denoising example with MP-SAE dropped in: which setting matches it.

The example's steps on a picture scikit-learn ships (``load_sample_image("china.jpg")``, gray,
downsampled by 4 as the example downsamples its own): 7x7 patches of the left half,
standardised, learn 100 atoms; the right half gets Gaussian noise (sd 0.075), its patches are
centred and rebuilt from 2 atoms each; the score is the Frobenius norm of the rebuilt half's
difference from the clean one (the example's "Difference norm"; lower is better). The noise
is drawn once; each model is fitted with ``--seeds`` seeds.

Run: ``python benchmarks/bench_denoising.py`` (about 5 minutes with one thread).
"""

import time

import numpy as np
from _common import aggregate, limit_threads, markdown_table, parser, write_table
from sklearn.datasets import load_sample_image
from sklearn.decomposition import MiniBatchDictionaryLearning, SparseCoder
from sklearn.feature_extraction.image import extract_patches_2d, reconstruct_from_patches_2d

from skmpsae import MatchingPursuitSAE

PATCH = (7, 7)


def patches():
    image = load_sample_image("china.jpg").mean(axis=2) / 255.0
    image = (image[::4, ::4] + image[1::4, ::4] + image[::4, 1::4] + image[1::4, 1::4]) / 4.0
    height, width = image.shape
    distorted = image.copy()
    distorted[:, width // 2 :] += 0.075 * np.random.RandomState(0).randn(height, width // 2)
    data = extract_patches_2d(distorted[:, : width // 2], PATCH).reshape(-1, 49)
    data -= data.mean(axis=0)
    data /= data.std(axis=0)
    noisy = extract_patches_2d(distorted[:, width // 2 :], PATCH).reshape(-1, 49)
    intercept = noisy.mean(axis=0)
    return image, data, noisy - intercept, intercept


def difference_norm(image, codes, atoms, bias, intercept):
    height, width = image.shape
    rebuilt = (codes @ atoms + bias + intercept).reshape(-1, *PATCH)
    half = reconstruct_from_patches_2d(rebuilt, (height, width // 2))
    return float(np.sqrt(np.sum((half - image[:, width // 2 :]) ** 2)))


# (name, MP-SAE parameters, encoder at 2 atoms): "mp" the model's own transform, "omp" the
# model's OMP transform.
MP_SETTINGS = [
    ("MP-SAE defaults, k=2", {"n_nonzero_coefs": 2}, "mp"),
    ("MP-SAE k=2, OMP at inference", {"n_nonzero_coefs": 2}, "omp"),
    ("MP-SAE k=2, positive_code=False", {"n_nonzero_coefs": 2, "positive_code": False}, "mp"),
    (
        "MP-SAE k=4, positive_code=False, encoded at 2",
        {"n_nonzero_coefs": 4, "positive_code": False},
        "mp",
    ),
]


def run_seed(seed, image, data, noisy, intercept):
    rows = []
    tic = time.perf_counter()
    dico = MiniBatchDictionaryLearning(
        n_components=100, batch_size=200, alpha=1.0, max_iter=10, random_state=seed
    ).fit(data)
    fit_s = time.perf_counter() - tic
    omp = SparseCoder(dico.components_, transform_algorithm="omp", transform_n_nonzero_coefs=2)
    error = difference_norm(image, omp.transform(noisy), dico.components_, 0.0, intercept)
    rows.append({"model": "MiniBatchDictionaryLearning + OMP", "error": error, "fit_s": fit_s})
    for name, params, algorithm in MP_SETTINGS:
        tic = time.perf_counter()
        mp = MatchingPursuitSAE(n_components=100, random_state=seed, **params).fit(data)
        fit_s = time.perf_counter() - tic
        mp.set_params(transform_algorithm=algorithm, transform_n_nonzero_coefs=2)
        codes = mp.transform(noisy)
        error = difference_norm(image, codes, mp.components_, mp.intercept_, intercept)
        rows.append({"model": name, "error": error, "fit_s": fit_s})
    return rows


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args(argv)
    limit_threads(args.threads)
    image, data, noisy, intercept = patches()
    print(f"{data.shape[0]} training patches, {noisy.shape[0]} noisy ones", flush=True)
    per_seed = []
    for seed in range(args.seeds):
        per_seed += run_seed(seed, image, data, noisy, intercept)
        print(f"seed {seed} done", flush=True)
    table = markdown_table(
        aggregate(per_seed, ["model"]),
        [
            ("model", "model (100 atoms, 2 per patch at reconstruction)", ""),
            ("error", "difference norm (lower is better)", ".3f"),
            ("fit_s", "fit time (s)", ".1f"),
        ],
    )
    print(table)
    if not args.no_write:
        write_table("denoising", table)


if __name__ == "__main__":
    main()
