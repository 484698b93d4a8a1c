"""Activation registry and kernels against NumPy references and finite differences."""

import re
import warnings

import numpy as np
import pytest
from numba import njit
from scipy.special import erf, expit

from neurosim import activations
from neurosim.kernels import dense as kd

X = np.concatenate([np.linspace(-6.0, 6.0, 2401), [-1e3, -50.0, -1.0, -1e-9, 0.0, 1e-9, 1.0,
                                                  50.0, 1e3]])
SMOOTH_GRID = np.linspace(-4.0, 4.0, 161) + 0.0123  # avoids the kinks at 0, +-1


def reference(name, params):
    """phi and phi' written from the definitions (NumPy / SciPy)."""
    p = params
    if name == "linear":
        return lambda x: x, lambda x: np.ones_like(x)
    if name == "sigmoid":
        return expit, lambda x: expit(x) * (1 - expit(x))
    if name == "tanh":
        return np.tanh, lambda x: 1 - np.tanh(x) ** 2
    if name == "relu":
        return lambda x: np.maximum(x, 0), lambda x: (x > 0) * 1.0
    if name in ("leaky_relu", "prelu"):
        s = p["slope"]
        return lambda x: np.where(x > 0, x, s * x), lambda x: np.where(x > 0, 1.0, s)
    if name == "elu":
        a = p["alpha"]
        return (lambda x: np.where(x > 0, x, a * np.expm1(np.minimum(x, 0))),
                lambda x: np.where(x > 0, 1.0, a * np.exp(np.minimum(x, 0))))
    if name == "softsign":
        return lambda x: x / (1 + np.abs(x)), lambda x: 1 / (1 + np.abs(x)) ** 2
    if name == "hard_tanh":
        return lambda x: np.clip(x, -1, 1), lambda x: (np.abs(x) < 1) * 1.0
    if name == "erf":
        return erf, lambda x: 2 / np.sqrt(np.pi) * np.exp(-x * x)
    if name == "logistic":
        r, g, t = p["r_max"], p["gain"], p["threshold"]
        return (lambda x: r * expit(g * (x - t)),
                lambda x: r * g * expit(g * (x - t)) * (1 - expit(g * (x - t))))
    if name == "saturating_linear":
        r, g, t = p["r_max"], p["gain"], p["threshold"]
        return (lambda x: np.clip(g * (x - t), 0, r),
                lambda x: ((g * (x - t) > 0) & (g * (x - t) < r)) * g)
    if name == "naka_rushton":
        r, n, c = p["r_max"], p["exponent"], p["c50"]

        def value(x):
            xp = np.maximum(x, 0.0) ** n
            return r * xp / (xp + c**n)

        def deriv(x):
            xp = np.maximum(x, 0.0)
            return np.where(x > 0, r * n * c**n * xp ** (n - 1) / (xp**n + c**n) ** 2, 0.0)

        return value, deriv
    raise KeyError(name)


CASES = [(name, {}) for name in activations.names()] + [
    ("leaky_relu", {"slope": 0.2}), ("elu", {"alpha": 0.7}),
    ("logistic", {"r_max": 50.0, "gain": 0.3, "threshold": 2.0}),
    ("saturating_linear", {"r_max": 2.0, "gain": 0.5, "threshold": -1.0}),
    ("naka_rushton", {"r_max": 3.0, "exponent": 2.5, "c50": 0.7}),
]


def test_registry_has_the_issue_activations():
    expected = {"linear", "sigmoid", "tanh", "relu", "leaky_relu", "prelu", "elu", "softsign",
                "hard_tanh", "erf"}
    assert expected <= set(activations.MLP_ACTIVATIONS)
    assert set(activations.MLP_ACTIVATIONS) <= set(activations.names())


