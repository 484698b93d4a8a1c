"""RateNetwork and RecurrentRateNetwork: dynamics against plain-NumPy and SciPy references."""

import numpy as np
import pytest
from _blas_threads import one_blas_thread  # noqa: F401  (autouse fixture)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.integrate import solve_ivp

import neurosim as ns
from neurosim.bio import ConvergenceWarning

ACTS = [("logistic", {"gain": 2.0, "threshold": 0.3}),
        ("saturating_linear", {"gain": 1.5, "threshold": -0.2}),
        ("naka_rushton", {"exponent": 2.0, "c50": 0.5}),
        ("tanh", {})]


def ref_feedforward(rn, X):
    """Plain-NumPy fixed point of the feedforward network."""
    rates = []
    r = X
    for W, b in zip(rn.weights, rn.biases, strict=True):
        r = rn.activation.value(r @ W + b)
        rates.append(r)
    return rates


def ref_euler(rn, X, steps, initial=None):
    """Plain-NumPy synchronous update r <- r + a (F(h) - r) of every layer."""
    a = rn.integration_coefficient
    rates = ([np.zeros((X.shape[0], n)) for n in rn.sizes[1:]] if initial is None
             else [r.copy() for r in initial])
    out = [[r.copy() for r in rates]]
    for _ in range(steps):
        prev = [X] + rates
        new = []
        for l, (W, b) in enumerate(zip(rn.weights, rn.biases, strict=True)):
            h = prev[l] @ W + b
            if rn.feedback == "symmetric" and l < rn.n_layers - 1:
                h = h + rates[l + 1] @ rn.weights[l + 1].T
            new.append(rates[l] + a * (rn.activation.value(h) - rates[l]))
        rates = new
        out.append([r.copy() for r in rates])
    return out


@pytest.fixture(scope="module")
def X():
    return np.random.default_rng(1).random((5, 4))


