"""alignment_angles: a rule's update against the true gradient, at a point and over training."""

import numpy as np
import pytest

import neurosim as ns
from neurosim.analysis import alignment_angles
from neurosim.analysis.alignment import angle_between
from neurosim.rules import compare_to_gradient


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    rn = ns.RateNetwork([30, 40, 40, 5], activation="logistic", sigma_w=2.0, sigma_b=0.2,
                        w_bounds=(-2.0, 2.0), seed=1)
    return rn, rng.random((12, 30)), rng.random((12, 5))


def test_angles_wrap_compare_to_gradient(setup):
    rn, X, Y = setup
    al = alignment_angles(rn, X, Y, rule="feedback_alignment")
    sig = compare_to_gradient(rn, X, Y, "feedback_alignment")
    np.testing.assert_allclose(al.angles, sig.angles)
    assert al.layers.tolist() == [1, 2, 3] and al.rule == "feedback_alignment"
    assert al.angles[-1] == pytest.approx(0.0, abs=1e-6)  # the output layer gets the true error
    assert 60.0 < al.angles[0] < 120.0  # random feedback: hidden updates nearly orthogonal
    bp = alignment_angles(rn, X, Y, rule="backprop")
    np.testing.assert_allclose(bp.angles, 0.0, atol=1e-5)
    np.testing.assert_allclose(bp.signal_angles, 0.0, atol=1e-5)
    np.testing.assert_allclose(bp.update_norms, bp.grad_norms, rtol=1e-10)


def test_angles_over_training_from_a_history(setup):
    rn, X, Y = setup
    net = rn.copy()
    hist = ns.train(net, (X, Y), rule="feedback_alignment", lr=0.5, epochs=30, batch_size=12)
    al = alignment_angles(hist)
    assert al.angles.shape == hist.angles.shape and al.steps.shape == (hist.angles.shape[0],)
    assert np.all(np.isnan(al.signal_angles))
    # feedback alignment: the hidden layers' updates turn toward the gradient while training
    assert np.nanmean(al.angles[-5:, 0]) < np.nanmean(al.angles[:3, 0])


def test_angle_between_is_accurate_near_parallel_and_antiparallel():
    u = np.array([1.0, 0.0])
    assert angle_between(u, [1.0, 1e-9]) == pytest.approx(np.degrees(1e-9), rel=1e-6)
    assert angle_between(u, [-1.0, 1e-9]) == pytest.approx(180 - np.degrees(1e-9), rel=1e-12)
    assert angle_between(u, [0.0, 2.0]) == pytest.approx(90.0)
    assert np.isnan(angle_between(u, [0.0, 0.0]))


def test_bad_inputs(setup):
    rn, X, Y = setup
    with pytest.raises(ValueError, match="rule="):
        alignment_angles(rn, X, Y)
    with pytest.raises(ValueError, match="unknown rule"):
        alignment_angles(rn, X, Y, rule="backprob")
    with pytest.raises(ValueError, match="History"):
        alignment_angles(ns.History(angles=np.zeros((2, 3))), X, Y)