@pytest.mark.parametrize("name,params", CASES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_values_and_derivatives_match_reference(name, params, dtype):
    act = activations.get(name, **params)
    ref_value, ref_deriv = reference(name, act.params)
    x = X.astype(dtype)
    v = act.value(x)
    d = act.derivative(x)
    assert v.dtype == dtype and d.dtype == dtype
    tol = 1e-13 if dtype == np.float64 else 2e-6
    scale = max(1.0, act.params.get("r_max", 1.0))
    np.testing.assert_allclose(v, ref_value(x.astype(np.float64)), rtol=tol, atol=tol * scale)
    np.testing.assert_allclose(d, ref_deriv(x.astype(np.float64)), rtol=tol * 10,
                               atol=tol * 10 * scale)


@pytest.mark.parametrize("name,params", CASES)
def test_derivatives_match_finite_differences(name, params):
    act = activations.get(name, **params)
    x = SMOOTH_GRID
    h = 1e-6
    fd = (act.value(x + h) - act.value(x - h)) / (2 * h)
    np.testing.assert_allclose(act.derivative(x), fd, rtol=1e-7, atol=1e-8)
    fd2 = (act.derivative(x + h) - act.derivative(x - h)) / (2 * h)
    np.testing.assert_allclose(act.second_derivative(x), fd2, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,params", CASES)
def test_values_lie_in_the_output_range(name, params):
    act = activations.get(name, **params)
    lo, hi = act.output_range
    v = act.value(np.linspace(-1e4, 1e4, 20001))
    assert np.all(v >= lo) and np.all(v <= hi)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sigmoid_is_stable_beyond_700(dtype):
    x = np.array([-1e30, -800.0, -701.0, 701.0, 800.0, 1e30], dtype=dtype)
    for act in (activations.get("sigmoid"), activations.get("logistic", gain=4.0)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with np.errstate(all="raise"):
                v = act.value(x)
                d = act.derivative(x)
        assert v.dtype == dtype and np.all(np.isfinite(v)) and np.all(np.isfinite(d))
        np.testing.assert_array_equal(v[x > 0], 1.0)
        small = 1e-300 if dtype == np.float64 else 1e-30
        assert np.all((v[x < 0] >= 0) & (v[x < 0] < small))
        assert np.all((d >= 0) & (d < small))


def test_bad_names_and_parameters():
    with pytest.raises(ValueError, match="unknown activation 'tahn'.*did you mean 'tanh'"):
        activations.get("tahn")
    with pytest.raises(ValueError, match="valid names: .*relu"):
        activations.get(3)
    with pytest.raises(ValueError, match="no parameter 'slope'.*allowed: none"):
        activations.get("tanh", slope=1.0)
    with pytest.raises(ValueError, match="r_max > 0"):
        activations.get("logistic", r_max=0.0)
    with pytest.raises(ValueError, match="alpha >= 0"):
        activations.get("elu", alpha=-1.0)
    with pytest.raises(ValueError, match="finite"):
        activations.get("leaky_relu", slope=np.nan)


# --------------------------------------------------------------------- vectorised tanh


def ulp_error(values, x, dtype):
    exact = np.tanh(x.astype(np.longdouble))
    spacing = np.spacing(np.maximum(np.abs(exact.astype(dtype)), np.finfo(dtype).tiny))
    return np.abs(values.astype(np.longdouble) - exact) / spacing.astype(np.longdouble)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_tanh_fast_is_within_1_1_ulp(dtype):
    rng = np.random.default_rng(0)
    tiny = -300 if dtype == np.float64 else -37
    x = np.concatenate([rng.uniform(-1.0, 1.0, 200_000), rng.uniform(-25.0, 25.0, 200_000),
                        rng.uniform(0.65, 0.75, 100_000),
                        10.0 ** rng.uniform(tiny, 0, 50_000)]).astype(dtype)
    out = np.empty_like(x)
    kd.apply_tanh_fast(x, out)
    assert out.dtype == dtype
    assert ulp_error(out, x, dtype).max() <= 1.1


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_tanh_fast_special_values(dtype):
    info = np.finfo(dtype)
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, info.tiny, info.smallest_subnormal,
                  -info.max, 30.0], dtype=dtype)
    out = np.empty_like(x)
    kd.apply_tanh_fast(x, out)
    np.testing.assert_array_equal(out[[0, 2, 3, 5, 6, 7, 8]],
                                  np.array([0.0, 1.0, -1.0, info.tiny, info.smallest_subnormal,
                                            -1.0, 1.0], dtype=dtype))
    assert np.signbit(out[1]) and out[1] == 0.0
    assert np.isnan(out[4])


def _body_ir(dispatcher, *args):
    """LLVM IR of a fresh (uncached) compile of a kernel, without the Python wrapper."""
    fresh = njit(cache=False, error_model="numpy", fastmath=kd.FASTMATH)(dispatcher.py_func)
    fresh(*args)
    ir = fresh.inspect_llvm(fresh.signatures[0])
    bodies = re.split(r"\n(?=define )", ir)
    return "\n".join(b for b in bodies if b.startswith("define") and "cpython" not in
                     b.split("\n", 1)[0])


def test_float32_elementwise_kernels_never_widen_to_float64():
    f = np.float32
    m = np.ones((3, 4), f)
    v = np.ones(4, f)
    z = f(0.0)
    for kernel, args in [
        (kd.bias_activation, (m, v, activations.get("tanh").code, z, z, z, m.copy())),
        (kd.bias_activation, (m, v, activations.get("elu").code, f(1.0), z, z, m.copy())),
        (kd.activation_backward, (m, m, True, m, m, activations.get("prelu").code, f(0.2), z, z,
                                  m.copy(), v.copy())),
        (kd.batchnorm_forward, (m, v, v, True, f(1e-5), v, v, m.copy(), v.copy(), v.copy(),
                                v.copy(), m.copy())),
        (kd.batchnorm_backward, (m, m, v, v, True, v, v.copy(), m.copy(), v.copy())),
    ]:
        ir = _body_ir(kernel, *args)
        assert "define" in ir
        assert not re.search(r"fpext float .* to double", ir), kernel.__name__
        assert not re.search(r"= f(add|sub|mul|div) [a-z ]*double", ir), kernel.__name__
