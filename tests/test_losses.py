"""Losses: values and gradients against NumPy references and finite differences."""

import numpy as np
import pytest
from scipy.special import logsumexp

from neurosim import losses


def ref_mse(out, Y):
    return 0.5 * np.mean(np.sum((out - Y) ** 2, axis=1))


def ref_cross_entropy(out, Y):
    return np.mean(logsumexp(out, axis=1) - np.sum(out * Y, axis=1))


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    out = rng.standard_normal((7, 5)) * 3
    Y = rng.dirichlet(np.ones(5), size=7)  # soft targets; one-hot is a special case
    return out, Y


@pytest.mark.parametrize("name,ref", [("mse", ref_mse), ("cross_entropy", ref_cross_entropy)])
def test_value_and_gradient(batch, name, ref):
    out, Y = batch
    loss = losses.get(name)
    value, grad = loss.value_and_gradient(out, Y)
    assert value == pytest.approx(ref(out, Y), rel=1e-13)
    assert loss.value(out, Y) == value
    h = 1e-5
    fd = np.zeros_like(out)
    for idx in np.ndindex(out.shape):
        plus, minus = out.copy(), out.copy()
        plus[idx] += h
        minus[idx] -= h
        fd[idx] = (ref(plus, Y) - ref(minus, Y)) / (2 * h)
    assert np.max(np.abs(grad - fd)) <= 1e-8 * np.max(np.abs(grad))


def test_cross_entropy_is_stable_for_huge_logits():
    out = np.array([[1e4, -1e4, 0.0], [-800.0, -800.0, -799.0]])
    Y = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    value, grad = losses.get("cross_entropy").value_and_gradient(out, Y)
    expected = (2e4 + (np.log(2 + np.e) - 1.0)) / 2
    assert value == pytest.approx(expected, rel=1e-12)
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad[0], [0.5, -0.5, 0.0], atol=1e-15)


@pytest.mark.parametrize("name", ["mse", "cross_entropy"])
def test_float32_stays_float32(batch, name):
    out, Y = batch
    value, grad = losses.get(name).value_and_gradient(out.astype(np.float32), Y)
    assert grad.dtype == np.float32
    v64, g64 = losses.get(name).value_and_gradient(out, Y)
    assert value == pytest.approx(v64, rel=1e-5)
    np.testing.assert_allclose(grad, g64, rtol=1e-4, atol=1e-6)


def test_registry_and_bad_input(batch):
    out, Y = batch
    assert losses.names() == ("mse", "cross_entropy")
    assert losses.get(losses.get("mse")).name == "mse"
    with pytest.raises(ValueError, match="unknown loss 'mae'.*valid names: cross_entropy, mse"):
        losses.get("mae")
    with pytest.raises(ValueError, match="Y has 4 features"):
        losses.get("mse").value(out, Y[:, :4])
    with pytest.raises(ValueError, match="output has 7 samples but Y has 6"):
        losses.get("mse").value(out, Y[:6])
    with pytest.raises(ValueError, match="NaN or inf"):
        losses.get("mse").value(np.full_like(out, np.nan), Y)
