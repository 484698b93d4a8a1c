"""trainable_depth: deep networks train near the order-chaos edge and fail deep in the ordered
phase, as 6 xi_c predicts."""

import math

import numpy as np
import pytest

import neurosim as ns
from neurosim.analysis import meanfield as mf
from neurosim.analysis import trainable_depth
from neurosim.analysis.trainability import Trainability


@pytest.fixture(scope="module")
def result():
    task = ns.tasks.gaussian_blobs(n_classes=3, n_features=8, n_samples=300, seed=0)
    return trainable_depth(task, [0.4, 1.2], [2, 20], width=32, epochs=10, lr=0.02,
                           batch_size=16, seeds=(0,))


def test_depth_limit_follows_six_xi_c(result):
    tr = result
    assert tr.metric == "accuracy" and tr.target == pytest.approx(2 / 3)
    assert tr.trained.shape == (1, 2, 2)
    six = tr.six_xi_c
    assert six[0] < 20 < six[1]  # sigma_w = 0.4: xi_c about 0.54; 1.2 is near critical
    assert tr.trained[0, 0, 0] and not tr.trained[0, 0, 1]  # ordered: shallow only
    assert tr.trained[0, 1, 1]  # near the edge of chaos: deep too
    np.testing.assert_array_equal(tr.max_trainable_depth(), [2, 20])
    assert tr.xi_c[0] == pytest.approx(mf.xi_c("tanh", 0.4, 0.05))
    assert tr.critical_sigma_w == pytest.approx(mf.critical_sigma_w("tanh", 0.05))
    assert np.all(np.isfinite(tr.initial_loss)) and not tr.diverged.any()


def test_round_trip_through_arrays(result):
    back = Trainability.from_arrays(result.to_arrays())
    np.testing.assert_array_equal(back.trained, result.trained)
    assert back.activation == "tanh" and back.metric == "accuracy"
    assert math.isclose(back.target, result.target)


def test_regression_tasks_use_the_loss_ratio():
    task = ns.tasks.teacher_student(depth=1, width=8, n_train=64, n_test=16, n_outputs=2)
    tr = trainable_depth(task, [1.0], [1], width=8, epochs=3, lr=0.05)
    assert tr.metric == "loss_ratio" and tr.target == 0.5
    assert tr.score[0, 0, 0] == pytest.approx(tr.final_loss[0, 0, 0] / tr.initial_loss[0, 0, 0])


def test_bad_inputs():
    task = ns.tasks.xor()
    with pytest.raises(ValueError, match="sigma_w"):
        trainable_depth(task, [0.0, 1.0], [1])
    with pytest.raises(ValueError, match="depths"):
        trainable_depth(task, [1.0], [-1])
    with pytest.raises(ValueError, match="metric"):
        trainable_depth(task, [1.0], [1], metric="f1")
    with pytest.raises(ValueError, match="explicit target"):
        trainable_depth(task, [1.0], [1], metric="loss")
    with pytest.raises(ValueError, match="classification"):
        trainable_depth(ns.tasks.teacher_student(n_train=8, n_test=4), [1.0], [1],
                        metric="accuracy")