@pytest.mark.parametrize("name,params", ACTS)
def test_steady_state_equals_independent_fixed_point(name, params, X):
    rn = ns.RateNetwork([4, 6, 5, 3], activation=name, activation_params=params, seed=3,
                        sigma_w=1.5, sigma_b=0.2)
    ref = ref_feedforward(rn, X)
    res = rn.steady_state(X, tol=1e-12)
    assert res.converged and res.residual < 1e-12 and res.steps > 0
    for got, want in zip(res.rates, ref, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    np.testing.assert_allclose(rn.forward(X), ref[-1], rtol=1e-13, atol=1e-15)
    pre, post = rn.layer_outputs(X)
    np.testing.assert_allclose(pre[1], ref[0] @ rn.weights[1] + rn.biases[1], atol=1e-13)
    np.testing.assert_allclose(post[-1], ref[-1], atol=1e-15)


def test_symmetric_fixed_point_solves_self_consistency(X):
    rn = ns.RateNetwork([4, 6, 5, 3], activation="logistic", feedback="symmetric", seed=4,
                        sigma_w=1.0, sigma_b=0.3)
    res = rn.steady_state(X, tol=1e-13)
    r1, r2, r3 = res.rates
    W1, W2, W3 = rn.weights
    b1, b2, b3 = rn.biases
    F = rn.activation.value
    np.testing.assert_allclose(r1, F(X @ W1 + b1 + r2 @ W2.T), atol=1e-12)
    np.testing.assert_allclose(r2, F(r1 @ W2 + b2 + r3 @ W3.T), atol=1e-12)
    np.testing.assert_allclose(r3, F(r2 @ W3 + b3), atol=1e-12)
    np.testing.assert_allclose(rn.forward(X), r3, atol=1e-7)


@pytest.mark.parametrize("integrator", ["euler", "exponential"])
@pytest.mark.parametrize("feedback", [None, "symmetric"])
def test_simulate_matches_numpy_euler(integrator, feedback, X):
    rn = ns.RateNetwork([4, 5, 3], activation="logistic", integrator=integrator,
                        feedback=feedback, seed=5, sigma_b=0.3, tau=0.02, dt=0.004)
    init = [np.full((5, 5), 0.3), np.full((5, 3), 0.7)]
    tr = rn.simulate(X, steps=12, record_every=3, initial=init)
    ref = ref_euler(rn, X, 12, init)
    assert tr.times.shape == (5,)
    np.testing.assert_allclose(tr.times, np.arange(5) * 3 * 0.004)
    for l in range(2):
        assert tr.rates[l].shape == (5, 5, rn.sizes[l + 1])
        want = np.stack([ref[k][l] for k in range(0, 13, 3)])
        np.testing.assert_allclose(tr.rates[l], want, rtol=0, atol=1e-14)


def test_simulate_agrees_with_solve_ivp(X):
    rn = ns.RateNetwork([4, 5, 3], activation="tanh", seed=6, tau=0.01, dt=1e-5,
                        w_bounds=None, sigma_w=2.0, sigma_b=0.3, integrator="exponential")
    steps = 1500
    tr = rn.simulate(X[:2], steps=steps, record_every=steps)
    W1, W2 = rn.weights
    b1, b2 = rn.biases

    def rhs(_, y):
        r1 = y[:10].reshape(2, 5)
        r2 = y[10:].reshape(2, 3)
        d1 = (-r1 + np.tanh(X[:2] @ W1 + b1)) / rn.tau
        d2 = (-r2 + np.tanh(r1 @ W2 + b2)) / rn.tau
        return np.concatenate([d1.ravel(), d2.ravel()])

    sol = solve_ivp(rhs, (0, steps * rn.dt), np.zeros(16), rtol=1e-11, atol=1e-12)
    end = sol.y[:, -1]
    # Exponential Euler is first order: global error ~ (dt / tau) * |r| / 2.
    np.testing.assert_allclose(tr.rates[0][-1].ravel(), end[:10], atol=5e-4)
    np.testing.assert_allclose(tr.rates[1][-1].ravel(), end[10:], atol=5e-4)
    fine = ns.RateNetwork([4, 5, 3], activation="tanh", seed=6, tau=0.01, dt=2.5e-6,
                          w_bounds=None, sigma_w=2.0, sigma_b=0.3, integrator="exponential")
    tr_fine = fine.simulate(X[:2], steps=4 * steps, record_every=4 * steps)
    err = np.abs(tr.rates[1][-1].ravel() - end[10:]).max()
    err_fine = np.abs(tr_fine.rates[1][-1].ravel() - end[10:]).max()
    assert err_fine < err / 3  # first-order convergence toward the ODE solution


def test_steady_state_flags_non_convergence(X):
    rn = ns.RateNetwork([4, 6, 3], seed=1)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        res = rn.steady_state(X, max_steps=5)
    assert not res.converged and res.steps == 5 and res.residual > res.tol


def test_float32_network_keeps_its_dtype(X):
    rn = ns.RateNetwork([4, 6, 3], seed=2, dtype="float32")
    out = rn.forward(X)
    assert out.dtype == np.float32
    res = rn.steady_state(X)
    assert res.converged and res.rates[0].dtype == np.float32
    np.testing.assert_allclose(out, ref_feedforward(rn, X.astype(np.float32))[-1], atol=1e-5)
    assert rn.simulate(X, steps=3).rates[1].dtype == np.float32


def test_init_bounds_and_dale_signs():
    rn = ns.RateNetwork([3, 40, 20], sigma_w=4.0, w_bounds=(-0.5, 0.8), dale=0.75, seed=0)
    for l, W in enumerate(rn.weights):
        signs = rn.dale_signs[l]
        assert signs.shape == (rn.sizes[l],)
        assert np.all(W[signs > 0] >= 0) and np.all(W[signs < 0] <= 0)
        assert W.min() >= -0.5 and W.max() <= 0.8
    assert np.sum(rn.dale_signs[1] > 0) == 30
    clipped = ns.RateNetwork([3, 4], sigma_w=5.0, w_bounds=(-0.5, 0.5), seed=0)
    assert np.isclose(np.abs(clipped.weights[0]).max(), 0.5)
    rescaled = ns.RateNetwork([3, 4], sigma_w=5.0, w_bounds=(-0.5, 0.5), seed=0,
                              init_bounds="rescale")
    raw = np.random.default_rng(0).standard_normal((3, 4)) * 5.0 / np.sqrt(3)
    np.testing.assert_allclose(rescaled.weights[0], raw * 0.5 / np.abs(raw).max())


def test_feedback_matrices_are_fixed_and_reproducible():
    a = ns.RateNetwork([3, 5, 4, 2], seed=7)
    b = ns.RateNetwork([3, 5, 4, 2], seed=7)
    fa = a.feedback_matrices("feedback_alignment")
    assert [m.shape for m in fa] == [(3, 5), (5, 4), (4, 2)]
    np.testing.assert_array_equal(fa[1], a.feedback_matrices("feedback_alignment")[1])
    np.testing.assert_array_equal(fa[1], b.feedback_matrices("feedback_alignment")[1])
    dfa = a.feedback_matrices("direct_feedback_alignment")
    assert [m.shape for m in dfa] == [(2, 5), (2, 4), (2, 2)]


def ou_variance(a, d, sigma):
    """Stationary variance of x <- (1 - a) x + a z with AR(1) input z (decay d, std sigma)."""
    rho = 1 - a
    return a * a * sigma**2 * (1 + rho * d) / ((1 - rho * rho) * (1 - rho * d))


@pytest.mark.parametrize("noise", ["white", "ou"])
def test_input_noise_statistics(noise):
    # gain 0: tau dx/dt = -x + noise, so the state is filtered input noise.
    tau, dt, std, ntau = 0.01, 0.001, 0.3, 0.02
    rec = ns.RecurrentRateNetwork(n=50, gain=0.0, seed=0, tau=tau, dt=dt, noise=noise,
                                  noise_std=std, noise_tau=ntau)
    tr = rec.simulate(steps=3000, x0=np.zeros(50), trials=8, record_every=10, seed=11)
    x = tr.states[100:]
    a = dt / tau
    if noise == "white":
        want = ou_variance(a, 0.0, std * np.sqrt(tau / dt))
        assert abs(want - std**2 / 2) < 0.05 * std**2  # the continuous-time limit
    else:
        want = ou_variance(a, np.exp(-dt / ntau), std)
    assert abs(x.mean()) < 0.05 * np.sqrt(want)
    assert abs(x.var() / want - 1) < 0.1
    first = rec.simulate(steps=50, x0=np.zeros(50), trials=8, seed=12).states
    second = rec.simulate(steps=50, x0=np.zeros(50), trials=8, seed=12).states
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, rec.simulate(steps=50, x0=np.zeros(50), trials=8,
                                                  seed=13).states)


