"""Chunked training steps (``shards=1`` on a wide net): the whole-batch gradient with every
layer split by columns between threads; identical numbers on one and two threads, equal to the
unsplit gradient up to rounding."""

import importlib

import numpy as np
import pytest

import neurosim as ns
from neurosim.kernels import mlp_train as kt
from neurosim.kernels.chunked import chunk_bounds
from neurosim.train import MLPTrainer

train_module = importlib.import_module("neurosim.train")


@pytest.fixture
def every_net_is_wide(monkeypatch):
    """Small nets here stand in for wide ones: the trainer chunks any net worth two threads."""
    monkeypatch.setattr(train_module, "MIN_MULTIPLY_ADDS_PER_THREAD", 0)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 70))
    Y = rng.standard_normal((120, 10))
    return X, Y


def test_chunk_bounds_split_at_a_multiple_of_32():
    assert [chunk_bounds(63, c) for c in (0, 1)] == [(0, 63), (63, 63)]
    assert [chunk_bounds(64, c) for c in (0, 1)] == [(0, 32), (32, 64)]
    assert [chunk_bounds(200, c) for c in (0, 1)] == [(0, 128), (128, 200)]
    assert [chunk_bounds(1024, c) for c in (0, 1)] == [(0, 512), (512, 1024)]


def _trainer(net, X, Y, threads, **kwargs):
    options = dict(optimizer="adam", lr=0.003, batch_size=40, clip_norm=0.5, seed=3)
    options.update(kwargs)
    return MLPTrainer(net, X.astype(net.dtype), Y.astype(net.dtype), threads=threads,
                      shards=1, **options)


# Widths 200 and 96 split off the panel grid (128 + 72, 64 + 32); 10 outputs are one chunk.
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("sizes, options", [
    ([70, 200, 96, 10], {}),
    ([70, 128, 128, 10], {"dropout": 0.2, "activation": "prelu"}),
    ([70, 128, 128, 128, 10], {"residual": True, "activation": "relu"}),
])
def test_chunked_steps_do_not_depend_on_threads(every_net_is_wide, data, dtype, sizes, options):
    X, Y = data
    runs = []
    for threads in (1, 2):
        net = ns.MLP(sizes, seed=1, dtype=dtype, **options)
        trainer = _trainer(net, X, Y, threads)
        assert trainer.chunked and trainer.shards == 1 and trainer.threads == threads
        for _ in range(2):
            trainer.run_epoch()
        runs.append((trainer.records(), net.params.copy()))
    (r1, p1), (r2, p2) = runs
    for name, a, b in zip(("steps", "step_loss", "grad_norms", "delta_norms"), r1, r2,
                          strict=True):
        np.testing.assert_array_equal(a, b, err_msg=name)
    np.testing.assert_array_equal(p1, p2)
    assert r1[0].size == 6 and np.all(np.isfinite(p1))


@pytest.mark.parametrize("options", [{}, {"activation": "prelu"},
                                     {"residual": True, "activation": "relu"}])
def test_chunked_gradient_is_the_minibatch_gradient(every_net_is_wide, data, options):
    X, Y = data
    sizes = [70, 128, 128, 10] if options.get("residual") else [70, 200, 96, 10]
    net = ns.MLP(sizes, seed=2, **options)
    start = net.copy()
    trainer = _trainer(net, X, Y, 2, optimizer="sgd", lr=0.1, clip_norm=None, batch_size=60,
                       seed=5)
    assert trainer.chunked and trainer.threads == 2
    trainer.run_epoch()
    steps, step_loss, grad_norms, delta_norms = trainer.records()
    order_seq = np.random.SeedSequence(5).spawn(1 + kt.MAX_SHARDS)[0]
    idx = np.random.default_rng(order_seq).permutation(120)[:60]
    loss0, grads0 = start.gradients(X[idx], Y[idx])
    assert step_loss[0] == pytest.approx(loss0, rel=1e-13)
    np.testing.assert_allclose(grad_norms[0], [np.linalg.norm(w) for w in grads0.weights],
                               rtol=1e-12)
    np.testing.assert_allclose(delta_norms[0],
                               [np.mean(np.linalg.norm(d, axis=1)) for d in grads0.deltas],
                               rtol=1e-12)
    replay = start.copy()
    replay_trainer = _trainer(replay, X[idx], Y[idx], 1, optimizer="sgd", lr=0.1,
                              clip_norm=None, batch_size=60)
    replay_trainer.run_epoch()
    np.testing.assert_allclose(replay.params, start.params - 0.1 * grads0.flat, rtol=1e-12,
                               atol=1e-15)


