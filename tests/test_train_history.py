"""What ``ns.train`` records, divergence, reproducibility, dispatch and argument checks."""

import numpy as np
import pytest
from _vanishing import vanishing_float32_case

import neurosim as ns
from neurosim.history import History
from neurosim.train import MLPTrainer, train_mlp


@pytest.fixture(scope="module")
def regression():
    return ns.tasks.teacher_student(depth=2, width=6, n_train=50, n_test=20, n_inputs=5,
                                    n_outputs=3, seed=0)


def first_batch(seed, n, batch):
    order_seq, _ = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(order_seq).permutation(n)[:batch]


def test_history_layout_and_recorded_values(regression):
    task = regression
    net = ns.MLP([5, 6, 6, 3], seed=3)
    start = net.copy()
    hist = ns.train(net, task, optimizer="sgd", lr=0.05, epochs=3, batch_size=16, seed=7,
                    record_every=3)
    # 50 samples in batches of 16: 4 steps per epoch, 12 in all; records at 0, 3, 6, 9
    assert isinstance(hist, History)
    assert hist.epochs_run == 3 and hist.loss.shape == (3,) and hist.test_loss.shape == (3,)
    assert np.all(np.isnan(hist.accuracy)) and np.all(np.isnan(hist.test_accuracy))
    np.testing.assert_array_equal(hist.steps, [0, 3, 6, 9])
    assert hist.grad_norms.shape == (4, 3) and hist.delta_norms.shape == (4, 3)
    assert hist.step_loss.shape == (4,)
    np.testing.assert_array_equal(hist.signal_norms, hist.delta_norms)
    np.testing.assert_array_equal(hist.update_norms, hist.grad_norms)
    np.testing.assert_array_equal(hist.angles, 0.0)
    assert not hist.diverged and hist.diverged_step is None and hist.rule == "backprop"
    # step 0 is the first batch of the seeded order, at the initial parameters
    idx = first_batch(7, 50, 16)
    loss0, grads0 = start.gradients(task.X_train[idx], task.Y_train[idx])
    assert hist.step_loss[0] == pytest.approx(loss0, rel=1e-12)
    np.testing.assert_allclose(hist.grad_norms[0], [np.linalg.norm(w) for w in grads0.weights],
                               rtol=1e-12)
    np.testing.assert_allclose(
        hist.delta_norms[0], [np.mean(np.linalg.norm(d, axis=1)) for d in grads0.deltas],
        rtol=1e-12)
    # the epoch losses are the inference-mode losses of the whole sets after each epoch
    assert hist.loss[-1] == pytest.approx(
        ns.losses.get("mse").value(net.forward(task.X_train), task.Y_train), rel=1e-12)
    assert hist.test_loss[-1] == pytest.approx(
        ns.losses.get("mse").value(net.forward(task.X_test), task.Y_test), rel=1e-12)
    restored = History.from_arrays(hist.to_arrays())
    np.testing.assert_array_equal(restored.grad_norms, hist.grad_norms)


def test_classification_accuracy_is_recorded():
    task = ns.tasks.gaussian_blobs(n_samples=60, seed=0)
    net = ns.MLP([2, 8, 3], seed=0)
    hist = ns.train(net, task, epochs=2, batch_size=8, loss="cross_entropy")
    pred = net.forward(task.X_test).argmax(axis=1)
    assert hist.test_accuracy[-1] == np.mean(pred == task.labels_test)
    assert 0.0 <= hist.accuracy[-1] <= 1.0


def test_same_seed_same_history_and_parameters(regression):
    runs = []
    for _ in range(2):
        net = ns.MLP([5, 6, 6, 3], seed=1, dropout=0.2)
        hist = ns.train(net, regression, optimizer="adam", lr=0.01, epochs=2, batch_size=8,
                        seed=5)
        runs.append((hist, net.params.copy()))
    (h1, p1), (h2, p2) = runs
    for key, value in h1.to_arrays().items():
        np.testing.assert_array_equal(value, h2.to_arrays()[key], err_msg=key)
    np.testing.assert_array_equal(p1, p2)
    net = ns.MLP([5, 6, 6, 3], seed=1, dropout=0.2)
    h3 = ns.train(net, regression, optimizer="adam", lr=0.01, epochs=2, batch_size=8, seed=6)
    assert not np.array_equal(h1.step_loss, h3.step_loss)


