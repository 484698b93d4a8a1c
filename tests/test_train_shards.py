"""Sharded minibatches: two shards on one or two threads give identical numbers, equal to the
unsharded gradient up to rounding; the shard count follows the thread count by default."""

import importlib

import numpy as np
import pytest

import neurosim as ns
from neurosim.kernels import mlp_train as kt
from neurosim.kernels import sync as ksync
from neurosim.train import MLPTrainer, _run_team

train_module = importlib.import_module("neurosim.train")

@pytest.fixture(autouse=True)
def two_threads_even_for_small_nets(monkeypatch):
    """The nets here are small enough that the trainer would run both shards on one thread;
    these tests are about the two-thread path."""
    monkeypatch.setattr(train_module, "MIN_MULTIPLY_ADDS_PER_THREAD", 0)


@pytest.fixture(scope="module")
def task():
    return ns.tasks.teacher_student(depth=2, width=12, n_train=134, n_test=20, n_inputs=6,
                                    n_outputs=4, seed=0)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("options", [{}, {"dropout": 0.2, "activation": "prelu"},
                                     {"residual": True}])
def test_threads_do_not_change_the_numbers(task, dtype, options):
    runs = []
    for threads in (1, 2):
        net = ns.MLP([6, 12, 12, 4], seed=1, dtype=dtype, **options)
        # batches of 33, 33, 33, 33 and 2: shards of 17 + 16 rows, then 1 + 1
        trainer = MLPTrainer(net, task.X_train, task.Y_train, optimizer="adam", lr=0.01,
                             batch_size=33, clip_norm=0.5, seed=3, threads=threads, shards=2)
        assert trainer.shards == 2 and trainer.threads == threads
        for _ in range(2):
            trainer.run_epoch()
        runs.append((trainer.records(), net.params.copy()))
    (r1, p1), (r2, p2) = runs
    for name, a, b in zip(("steps", "step_loss", "grad_norms", "delta_norms"), r1, r2,
                          strict=True):
        np.testing.assert_array_equal(a, b, err_msg=name)
    np.testing.assert_array_equal(p1, p2)
    assert r1[0].size == 10


def test_sharded_gradient_is_the_minibatch_gradient(task):
    net = ns.MLP([6, 12, 12, 4], seed=2)
    start = net.copy()
    trainer = MLPTrainer(net, task.X_train, task.Y_train, lr=0.1, batch_size=67, seed=5,
                         threads=2)
    assert trainer.shards == 2 and trainer.threads == 2
    trainer.run_epoch()
    steps, step_loss, grad_norms, delta_norms = trainer.records()
    order_seq = np.random.SeedSequence(5).spawn(1 + kt.MAX_SHARDS)[0]
    idx = np.random.default_rng(order_seq).permutation(134)[:67]
    loss0, grads0 = start.gradients(task.X_train[idx], task.Y_train[idx])
    assert step_loss[0] == pytest.approx(loss0, rel=1e-13)
    np.testing.assert_allclose(grad_norms[0], [np.linalg.norm(w) for w in grads0.weights],
                               rtol=1e-13)
    np.testing.assert_allclose(delta_norms[0],
                               [np.mean(np.linalg.norm(d, axis=1)) for d in grads0.deltas],
                               rtol=1e-13)
    # first update: plain SGD with the minibatch gradient
    replay = start.copy()
    ns.train(replay, (task.X_train[idx], task.Y_train[idx]), lr=0.1, epochs=1, batch_size=67,
             threads=1)
    np.testing.assert_allclose(replay.params, start.params - 0.1 * grads0.flat, rtol=1e-12,
                               atol=1e-15)


