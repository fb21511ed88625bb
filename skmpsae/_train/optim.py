"""Adam with one adaptive step size per atom, for dictionaries whose rows live on spheres.

Adam divides every coordinate's update by the root of its own second moment. For a dictionary
of unit-norm atoms this distorts each atom's update direction: a pixel that is rarely lit gets
as large a step as the atom's main strokes, and the renormalisation after the step then spends
the atom's norm on noise. Riemannian Adam on a product of manifolds (Becigneul & Ganea, 2019)
keeps one second-moment estimate per factor, here per atom (as Adafactor factors the second
moment by rows, Shazeer & Stern, 2018): the step keeps the momentum's direction within the atom
and adapts only its length (measured against Adam in ``docs/benchmarks.md``, "Where the
defaults come from").
"""

import torch


class _AtomAdam(torch.optim.Optimizer):
    """Adam whose second moment is one number per row of a matrix parameter (the mean of the
    row's squared gradients); vectors get Adam's per-coordinate second moment.

    The state has Adam's names (``step``, ``exp_avg``, ``exp_avg_sq``), with ``exp_avg_sq`` of
    shape (n_rows, 1) for a matrix, so checkpoints and pickles carry it as they carry Adam's.
    """

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise ValueError("_AtomAdam takes no closure.")
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is not None:
                    self._update(param, param.grad, group["lr"], beta1, beta2, group["eps"])

    def _update(self, param, grad, lr, beta1, beta2, eps):
        state = self.state[param]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float64)
            state["exp_avg"] = torch.zeros_like(param)
            rows = (param.shape[0], 1) if param.ndim == 2 else param.shape
            state["exp_avg_sq"] = param.new_zeros(rows)
        state["step"] += 1
        t = float(state["step"])
        state["exp_avg"].lerp_(grad, 1 - beta1)
        if param.ndim == 2:
            square = torch.linalg.vector_norm(grad, dim=1, keepdim=True).square_()
            square /= grad.shape[1]
        else:
            square = grad * grad
        state["exp_avg_sq"].lerp_(square, 1 - beta2)
        denom = (state["exp_avg_sq"] / (1 - beta2**t)).sqrt_().add_(eps)
        param.addcdiv_(state["exp_avg"], denom, value=-lr / (1 - beta1**t))
