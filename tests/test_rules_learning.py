"""Learning rules in training: alignment, depth profiles, Oja, accuracy, bounds and Dale."""

import numpy as np
import pytest
from _blas_threads import one_blas_thread  # noqa: F401  (autouse fixture)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import neurosim as ns
from neurosim import rules


@pytest.fixture(scope="module")
def teacher():
    return ns.tasks.teacher_student(depth=1, width=20, n_train=1000, n_test=200, n_outputs=5,
                                    seed=0)


@pytest.fixture(scope="module")
def digits():
    return ns.tasks.digits(seed=0)


def test_feedback_alignment_angle_falls_during_training(teacher):
    rn = ns.RateNetwork([20, 50, 5], activation="tanh", seed=0)
    h = ns.train(rn, teacher, rule="feedback_alignment", lr=0.2, epochs=20, batch_size=20,
                 record_every=10)
    hidden = h.angles[:, 0]
    assert 80 < hidden[0] < 110  # random feedback: about orthogonal at the start
    assert np.mean(hidden[-10:]) < 65  # the forward weights come to align with B
    assert np.allclose(h.angles[:, 1], 0.0, atol=1e-4)  # the output layer gets the true error
    assert h.loss[-1] < 0.8 * h.loss[0]
    assert h.signal_norms.shape == h.delta_norms.shape == (h.steps.shape[0], 2)


def test_direct_feedback_alignment_error_does_not_shrink_with_depth(teacher):
    X, Y = teacher.X_train[:64], teacher.Y_train[:64]
    deep = ns.RateNetwork([20] + [50] * 8 + [5], seed=1, w_bounds=None)
    norms = {}
    for rule in ("backprop", "feedback_alignment", "direct_feedback_alignment"):
        cmp = rules.compare_to_gradient(deep, X, Y, rule)
        norms[rule] = np.array([np.mean(np.linalg.norm(s, axis=1)) for s in cmp.signals])
    for rule in ("backprop", "feedback_alignment"):
        assert norms[rule][0] < 1e-3 * norms[rule][-2]  # compounds layer by layer
    dfa = norms["direct_feedback_alignment"][:-1]
    assert dfa.max() / dfa.min() < 1.5  # flat across the hidden layers


def test_oja_converges_to_leading_principal_component():
    rng = np.random.default_rng(0)
    d = 6
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    std = np.array([1.0, 0.6, 0.5, 0.4, 0.3, 0.2])
    X = (rng.normal(size=(4000, d)) * std) @ Q.T
    rn = ns.RateNetwork([d, 1], activation="tanh", sigma_b=0.0, seed=3, sigma_w=0.5)
    h = ns.train(rn, (X, np.zeros((4000, 1))), rule="oja", lr=0.02, epochs=8, batch_size=20,
                 record_every=1000)
    assert h.epochs_run == 8 and np.all(np.isnan(h.signal_norms))
    w = rn.weights[0][:, 0]
    cos = abs(w @ Q[:, 0]) / np.linalg.norm(w)
    assert cos >= 0.99
    np.testing.assert_array_equal(rn.biases[0], 0.0)  # unsupervised rules leave biases alone


@pytest.mark.parametrize("rule,hidden,epochs,lr,threshold", [
    ("backprop", 32, 10, 2.0, 0.9),
    ("feedback_alignment", 32, 10, 2.0, 0.9),
    ("direct_feedback_alignment", 32, 10, 2.0, 0.9),
    ("equilibrium_propagation", 32, 4, 2.0, 0.85),
])
def test_rules_learn_digits(rule, hidden, epochs, lr, threshold, digits):
    ep = rule == "equilibrium_propagation"
    rn = ns.RateNetwork([64, hidden, 10], seed=0, feedback="symmetric" if ep else None,
                        dt=0.005 if ep else 0.001)
    kw = dict(beta=0.5, nudge="symmetric", tol=1e-4) if ep else {}
    h = ns.train(rn, digits, rule=rule, lr=lr, epochs=epochs, batch_size=16, record_every=1000,
                 **kw)
    assert h.rule == rule and h.epochs_run == epochs and not h.diverged
    assert h.test_accuracy[-1] >= threshold
    assert h.loss[-1] < h.loss[0]


def test_training_is_reproducible_and_takes_per_layer_rates(teacher):
    def run():
        rn = ns.RateNetwork([20, 10, 5], activation="tanh", seed=4)
        h = ns.train(rn, teacher, rule="node_perturbation", lr=[0.05, 0.1], epochs=2,
                     batch_size=50, seed=9, sigma=0.01, n_perturbations=4)
        return rn, h

    (a, ha), (b, hb) = run(), run()
    np.testing.assert_array_equal(a.weights[0], b.weights[0])
    np.testing.assert_array_equal(ha.angles, hb.angles)
    assert ha.steps.tolist() == list(range(40))
    np.testing.assert_allclose(ha.grad_norms, hb.grad_norms)
    assert np.all(ha.angles[:, 1] < 90)  # node perturbation descends on average


def test_train_validates_arguments(teacher):
    rn = ns.RateNetwork([20, 10, 5], seed=0)
    with pytest.raises(ValueError, match="one value per layer"):
        ns.train(rn, teacher, rule="backprop", lr=[0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match="lr"):
        ns.train(rn, teacher, rule="backprop", lr=-1.0)
    with pytest.raises(ValueError, match="momentum"):
        ns.train(rn, teacher, rule="backprop", momentum=1.0)
    with pytest.raises(ValueError, match="has no parameter 'optimizer'"):
        ns.train(rn, teacher, rule="backprop", optimizer="adam")
    with pytest.raises(ValueError, match="features"):
        ns.train(rn, ns.tasks.xor(), rule="backprop")


RULE_CASES = [
    ("backprop", {}),
    ("feedback_alignment", {}),
    ("direct_feedback_alignment", {}),
    ("node_perturbation", {"sigma": 0.1}),
    ("hebbian", {"decay": 0.1}),
    ("oja", {}),
    ("bcm", {}),
    ("equilibrium_propagation", {"beta": 0.5, "tol": 1e-6}),
]


@settings(max_examples=16, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    case=st.sampled_from(RULE_CASES),
    soft=st.booleans(),
    dale=st.one_of(st.none(), st.floats(0.0, 1.0)),
    lr=st.floats(0.01, 50.0),
    momentum=st.sampled_from([0.0, 0.9]),
    seed=st.integers(0, 100),
)
def test_property_learning_respects_bounds_and_dale(case, soft, dale, lr, momentum, seed):
    rule, kw = case
    ep = rule == "equilibrium_propagation"
    rn = ns.RateNetwork([3, 4, 2], seed=seed, dale=dale, w_bounds=(-0.3, 0.5),
                        bound_mode="soft" if soft else "clip", sigma_w=3.0,
                        feedback="symmetric" if ep else None, dt=0.005)
    signs = None if dale is None else [s.copy() for s in rn.dale_signs]
    rng = np.random.default_rng(seed)
    X, Y = rng.random((8, 3)), rng.random((8, 2))
    h = ns.train(rn, (X, Y), rule=rule, lr=lr, epochs=2, batch_size=4, momentum=momentum,
                 seed=seed, **kw)
    assert h.epochs_run + h.diverged >= 1
    for l, W in enumerate(rn.weights):
        assert np.all(np.isfinite(W))
        assert W.min() >= -0.3 and W.max() <= 0.5
        if signs is not None:
            assert np.all(W * signs[l][:, None] >= 0)
    low, high = rn.rate_range
    for r in rn.layer_outputs(X)[1]:
        assert r.min() >= low and r.max() <= high