def test_small_batches_and_batchnorm_use_one_shard(task):
    net = ns.MLP([6, 12, 4], seed=0)
    assert MLPTrainer(net, task.X_train, task.Y_train, batch_size=31).shards == 1
    assert MLPTrainer(net, task.X_train, task.Y_train, batch_size=32, threads=1).shards == 2
    assert MLPTrainer(net, task.X_train, task.Y_train, batch_size=32, threads=1,
                      shards=1).shards == 1
    assert MLPTrainer(net, task.X_train, task.Y_train, batch_size=32, threads=2).shards == 2
    assert MLPTrainer(net, task.X_train, task.Y_train, batch_size=32, threads=1,
                      shards=2).shards == 2
    with pytest.raises(ValueError, match="shards must be 1 or 2, got 3"):
        MLPTrainer(net, task.X_train, task.Y_train, shards=3)
    with pytest.raises(ValueError, match="shards must be >= 1, got 0"):
        MLPTrainer(net, task.X_train, task.Y_train, shards=0)
    bn = ns.MLP([6, 12, 12, 4], batchnorm=True, seed=0)
    trainer = MLPTrainer(bn, task.X_train, task.Y_train, batch_size=64, threads=2)
    assert trainer.shards == 1 and trainer.threads == 1


def test_divergence_with_two_shards(task):
    net = ns.MLP([6, 12, 12, 4], activation="relu", seed=0)
    with np.errstate(all="ignore"):
        hist = ns.train(net, (task.X_train, 1e3 * task.Y_train), lr=1e5, epochs=3,
                        batch_size=64, threads=2)
    assert hist.diverged and np.all(np.isfinite(net.params))
    assert hist.steps[-1] == hist.diverged_step


def test_an_error_in_one_thread_stops_the_others():
    sync = np.zeros(ksync.SYNC_SIZE, np.int64)
    seen = {}

    def work(tid):
        if tid == 1:
            raise RuntimeError("worker failed")
        seen["passed"] = ksync.barrier(sync, 2)  # would wait forever without the abort flag
        return 0

    with pytest.raises(RuntimeError, match="worker failed"):
        _run_team(2, work, sync)
    assert seen["passed"] is False


def test_barrier_keeps_threads_in_step():
    sync = np.zeros(ksync.SYNC_SIZE, np.int64)
    log = np.zeros((2, 200), np.int64)
    counter = np.zeros(1, np.int64)

    def work(tid):
        for r in range(200):
            if tid == 0:
                counter[0] += 1
            assert ksync.barrier(sync, 2)
            log[tid, r] = counter[0]
            assert ksync.barrier(sync, 2)
        return 0

    _run_team(2, work, sync)
    np.testing.assert_array_equal(log[0], np.arange(1, 201))
    np.testing.assert_array_equal(log[1], np.arange(1, 201))


def test_default_numbers_do_not_depend_on_threads(task):
    runs = []
    for threads in (1, 2):
        net = ns.MLP([6, 12, 12, 4], seed=1)
        hist = ns.train(net, task, lr=0.05, epochs=2, batch_size=40, seed=2, threads=threads)
        runs.append((net.params.copy(), np.asarray(hist.grad_norms)))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    one = ns.MLP([6, 12, 12, 4], seed=1)
    ns.train(one, task, lr=0.05, epochs=2, batch_size=40, seed=2, threads=1, shards=1)
    np.testing.assert_allclose(one.params, runs[0][0], rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="shards must be 1 or 2, got 4"):
        ns.train(one, task, shards=4)


def test_small_nets_run_both_shards_on_one_thread(task, monkeypatch):
    monkeypatch.setattr(train_module, "MIN_MULTIPLY_ADDS_PER_THREAD", 8_000_000)
    small = ns.MLP([64] + [64] * 20 + [10], dtype="float32")  # 32 x 83k = 2.7 M per step
    X = np.zeros((64, 64), np.float32)
    Y = np.zeros((64, 10), np.float32)
    trainer = MLPTrainer(small, X, Y, batch_size=32, threads=2)
    assert trainer.shards == 2 and trainer.threads == 1
    wide = ns.MLP([64] + [256] * 4 + [10], dtype="float32")  # 64 x 216k = 13.8 M per step
    trainer = MLPTrainer(wide, X, Y, batch_size=64, threads=2)
    assert trainer.shards == 2 and trainer.threads == 2
