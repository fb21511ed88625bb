"""The unrolled matching-pursuit loop as the MP-SAE papers' code writes it.

Not used by the estimators or the public functions: tests compare every selection path with it
(atoms, codes, and gradients under autograd), and benchmarks time the kernels against it.
"""

import torch


def _naive_matching_pursuit(X, dictionary, n_nonzero_coefs, positive=True) -> torch.Tensor:
    """A full ``r @ D.T``, a one-hot code and ``r -= onehot @ D`` per step.

    Differentiable; under autograd it stores k dense (n, K) tensors.

    Returns the dense codes, shape (n, K).
    """
    residual = X
    codes = torch.zeros((X.shape[0], dictionary.shape[0]), dtype=X.dtype, device=X.device)
    for _ in range(n_nonzero_coefs):
        corr = residual @ dictionary.T
        if positive:
            idx = corr.argmax(dim=1)
        else:
            idx = corr.abs().argmax(dim=1)
        onehot = torch.nn.functional.one_hot(idx, dictionary.shape[0]).to(X.dtype)
        val = (corr * onehot).sum(dim=1, keepdim=True)
        if positive:
            val = val.clamp_min(0)
        step_code = onehot * val
        codes = codes + step_code
        residual = residual - step_code @ dictionary
    return codes