def test_trainer_epoch_by_epoch_equals_train(regression):
    a = ns.MLP([5, 6, 6, 3], seed=2)
    b = ns.MLP([5, 6, 6, 3], seed=2)
    hist = ns.train(a, regression, optimizer="nesterov", lr=0.02, epochs=3, batch_size=10,
                    seed=4)
    trainer = MLPTrainer(b, regression.X_train, regression.Y_train, optimizer="nesterov",
                         lr=0.02, batch_size=10, seed=4)
    for _ in range(3):
        assert trainer.run_epoch() == 5
    np.testing.assert_array_equal(a.params, b.params)
    steps, step_loss, grad_norms, _ = trainer.records()
    np.testing.assert_array_equal(steps, np.arange(15))
    np.testing.assert_array_equal(step_loss, hist.step_loss)
    np.testing.assert_array_equal(grad_norms, hist.grad_norms)


def test_divergence_ends_training_cleanly():
    task = ns.tasks.teacher_student(depth=1, width=8, n_train=64, n_test=8, seed=0)
    net = ns.MLP([8, 16, 16, 10], activation="relu", seed=0)
    with np.errstate(all="ignore"):
        hist = ns.train(net, task, lr=1e6, epochs=5, batch_size=16)
    assert hist.diverged and hist.diverged_step is not None
    assert hist.diverged_step < 20
    assert np.all(np.isfinite(net.params))
    assert hist.epochs_run == hist.diverged_step // 4 + 1  # 4 steps per epoch
    assert not np.isfinite(hist.step_loss[hist.diverged_step])
    assert np.all(np.isfinite(hist.step_loss[:hist.diverged_step]))


def test_an_overflowing_update_keeps_the_last_finite_values():
    task = ns.tasks.teacher_student(depth=1, width=4, n_train=8, n_test=4, seed=1)
    net = ns.MLP([4, 4, 10], seed=1)
    start = net.params.copy()
    # gradients of order 1e3 times lr = 1e308 overflow in the update itself
    hist = ns.train(net, (task.X_train, 1e3 * task.Y_train), lr=1e308, epochs=2, batch_size=8)
    assert hist.diverged and hist.diverged_step == 0
    assert np.isfinite(hist.step_loss[0])
    assert np.all(np.isfinite(net.params))
    _, grads = ns.MLP([4, 4, 10], seed=1).gradients(task.X_train, 1e3 * task.Y_train)
    with np.errstate(over="ignore"):
        stepped = start - 1e308 * grads.flat
    kept = ~np.isfinite(stepped)
    assert kept.any()
    np.testing.assert_array_equal(net.params[kept], start[kept])
    np.testing.assert_allclose(net.params[~kept], stepped[~kept], rtol=1e-12)


def test_gradient_clipping_bounds_the_step(regression):
    net = ns.MLP([5, 6, 6, 3], seed=0)
    before = net.params.copy()
    X, Y = regression.X_train[:10], regression.Y_train[:10]
    ns.train(net, (X, Y), lr=1.0, epochs=1, batch_size=10, clip_norm=1e-3)
    assert np.linalg.norm(net.params - before) == pytest.approx(1e-3, rel=1e-9)
    net = ns.MLP([5, 6, 6, 3], seed=0)
    ns.train(net, (X, Y), lr=1.0, epochs=1, batch_size=10, clip_value=1e-4)
    assert np.abs(net.params - before).max() == pytest.approx(1e-4, rel=1e-9)


def test_weight_decay_shrinks_parameters(regression):
    X, Y = regression.X_train[:10], regression.Y_train[:10]
    net = ns.MLP([5, 6, 6, 3], seed=0)
    ref = net.copy()
    _, grads = ref.gradients(X, Y)
    ns.train(net, (X, Y), lr=0.1, epochs=1, batch_size=10, weight_decay=0.5)
    np.testing.assert_allclose(net.params, ref.params - 0.1 * (grads.flat + 0.5 * ref.params),
                               rtol=1e-12, atol=1e-15)


def test_progress_bar(regression, capsys):
    net = ns.MLP([5, 6, 3], seed=0)
    ns.train(net, regression, epochs=2, progress=True)
    err = capsys.readouterr().err
    assert "train" in err and "2/2" in err


def test_batch_larger_than_the_data_set(regression):
    net = ns.MLP([5, 6, 3], seed=0)
    hist = ns.train(net, regression, epochs=2, batch_size=1000)
    np.testing.assert_array_equal(hist.steps, [0, 1])


