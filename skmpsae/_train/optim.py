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


class _AtomAdam:
    """Adam whose second moment is one number per row of a matrix parameter (the mean of the
    row's squared gradients); vectors get Adam's per-coordinate second moment.

    The state has Adam's names (``step``, ``exp_avg``, ``exp_avg_sq``), with ``exp_avg_sq`` of
    shape (n_rows, 1) for a matrix, and :meth:`state_dict` has ``torch.optim.Optimizer``'s
    layout, so checkpoints and pickles carry it as they carry Adam's. It has the part of
    torch's optimiser interface the trainer uses (``param_groups``, ``step``, ``zero_grad``,
    ``state_dict``, ``load_state_dict``) without deriving from ``torch.optim.Optimizer``:
    that class imports ``torch._dynamo`` when its first instance is built, which cost a
    process's first fit more than a second (docs/performance.md, "Against overcomplete's
    MP-SAE").
    """

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8):
        params = list(params)
        if not params:
            raise ValueError("_AtomAdam got an empty parameter list.")
        self.param_groups = [{"params": params, "lr": lr, "betas": betas, "eps": eps}]
        self.state = {}

    def zero_grad(self, set_to_none=True):
        for group in self.param_groups:
            for param in group["params"]:
                if set_to_none:
                    param.grad = None
                elif param.grad is not None:
                    param.grad.detach_().zero_()

    def state_dict(self):
        """``{"state": {index: state}, "param_groups": [...]}``, parameters as their indices
        (the layout of ``torch.optim.Optimizer.state_dict``)."""
        index, groups, next_index = {}, [], 0
        for group in self.param_groups:
            ids = list(range(next_index, next_index + len(group["params"])))
            index.update(zip(map(id, group["params"]), ids, strict=True))
            next_index += len(ids)
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
        state = {index[id(p)]: dict(s) for p, s in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Continue from :meth:`state_dict` of an optimiser of the same parameters; tensors
        move to each parameter's device, floating ones (except ``step``) to its dtype."""
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups) or any(
            len(saved["params"]) != len(group["params"])
            for saved, group in zip(groups, self.param_groups, strict=True)
        ):
            raise ValueError("The optimiser state was saved for other parameters.")
        by_index = {}
        for saved, group in zip(groups, self.param_groups, strict=True):
            by_index.update(zip(saved["params"], group["params"], strict=True))
            group.update({k: v for k, v in saved.items() if k != "params"})
        self.state = {}
        for key, saved in state_dict["state"].items():
            param = by_index[key]
            self.state[param] = {
                name: _to_param(value, param, keep_dtype=name == "step")
                for name, value in saved.items()
            }

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
        state = self.state.setdefault(param, {})
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


def _to_param(value, param, keep_dtype):
    if not torch.is_tensor(value):
        return value
    if keep_dtype or not value.is_floating_point():
        return value.to(param.device, copy=True)
    return value.to(param.device, param.dtype, copy=True)
