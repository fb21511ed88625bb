"""The training seams: the trainer's state_dict, the per-epoch callback, and module losses
that take their inputs explicitly.

Fits are a few epochs on 96 samples of 10 features, so the file runs in seconds.
"""

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _helpers import ESTIMATORS, estimator_factory, low_rank_data, new_trainer
from skmpsae import DivergenceError
from skmpsae._train.contracts import LossOutput
from skmpsae._train.trainer import _Schedule

N_SAMPLES, BATCH_SIZE = 96, 32  # three steps per epoch

make_estimator = estimator_factory(
    n_components=16,
    max_iter=3,
    batch_size=BATCH_SIZE,
    random_state=0,
    device="cpu",
    n_nonzero_coefs=3,
    alpha=0.5,
)


def parameters(trainer):
    return {k: p.detach().clone() for k, p in trainer.module.named_parameters()}


def assert_same_parameters(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def round_trip(state):
    """The state through torch.save / torch.load, as a checkpoint file would carry it."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


# -- state_dict ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ESTIMATORS)
def test_state_dict_round_trip_continues_bit_identically(name):
    X = low_rank_data(N_SAMPLES)
    sae = make_estimator(name)
    n_steps = 3 * (N_SAMPLES // BATCH_SIZE)
    straight = new_trainer(sae, X, n_steps=n_steps)
    for _ in range(3):
        straight.run_epoch(X, BATCH_SIZE)
    # The estimator's fit is this very loop.
    fitted = make_estimator(name).fit(X)
    np.testing.assert_array_equal(fitted.components_, straight.module.dictionary.detach().numpy())

    first = new_trainer(sae, X, n_steps=n_steps)
    for _ in range(2):
        first.run_epoch(X, BATCH_SIZE)
    state = round_trip(first.state_dict())
    # A trainer with another initialisation, and Adam moments of its own, takes the state.
    resumed = new_trainer(make_estimator(name, random_state=1), X, n_steps=n_steps)
    resumed.run_epoch(X, BATCH_SIZE)
    resumed.load_state_dict(state)
    assert (resumed.step, resumed.epoch) == (2 * N_SAMPLES // BATCH_SIZE, 2)
    result = resumed.run_epoch(X, BATCH_SIZE)
    assert_same_parameters(parameters(resumed), parameters(straight))
    assert resumed.step == straight.step and resumed.epoch == straight.epoch == 3
    assert result.loss == fitted.loss_curve_[-1]
    # Without Adam's moments the third epoch goes elsewhere: the state carries them.
    no_moments = new_trainer(make_estimator(name, random_state=1), X, n_steps=n_steps)
    no_moments.module.load_state_dict(state["module"])
    no_moments.step, no_moments.epoch = state["step"], state["epoch"]
    no_moments.order_rng.set_state(state["order_rng"])
    no_moments.run_epoch(X, BATCH_SIZE)
    assert not torch.equal(no_moments.module.dictionary, straight.module.dictionary)


@pytest.mark.parametrize("name", ["mp", "topk"])
@pytest.mark.parametrize("save_at", [5, 6])  # the second and the last step of epoch 2
def test_state_dict_mid_epoch_resumes_at_the_same_row(name, save_at):
    X = low_rank_data(N_SAMPLES)
    n_steps = 2 * (N_SAMPLES // BATCH_SIZE)
    straight = new_trainer(make_estimator(name), X, n_steps=n_steps)
    losses = [straight.run_epoch(X, BATCH_SIZE).loss for _ in range(2)]

    saved = {}

    def save(state):
        if state["step"] == save_at:
            saved["state"] = round_trip(state)

    interrupted = new_trainer(make_estimator(name), X, n_steps=n_steps)
    for _ in range(2):
        interrupted.run_epoch(X, BATCH_SIZE, checkpoint=(1, save))
    assert saved["state"]["in_epoch"]["next_row"] == (save_at - 3) * BATCH_SIZE

    resumed = new_trainer(make_estimator(name, random_state=5), X, n_steps=n_steps)
    resumed.load_state_dict(saved["state"])
    result = resumed.run_epoch(X, BATCH_SIZE)  # the rest of epoch 2
    assert resumed.step == straight.step == 6 and resumed.epoch == 2
    assert_same_parameters(parameters(resumed), parameters(straight))
    assert result.loss == losses[1]  # the epoch's mean loss covers the rows before the save
    assert torch.equal(resumed.samples_since_fired, straight.samples_since_fired)


# -- one warm-up rule ----------------------------------------------------------------------
def test_schedule_warms_up_then_decays():
    schedule = _Schedule(1e-2, 1000)
    assert schedule.warmup_steps == 50  # 5% of the steps, at most 100
    assert schedule(0) == pytest.approx(1e-2 / 50)
    assert schedule(49) == schedule(799) == pytest.approx(1e-2)
    assert schedule(900) == pytest.approx(0.5e-2) and schedule(1000) == 0.0
    assert _Schedule(1e-2, 10**6).warmup_steps == 100
    assert _Schedule(1e-2, 5).warmup_steps == 1
    endless = _Schedule(1e-3, None)
    assert endless.warmup_steps == 50 and endless(10**6) == pytest.approx(1e-3)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_trainer_passes_the_schedule_and_dead_mask_to_the_loss(name):
    X = low_rank_data(N_SAMPLES)
    trainer = new_trainer(make_estimator(name, max_iter=2), X, n_steps=40)
    module, loss = trainer.module, trainer.module.loss
    seen = []

    def recording_loss(x, dead_mask=None, sparsity_scale=1.0):
        if torch.is_grad_enabled():
            expected_dead = trainer.samples_since_fired >= trainer.dead_window
            seen.append(
                (
                    trainer.step,
                    sparsity_scale,
                    torch.equal(dead_mask, expected_dead),
                    trainer.optimizer.param_groups[0]["lr"],
                )
            )
        return loss(x, dead_mask, sparsity_scale)

    module.loss = recording_loss
    for _ in range(2):
        trainer.run_epoch(X, BATCH_SIZE)
    assert [step for step, *_ in seen] == list(range(6))
    for step, scale, dead_ok, lr in seen:
        assert scale == trainer.schedule.warmup(step) == min(1.0, (step + 1) / 2)
        assert lr == trainer.schedule(step)
        assert dead_ok


# -- callback ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ESTIMATORS)
def test_callback_gets_one_call_per_epoch_with_the_published_numbers(name, capsys):
    X = low_rank_data(N_SAMPLES)
    calls = []

    def callback(info):
        # Published at the end of the call: during the first fit nothing is fitted yet.
        calls.append((info, hasattr(info.estimator, "components_")))

    sae = make_estimator(name, callback=callback, verbose=1).fit(X)
    assert [info.epoch for info, _ in calls] == [1, 2, 3]
    assert [info.n_steps for info, _ in calls] == [3, 6, 9]
    assert all(info.n_epochs == 3 and info.estimator is sae for info, _ in calls)
    assert not any(fitted for _, fitted in calls)
    assert [info.loss for info, _ in calls] == sae.loss_curve_
    assert calls[-1][0].n_dead == sae.n_dead_components_
    assert all(info.seconds > 0 for info, _ in calls)
    printed = capsys.readouterr().out.splitlines()  # verbose consumes the same numbers
    assert printed == [
        f"[{type(sae).__name__}] epoch {info.epoch}: loss {info.loss:.5f}, dead atoms "
        f"{info.n_dead}/16, {info.seconds:.2f}s"
        for info, _ in calls
    ]
    calls.clear()
    sae.partial_fit(X)
    ((info, fitted),) = calls
    assert (info.epoch, info.n_epochs, info.n_steps) == (4, 1, 12) and fitted
    assert sae.loss_curve_[-1] == info.loss and sae.n_iter_ == 4


def test_callback_error_leaves_estimator_as_it_was_and_ctrl_c_keeps_the_epoch():
    X = low_rank_data(N_SAMPLES)
    sae = make_estimator("mp").fit(X)
    before = {k: v for k, v in vars(sae).items() if k.endswith("_")}
    components = sae.components_.copy()

    def fail_in_epoch_2(info):
        if info.epoch == 2:
            raise RuntimeError("stop")

    sae.set_params(callback=fail_in_epoch_2, max_iter=4)
    with pytest.raises(RuntimeError, match="stop"):
        sae.fit(X)
    assert {k: v for k, v in vars(sae).items() if k.endswith("_")} == before
    np.testing.assert_array_equal(sae.components_, components)

    def interrupt_in_epoch_2(info):
        if info.epoch == 2:
            raise KeyboardInterrupt

    sae.set_params(callback=interrupt_in_epoch_2)
    with pytest.warns(UserWarning, match="last completed epoch"):
        sae.fit(X)
    assert sae.n_iter_ == 2 and len(sae.loss_curve_) == 2 and sae.n_steps_ == 6


def test_failed_fit_keeps_input_description():
    """n_features_in_ and feature_names_in_ are published with the model, never before."""
    pd = pytest.importorskip("pandas")
    X = pd.DataFrame(low_rank_data(N_SAMPLES), columns=[f"f{i}" for i in range(10)])
    sae = make_estimator("topk").fit(X)
    with pytest.raises(DivergenceError):
        sae.set_params(learning_rate=1e6).fit(low_rank_data(N_SAMPLES, n_features=12))
    assert sae.n_features_in_ == 10 and list(sae.feature_names_in_) == list(X.columns)
    assert sae.transform(X).shape == (N_SAMPLES, 16)


# -- losses take explicit inputs -----------------------------------------------------------
def fitted_module(name, **params):
    X = low_rank_data(N_SAMPLES)
    trainer = new_trainer(make_estimator(name, **params), X, n_steps=30)
    trainer.run_epoch(X, BATCH_SIZE)
    module = trainer.module.double()
    return module, torch.as_tensor(X[:40], dtype=torch.float64) / trainer.scale


def test_topk_loss_adds_the_auxk_term_of_the_given_dead_latents():
    module, x = fitted_module("topk", aux_coef=0.25)
    plain = module.loss(x)
    assert isinstance(plain, LossOutput) and plain._fields == ("loss", "fired")
    alive = module.loss(x, torch.zeros(16, dtype=torch.bool))
    assert alive.loss == plain.loss
    dead = torch.zeros(16, dtype=torch.bool)
    dead[[1, 4, 7, 9]] = True
    with_aux = module.loss(x, dead)
    # The naive AuxK loss: the k_aux = 4 largest dead pre-activations reconstruct the residual.
    with torch.no_grad():
        pre = (x - module.bias) @ module.encoder_weight.T + module.encoder_bias
        codes = torch.zeros_like(pre)
        values, indices = pre.topk(3, dim=1)
        codes.scatter_(1, indices, F.relu(values))
        residual = x - (codes @ module.dictionary + module.bias)
        aux_codes = torch.where(dead, F.relu(pre), torch.zeros_like(pre))  # all 4 dead kept
        aux = ((residual - aux_codes @ module.dictionary) ** 2).sum(dim=1).mean()
        aux /= ((residual - residual.mean(dim=0)) ** 2).sum(dim=1).mean()
        expected_plain = (residual**2).sum(dim=1).mean() / x.shape[1]
    torch.testing.assert_close(plain.loss.detach(), expected_plain)
    torch.testing.assert_close(with_aux.loss.detach(), expected_plain + 0.25 * aux)
    np.testing.assert_array_equal(plain.fired.numpy(), (codes > 0).sum(dim=0).numpy())


def test_relu_loss_scales_the_l1_term_by_the_given_factor():
    module, x = fitted_module("relu", alpha=0.5)
    with torch.no_grad():
        z = F.relu((x - module.bias) @ module.encoder_weight.T + module.encoder_bias)
        error = ((x - z @ module.dictionary - module.bias) ** 2).sum(dim=1).mean()
        l1 = (z * module.dictionary.norm(dim=1)).sum(dim=1).mean()
    for scale in (0.0, 0.3, 1.0):
        out = module.loss(x, None, scale)
        torch.testing.assert_close(out.loss.detach(), (error + 0.5 * scale * l1) / x.shape[1])
        np.testing.assert_array_equal(out.fired.numpy(), (z > 0).sum(dim=0).numpy())
    assert module.loss(x, torch.ones(16, dtype=torch.bool)).loss == module.loss(x).loss


def test_mp_loss_adds_the_revival_term_of_the_given_dead_atoms_only():
    from skmpsae._models.matching_pursuit_module import _revival_term

    module, x = fitted_module("mp", revival_coef=0.25)
    out = module.loss(x)
    assert int(out.fired.sum()) <= 3 * x.shape[0] and out.fired.dtype == torch.long
    # No sparsity penalty, and no dead atom means no revival term.
    assert module.loss(x, torch.zeros(16, dtype=torch.bool), 0.1).loss == out.loss
    dead = torch.zeros(16, dtype=torch.bool)
    dead[[2, 9]] = True
    x_hat, _, _ = module(x)
    expected = out.loss + 0.25 * _revival_term(x - x_hat, module.dictionary, dead)
    torch.testing.assert_close(module.loss(x, dead, 0.1).loss, expected)
    module.revival_coef = 0.0
    assert module.loss(x, dead).loss == out.loss


def test_a_short_last_batch_joins_the_one_before():
    from skmpsae._train.tensors import _batch_bounds, _n_batches

    assert _batch_bounds(100, 32) == [(0, 32), (32, 64), (64, 100)]  # 4 rows left: joined
    assert _batch_bounds(116, 32) == [(0, 32), (32, 64), (64, 96), (96, 116)]  # 20: kept
    assert _batch_bounds(3600, 512)[-1] == (3072, 3600)
    assert _batch_bounds(10, 32) == [(0, 10)] and _batch_bounds(64, 32) == [(0, 32), (32, 64)]
    assert _n_batches(700, 512) == 1 and _n_batches(0, 32) == 0


def test_mp_state_without_extra_state_loads_and_measures_again():
    """A trainer state saved before MP's module carried its measured selection path (its
    extra state) loads, the path to be measured again; the caller's dict is not changed, and
    a missing parameter is still an error."""
    X = low_rank_data(N_SAMPLES)
    trainer = new_trainer(make_estimator("mp"), X, n_steps=9)
    trainer.module.selection_path, trainer.module.selection_seconds = "rows", {"rows": 0.5}
    state = trainer.state_dict()
    assert "_extra_state" in state["module"]
    old = {**state, "module": {k: v for k, v in state["module"].items() if k != "_extra_state"}}
    old_keys = set(old["module"])

    restored = new_trainer(make_estimator("mp"), X, n_steps=9)
    restored.load_state_dict(state)
    assert restored.module.selection_path == "rows"
    assert restored.module.selection_seconds == {"rows": 0.5}
    from_old = new_trainer(make_estimator("mp"), X, n_steps=9)
    from_old.load_state_dict(old)
    assert from_old.module.selection_path is None and from_old.module.selection_seconds == {}
    assert set(old["module"]) == old_keys
    assert_same_parameters(parameters(from_old), parameters(restored))

    del old["module"]["dictionary"]
    with pytest.raises(RuntimeError, match="Missing key.*dictionary"):
        new_trainer(make_estimator("mp"), X, n_steps=9).load_state_dict(old)