def test_dispatch_by_model_and_rule(regression, monkeypatch):
    net = ns.MLP([5, 6, 3], seed=0)
    assert ns.train(net, regression, rule="backprop", epochs=1).rule == "backprop"
    with pytest.raises(ValueError, match="rule='feedback_alignment' does not apply to an MLP"):
        ns.train(net, regression, rule="feedback_alignment")
    import neurosim.rules

    seen = {}

    def fake(model, task, *, rule, **kwargs):
        seen.update(model=model, rule=rule, kwargs=kwargs)
        return History(rule=rule)

    monkeypatch.setattr(neurosim.rules, "train_rate_network", fake)
    model = object()
    hist = ns.train(model, regression, lr=0.1)
    assert seen == {"model": model, "rule": "backprop", "kwargs": {"lr": 0.1}}
    ns.train(model, regression, rule="feedback_alignment", epochs=2)
    assert seen["rule"] == "feedback_alignment" and hist.rule == "backprop"


@pytest.mark.parametrize("kwargs,error,match", [
    ({"lr": 0.0}, ValueError, "lr must be > 0, got 0.0"),
    ({"lr": -1.0}, ValueError, "lr must be > 0"),
    ({"lr": "fast"}, TypeError, "lr must be a real number"),
    ({"batch_size": 0}, ValueError, "batch_size must be >= 1, got 0"),
    ({"batch_size": 2.5}, TypeError, "batch_size must be an integer"),
    ({"epochs": 0}, ValueError, "epochs must be >= 1"),
    ({"optimizer": "adamw"}, ValueError, "unknown optimizer 'adamw'.*valid names: adagrad, "
                                         "adam, momentum, nesterov, rmsprop, sgd"),
    ({"optimizer": "adam", "momentum": 0.9}, ValueError,
     "optimizer 'adam' has no hyper-parameter 'momentum'; allowed: beta1, beta2, eps"),
    ({"optimizer": "momentum", "momentum": 1.0}, ValueError, r"momentum must lie in \[0.0, 1.0\)"),
    ({"optimizer": "adam", "eps": 0.0}, ValueError, "adam eps must be > 0"),
    ({"loss": "l1"}, ValueError, "unknown loss 'l1'"),
    ({"clip_norm": 0.0}, ValueError, "clip_norm must be > 0"),
    ({"clip_value": -1.0}, ValueError, "clip_value must be > 0"),
    ({"weight_decay": -0.1}, ValueError, "weight_decay must be >= 0"),
    ({"record_every": 0}, ValueError, "record_every must be >= 1"),
    ({"seed": -3}, ValueError, "seed must be >= 0"),
    ({"progress": "yes"}, TypeError, "progress must be True or False"),
])
def test_bad_arguments(regression, kwargs, error, match):
    net = ns.MLP([5, 6, 3], seed=0)
    before = net.params.copy()
    with pytest.raises(error, match=match):
        ns.train(net, regression, **kwargs)
    np.testing.assert_array_equal(net.params, before)


def test_bad_task_data(regression):
    net = ns.MLP([5, 6, 3], seed=0)
    X, Y = regression.X_train, regression.Y_train
    with pytest.raises(ValueError, match="task.X_train has 4 features .* network expects 5"):
        ns.train(net, (X[:, :4], Y))
    with pytest.raises(ValueError, match="task.Y_train has 2 columns .* 3 outputs"):
        ns.train(net, (X, Y[:, :2]))
    bad = X.copy()
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        ns.train(net, (bad, Y))
    with pytest.raises(TypeError, match="Task or an \\(X, Y\\) tuple"):
        ns.train(net, [X, Y])
    with pytest.raises(TypeError, match="net must be a neurosim MLP"):
        train_mlp(object(), (X, Y))


def test_recorded_norms_of_a_vanishing_float32_signal_do_not_underflow():
    """Deltas of ~1e-27 square below float32's range: History must sum the squares in float64."""
    net, X, Y, grad_ref, delta_ref = vanishing_float32_case()
    for shards in (1, 2):
        hist = ns.train(net.copy(), (X, Y), epochs=1, batch_size=48, lr=1e-12, shards=shards)
        np.testing.assert_allclose(hist.grad_norms[0], grad_ref, rtol=1e-5)
        np.testing.assert_allclose(hist.delta_norms[0], delta_ref, rtol=1e-5)
