"""Training works: xor, two spirals and digits reach the accuracies the issue asks for."""

import numpy as np
import pytest

import neurosim as ns


def test_xor_is_solved():
    net = ns.MLP([2, 8, 2], activation="tanh", seed=0)
    hist = ns.train(net, ns.tasks.xor(), optimizer="adam", lr=0.05, epochs=200, batch_size=4,
                    loss="cross_entropy")
    assert hist.accuracy[-1] == 1.0
    assert hist.loss[-1] < 0.01
    assert not hist.diverged


def test_xor_with_plain_sgd_and_mse():
    net = ns.MLP([2, 8, 2], activation="tanh", seed=1)
    hist = ns.train(net, ns.tasks.xor(), optimizer="momentum", lr=0.1, epochs=300,
                    batch_size=4)
    np.testing.assert_array_equal(net.forward(ns.tasks.xor().X_train).argmax(axis=1),
                                  [0, 1, 1, 0])
    assert hist.loss[-1] < 0.05


def test_two_spirals_above_95_percent_training_accuracy():
    task = ns.tasks.two_spirals(seed=0)
    net = ns.MLP([2, 64, 64, 2], activation="tanh", seed=0)
    hist = ns.train(net, task, optimizer="adam", lr=0.01, epochs=150, batch_size=32,
                    loss="cross_entropy", record_every=25)
    assert hist.accuracy[-1] > 0.95
    assert hist.epochs_run == 150


def test_digits_above_95_percent_test_accuracy_with_one_hidden_layer():
    pytest.importorskip("sklearn")
    task = ns.tasks.digits(seed=0)
    net = ns.MLP([64, 64, 10], activation="tanh", seed=0)
    hist = ns.train(net, task, optimizer="adam", lr=3e-3, epochs=20, batch_size=32,
                    loss="cross_entropy", record_every=20)
    assert hist.test_accuracy[-1] > 0.95
    assert hist.accuracy[-1] > hist.accuracy[0]


@pytest.mark.parametrize("options", [{"batchnorm": True}, {"residual": True},
                                     {"dropout": 0.1}, {"activation": "prelu"}])
def test_options_train(options):
    task = ns.tasks.gaussian_blobs(n_classes=3, n_features=4, n_samples=150, seed=1)
    net = ns.MLP([4, 16, 16, 3], seed=2, **options)
    hist = ns.train(net, task, optimizer="adam", lr=0.01, epochs=15, batch_size=16,
                    loss="cross_entropy")
    assert hist.test_accuracy[-1] > 0.9
    assert hist.loss[-1] < hist.loss[0]
    if net.batchnorm:  # running statistics moved away from their initial values
        assert not np.allclose(net.running_means[0], 0.0)