def ref_recurrent(rec, x0, I, steps):
    a = rec.integration_coefficient
    x = x0.copy()
    out = [x.copy()]
    F = rec.activation.value
    for _ in range(steps):
        if rec.form == "current":
            x = x + a * (-x + F(x) @ rec.J.T + I)
        else:
            x = x + a * (F(x @ rec.J.T + I) - x)
        out.append(x.copy())
    return np.stack(out)


@pytest.mark.parametrize("form,act", [("current", "tanh"), ("rate", "logistic")])
@pytest.mark.parametrize("trials", [1, 3])
def test_recurrent_matches_numpy(form, act, trials):
    rec = ns.RecurrentRateNetwork(n=30, gain=1.5, activation=act, form=form, seed=2)
    rng = np.random.default_rng(0)
    x0 = rng.random((trials, 30))
    I = 0.1 * rng.standard_normal((trials, 30))
    tr = rec.simulate(steps=40, x0=x0, I=I, trials=trials, record_every=4)
    want = ref_recurrent(rec, x0, I, 40)[::4]
    np.testing.assert_allclose(tr.states, want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(tr.rates[0], rec.rates(want), atol=1e-12)


def test_recurrent_agrees_with_solve_ivp():
    rec = ns.RecurrentRateNetwork(n=20, gain=1.2, seed=3, tau=0.01, dt=1e-5)
    x0 = np.random.default_rng(4).standard_normal(20) * 0.5
    tr = rec.simulate(steps=2000, x0=x0, record_every=2000)
    sol = solve_ivp(lambda t, x: (-x + rec.J @ np.tanh(x)) / rec.tau, (0, 0.02), x0,
                    rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(tr.states[-1, 0], sol.y[:, -1], atol=1e-3)  # Euler, dt/tau = 1e-3


def test_recurrent_dale_and_bounds():
    rec = ns.RecurrentRateNetwork(n=60, gain=3.0, dale=0.8, w_bounds=(-0.2, 0.3), seed=1)
    J = rec.J
    assert np.all(J[:, rec.dale_signs > 0] >= 0) and np.all(J[:, rec.dale_signs < 0] <= 0)
    assert J.min() >= -0.2 and J.max() <= 0.3
    with pytest.raises(ValueError, match="outside their bounds"):
        rec.J = np.full((60, 60), 0.5)
    no_self = ns.RecurrentRateNetwork(n=10, gain=1.0, self_connections=False, seed=0)
    assert np.all(np.diag(no_self.J) == 0)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    act=st.sampled_from(ACTS),
    integrator=st.sampled_from(["euler", "exponential"]),
    noise=st.sampled_from([None, "white", "ou"]),
    feedback=st.sampled_from([None, "symmetric"]),
    seed=st.integers(0, 1000),
    sigma_w=st.floats(0.1, 6.0),
    dt_frac=st.floats(0.01, 0.99),
)
def test_property_rates_stay_in_range(act, integrator, noise, feedback, seed, sigma_w,
                                      dt_frac):
    name, params = act
    rn = ns.RateNetwork([3, 4, 2], activation=name, activation_params=params,
                        integrator=integrator, noise=noise, noise_std=2.0, feedback=feedback,
                        seed=seed, sigma_w=sigma_w, sigma_b=1.0, tau=0.01, dt=0.01 * dt_frac,
                        w_bounds=None)
    X = np.random.default_rng(seed).normal(0, 3, (3, 3))
    low, high = rn.rate_range
    tr = rn.simulate(X, steps=30, record_every=1)
    for r in tr.rates:
        assert np.all(np.isfinite(r)) and r.min() >= low and r.max() <= high


BAD = [
    (dict(dt=0.01, tau=0.01), ValueError, "dt must be smaller than tau"),
    (dict(dt=-0.001), ValueError, "dt"),
    (dict(tau=0.0), ValueError, "tau"),
    (dict(r_max=0.0), ValueError, "r_max must be > 0"),
    (dict(r_max=-5.0), ValueError, "r_max"),
    (dict(w_bounds=(1.0, -1.0)), ValueError, "w_min < w_max"),
    (dict(w_bounds=(0.5, 0.5)), ValueError, "w_min < w_max"),
    (dict(w_bounds=3.0), TypeError, "w_bounds"),
    (dict(dale=1.5), ValueError, r"dale.*\[0.0, 1.0\]"),
    (dict(dale=-0.1), ValueError, "dale"),
    (dict(dale=0.5, w_bounds=(0.0, 1.0)), ValueError, "inhibitory"),
    (dict(activation="relu"), ValueError, "not bounded"),
    (dict(activation="tanh", r_max=5.0), ValueError, "tanh rates"),
    (dict(activation="logistc"), ValueError, "did you mean 'logistic'"),
    (dict(integrator="rk4"), ValueError, "integrator"),
    (dict(noise="pink"), ValueError, "noise"),
    (dict(bound_mode="soft", w_bounds=None), ValueError, "soft"),
    (dict(weights=[np.full((3, 4), 2.0), np.zeros((4, 2))]), ValueError,
     "init_bounds='clip'.*'rescale'"),
    (dict(dtype="int32"), ValueError, "dtype"),
    (dict(device="tpu"), ValueError, "device"),
]


@pytest.mark.parametrize("kwargs,exc,match", BAD)
def test_bad_network_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ns.RateNetwork([3, 4, 2], **kwargs)


def test_bad_call_arguments(X):
    rn = ns.RateNetwork([4, 3], seed=0)
    with pytest.raises(ValueError, match="NaN or inf"):
        rn.forward(np.full((2, 4), np.nan))
    with pytest.raises(ValueError, match="features"):
        rn.steady_state(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="steps"):
        rn.simulate(X, steps=-1)
    with pytest.raises(ValueError, match="shape"):
        rn.weights = [np.zeros((3, 3))]
    with pytest.raises(ValueError, match="gain"):
        ns.RecurrentRateNetwork(n=5, gain=-1.0)
    with pytest.raises(ValueError, match="dt must be smaller"):
        ns.RecurrentRateNetwork(n=5, dt=0.1, tau=0.01)


def test_vectorised_logistic_is_accurate_to_the_last_digits():
    from neurosim.kernels import rate as K

    x = np.concatenate([np.linspace(-40, 40, 20001), [-800.0, 800.0, 0.0, 1e-300, np.nan]])
    out = np.empty_like(x)
    K.transfer(K.LOGISTIC, 2.0, 1.5, 0.25, x, out)
    z = -1.5 * (x[:-1] - 0.25)
    want = 2.0 / (1.0 + np.exp(np.clip(z, -745, 709)))
    assert np.max(np.abs(out[:-1] - want) / want) < 4.5e-16  # within two ulps
    assert out[-5] < 1e-300 and out[-4] == 2.0
    assert np.isnan(out[-1])
    # The exp itself, over its whole clamp range [-708, 709] (2^k stays a normal number), dense
    # and random arguments: within one ulp of NumPy's exp (90 % of values are bit-identical).
    rng = np.random.default_rng(1)
    e = np.concatenate([np.linspace(-708, 709, 100001), rng.uniform(-708, 709, 50000),
                        rng.uniform(-1, 1, 20000), [0.0, -0.0, 1e-300, -1e-300]])
    got = np.empty_like(e)
    K.exp_values(e, got)
    want = np.exp(e)
    assert np.max(np.abs(got - want) / np.spacing(want)) <= 1.0
    # Outside it the argument is clamped: finite, positive results; NaN stays NaN.
    edge = np.empty(4)
    K.exp_values(np.array([-1000.0, 1000.0, -np.inf, np.nan]), edge)
    np.testing.assert_array_max_ulp(edge[:3], np.exp([-708.0, 709.0, -708.0]), maxulp=1)
    assert np.isnan(edge[3])