def test_chunked_and_unsplit_whole_batch_steps_agree(data, monkeypatch):
    X, Y = data
    params = []
    for threshold in (0, 10**18):  # every net chunked / none
        monkeypatch.setattr(train_module, "MIN_MULTIPLY_ADDS_PER_THREAD", threshold)
        net = ns.MLP([70, 200, 96, 10], activation="prelu", seed=4)
        trainer = _trainer(net, X, Y, 2)
        assert trainer.chunked == (threshold == 0)
        for _ in range(2):
            trainer.run_epoch()
        params.append(net.params.copy())
    np.testing.assert_allclose(params[0], params[1], rtol=1e-10, atol=1e-13)


def test_chunked_divergence_stops_cleanly(every_net_is_wide, data):
    X, Y = data
    net = ns.MLP([70, 128, 128, 10], activation="relu", seed=0)
    with np.errstate(all="ignore"):
        hist = ns.train(net, (X, 1e3 * Y), lr=1e5, epochs=3, batch_size=40, threads=2,
                        shards=1)
    assert hist.diverged and np.all(np.isfinite(net.params))
    assert hist.steps[-1] == hist.diverged_step


def test_which_steps_are_chunked(data, monkeypatch):
    X, Y = data
    monkeypatch.setattr(train_module, "MIN_MULTIPLY_ADDS_PER_THREAD", 1_000_000)
    wide = ns.MLP([70, 256, 256, 10])  # 40 x 85k = 3.4 M multiply-adds per step
    trainer = MLPTrainer(wide, X, Y, batch_size=40, threads=2, shards=1)
    assert trainer.chunked and trainer.threads == 2
    assert MLPTrainer(wide, X, Y, batch_size=40, threads=1, shards=1).chunked
    sharded = MLPTrainer(wide, X, Y, batch_size=40, threads=2, shards=2)
    assert not sharded.chunked and sharded.threads == 2
    narrow = ns.MLP([70, 16, 10])
    trainer = MLPTrainer(narrow, X, Y, batch_size=40, threads=2, shards=1)
    assert not trainer.chunked and trainer.threads == 1
    bn = ns.MLP([70, 256, 256, 10], batchnorm=True)
    trainer = MLPTrainer(bn, X, Y, batch_size=40, threads=2, shards=1)
    assert not trainer.chunked and trainer.threads == 1


@pytest.mark.parametrize("clip_value", [np.inf, 0.003])
def test_checks_taken_during_the_backward_pass_cover_every_parameter(clip_value):
    """The sums of squares and finiteness probes the chunked pass takes chunk by chunk add up
    to those of one pass over the whole gradient, PReLU slopes included; a non-finite gradient
    is flagged."""
    from neurosim.kernels.chunked import MAX_CHUNKS, forward_backward_chunked
    from neurosim.kernels.optim import clipped_sumsq
    from neurosim.kernels.sync import SYNC_SIZE

    rng = np.random.default_rng(7)
    net = ns.MLP([70, 200, 96, 10], activation="prelu", seed=3)
    X = rng.standard_normal((24, 70))
    Y = rng.standard_normal((24, 10))
    work = (*net._workspace(24, False), *net._backward_workspace(24))
    H, U, A, _, _, MK, D, G0, G1, _ = work
    grad = np.empty_like(net.params)
    checks = np.full((2, MAX_CHUNKS), 5.0)
    loss = np.zeros(1)
    for inputs, finite in ((X, True), (np.where(X > 2.5, np.inf, X), False)):
        assert forward_backward_chunked(0, 1, np.zeros(SYNC_SIZE, np.int64), net.layout,
                                        net.act_params, net.params, inputs, Y, 0, True, H, U, A,
                                        MK, D, G0, G1, grad, clip_value, True,
                                        np.zeros(MAX_CHUNKS), checks, loss)
        total, whole_finite = clipped_sumsq(grad, clip_value, True)
        assert whole_finite == finite and np.all(np.isfinite(grad)) == finite
        if finite:
            assert checks[0].sum() == pytest.approx(total, rel=1e-12)
            np.testing.assert_array_equal(checks[1], 0.0)
        else:
            assert np.isnan(checks[1]).any()
