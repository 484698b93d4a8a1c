"""Benchmark tasks: shapes, labels, seeded splits and argument checks."""

import numpy as np
import pytest

from neurosim import tasks


def test_xor_and_parity_enumerate_every_pattern():
    t = tasks.xor()
    np.testing.assert_array_equal(t.labels_train, [0, 1, 1, 0])
    np.testing.assert_array_equal(t.X_train, t.X_test)
    p = tasks.parity(5)
    assert p.X_train.shape == (32, 5) and p.Y_train.shape == (32, 2)
    assert len({tuple(r) for r in p.X_train}) == 32
    expected = ((p.X_train > 0).sum(axis=1) % 2)
    np.testing.assert_array_equal(p.labels_train, expected)


@pytest.mark.parametrize("make", [
    lambda seed: tasks.two_spirals(n_per_class=50, noise=0.05, seed=seed),
    lambda seed: tasks.gaussian_blobs(n_classes=4, n_features=3, n_samples=120, seed=seed),
    lambda seed: tasks.teacher_student(depth=2, width=8, n_train=40, n_test=10, seed=seed),
])
def test_seeded_splits_are_reproducible_and_disjoint(make):
    a, b, c = make(1), make(1), make(2)
    for name in ("X_train", "Y_train", "X_test", "Y_test"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.X_train, c.X_train)
    train_rows = {tuple(r) for r in a.X_train}
    assert not any(tuple(r) in train_rows for r in a.X_test)
    assert a.X_train.shape[0] == a.Y_train.shape[0] and a.X_test.shape[0] == a.Y_test.shape[0]
    if a.kind == "classification":
        assert np.all(a.Y_train.sum(axis=1) == 1) and set(np.unique(a.Y_train)) == {0.0, 1.0}


def test_two_spirals_geometry():
    t = tasks.two_spirals(n_per_class=100, test_fraction=0.0)
    assert t.X_train.shape == (200, 2) and np.abs(t.X_train).max() <= 1.0
    counts = np.bincount(t.labels_train)
    np.testing.assert_array_equal(counts, [100, 100])


def test_teacher_student_targets_come_from_the_teacher():
    t = tasks.teacher_student(depth=1, width=6, n_train=30, n_test=5, n_inputs=4, n_outputs=3,
                              sigma_b=0.1, seed=3)
    rng = np.random.default_rng(3)
    W1 = rng.standard_normal((4, 6)) / np.sqrt(4)
    b1 = rng.standard_normal(6) * 0.1
    W2 = rng.standard_normal((6, 3)) / np.sqrt(6)
    b2 = rng.standard_normal(3) * 0.1
    X = rng.standard_normal((35, 4))
    Y = np.tanh(X @ W1 + b1) @ W2 + b2
    np.testing.assert_allclose(t.X_train, X[:30])
    np.testing.assert_allclose(t.Y_train, Y[:30], rtol=1e-12)
    assert t.kind == "regression"


def test_digits():
    pytest.importorskip("sklearn")
    t = tasks.digits(test_fraction=0.25, seed=0)
    assert t.X_train.shape[1] == 64 and t.Y_train.shape[1] == 10
    assert t.X_train.shape[0] + t.X_test.shape[0] == 1797
    assert 0.0 <= t.X_train.min() and t.X_train.max() <= 1.0


def test_as_task():
    X = np.arange(6.0).reshape(3, 2)
    reg = tasks.as_task((X, X[:, :1]))
    assert reg.kind == "regression" and reg.X_test is reg.X_train
    cls = tasks.as_task((X, np.eye(3)))
    assert cls.kind == "classification"
    t = tasks.xor()
    assert tasks.as_task(t) is t
    with pytest.raises(TypeError, match="Task or an \\(X, Y\\) tuple"):
        tasks.as_task([X, X])
    with pytest.raises(ValueError, match="X has 3 samples but Y has 2"):
        tasks.as_task((X, X[:2]))


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_bits must be >= 1"):
        tasks.parity(0)
    with pytest.raises(ValueError, match="n_bits must be <= 20"):
        tasks.parity(21)
    with pytest.raises(ValueError, match="test_fraction must lie in \\[0.0, 1.0\\)"):
        tasks.two_spirals(test_fraction=1.0)
    with pytest.raises(ValueError, match="noise must be >= 0"):
        tasks.two_spirals(noise=-0.1)
    with pytest.raises(ValueError, match="n_samples must be >= 3"):
        tasks.gaussian_blobs(n_classes=3, n_samples=2)
    with pytest.raises(ValueError, match="unknown activation 'sigmoidal'"):
        tasks.teacher_student(activation="sigmoidal")
    with pytest.raises(ValueError, match="unknown task 'mnist'"):
        tasks.get("mnist")
    with pytest.raises(TypeError, match="depth must be an integer"):
        tasks.teacher_student(depth=2.5)
