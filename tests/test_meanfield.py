"""Mean-field theory: quadrature against closed forms and independent integrators, and every
number of ANCHORS.md section 1."""

import math

import numpy as np
import pytest
from numpy.polynomial.hermite_e import hermegauss
from scipy import integrate, stats

from neurosim import activations
from neurosim.analysis import meanfield as mf

QS = [1e-3, 0.3, 1.0, 7.0, 1e4]
CS = [-0.95, -0.3, 0.0, 0.4, 0.9, 0.999999, 1.0]


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-300)


# ------------------------------------------------------------------------------ quadrature
def test_gauss_kronrod_rule_is_exact_to_degree_3n_plus_1():
    xk, wk, wg = mf.gauss_kronrod(10)
    assert xk.shape == (21,) and wg.shape == (10,)
    xg, _ = np.polynomial.legendre.leggauss(10)
    np.testing.assert_allclose(xk[1::2], xg, atol=1e-15)
    for d in range(32):
        exact = (1 + (-1) ** d) / (d + 1)
        assert abs(np.sum(wk * xk**d) - exact) < 1e-14
    assert abs(np.sum(wk * xk**32) - 2 / 33) > 1e-12  # and not beyond


@pytest.mark.parametrize("q", QS)
def test_relu_and_erf_one_dimensional_closed_forms(q):
    assert rel(mf.gaussian_expectation("relu", q, phi_power=2), q / 2) < 1e-12
    assert rel(mf.gaussian_expectation("relu", q, phi_power=0, dphi_power=2), 0.5) < 1e-12
    ex = 2 / math.pi * math.asin(2 * q / (1 + 2 * q))
    assert rel(mf.gaussian_expectation("erf", q, phi_power=2), ex) < 1e-12
    ex = 4 / math.pi / math.sqrt(1 + 4 * q)
    assert rel(mf.gaussian_expectation("erf", q, phi_power=0, dphi_power=2), ex) < 1e-12


@pytest.mark.parametrize("q", QS)
@pytest.mark.parametrize("c", CS)
def test_arc_cosine_and_arcsine_kernels(q, c):
    s = math.sqrt(max(0.0, 1 - c * c))
    relu = q / (2 * math.pi) * (s + (math.pi - math.acos(c)) * c)
    assert rel(mf.pair_expectation("relu", q, q, c), relu) < 1e-9
    drelu = (math.pi - math.acos(c)) / (2 * math.pi)
    assert rel(mf.pair_expectation("relu", q, q, c, derivative=True), drelu) < 1e-9
    erf = 2 / math.pi * math.asin(2 * q * c / (1 + 2 * q))
    got = mf.pair_expectation("erf", q, q, c)
    assert abs(got - erf) <= 1e-9 * max(abs(erf), 1e-3)
    derf = 4 / math.pi / math.sqrt((1 + 2 * q) ** 2 - 4 * q * q * c * c)
    assert rel(mf.pair_expectation("erf", q, q, c, derivative=True), derf) < 1e-9


def test_unequal_variances_against_the_arcsine_kernel():
    q1, q2, c = 0.4, 3.0, 0.7
    norm = math.sqrt((1 + 2 * q1) * (1 + 2 * q2))
    ex = 2 / math.pi * math.asin(2 * c * math.sqrt(q1 * q2) / norm)
    assert rel(mf.pair_expectation("erf", q1, q2, c), ex) < 1e-10


def _quad_reference(act, q, f, kinks):
    s = math.sqrt(q)

    def integrand(x):
        return f(act, np.array([x]))[0] * math.exp(-x * x / (2 * q)) / (s * math.sqrt(2 * math.pi))

    lo, hi = -12 * s, 12 * s
    pts = sorted({lo, hi, *[k for k in kinks if lo < k < hi]})
    return sum(integrate.quad(integrand, a, b, epsabs=0, epsrel=1e-13, limit=400)[0]
               for a, b in zip(pts[:-1], pts[1:], strict=False))


BOUNDED = [
    activations.get("logistic", r_max=1.0, gain=4.0, threshold=0.5),
    activations.get("saturating_linear", r_max=2.0, gain=1.5, threshold=-0.3),
    activations.get("naka_rushton", r_max=1.0, exponent=2.5, c50=0.7),
    activations.get("hard_tanh"),
    activations.get("elu", alpha=0.7),
    activations.get("softsign"),
]


@pytest.mark.parametrize("act", BOUNDED, ids=lambda a: a.name)
@pytest.mark.parametrize("q", [0.05, 2.0, 40.0])
def test_kinked_and_bounded_activations_against_adaptive_quadpack(act, q):
    kinks = {"logistic": [0.5], "saturating_linear": [-0.3, -0.3 + 2 / 1.5],
             "naka_rushton": [0.0], "hard_tanh": [-1.0, 1.0], "elu": [0.0],
             "softsign": [0.0]}[act.name]
    ref = _quad_reference(act, q, lambda a, x: a.value(x) ** 2, kinks)
    assert rel(mf.gaussian_expectation(act, q, phi_power=2), ref) < 1e-10
    ref = _quad_reference(act, q, lambda a, x: a.derivative(x) ** 2, kinks)
    assert rel(mf.gaussian_expectation(act, q, phi_power=0, dphi_power=2), ref) < 1e-10


def test_two_dimensional_expectation_against_gauss_hermite_for_tanh():
    z, w = hermegauss(160)
    w = w / w.sum()
    q, c = 1.3, 0.37
    u1 = math.sqrt(q) * z[:, None]
    u2 = math.sqrt(q) * (c * z[:, None] + math.sqrt(1 - c * c) * z[None, :])
    W = w[:, None] * w[None, :]
    ref = float(np.sum(W * np.tanh(u1) * np.tanh(u2)))
    assert rel(mf.pair_expectation("tanh", q, q, c), ref) < 1e-11
    ref = float(np.sum(W / np.cosh(u1) ** 2 / np.cosh(u2) ** 2))
    assert rel(mf.pair_expectation("tanh", q, q, c, derivative=True), ref) < 1e-11


def test_zero_variance_is_the_one_sided_limit():
    assert mf.gaussian_expectation("relu", 0.0, phi_power=0, dphi_power=2) == 0.5
    assert mf.gaussian_expectation("tanh", 0.0, phi_power=0, dphi_power=2) == 1.0
    assert mf.chi1("relu", 1.2, 0.0) == pytest.approx(0.72, rel=1e-14)  # q* = 0 here


# ------------------------------------------------------------------------------ ANCHORS
@pytest.mark.parametrize("sb2,expected", [(0.0, 1.0), (0.01, 1.424205), (0.05, 1.760955),
                                          (0.1, 1.986073), (0.3, 2.505127),
                                          (1.0, 3.443211)])
def test_tanh_critical_line(sb2, expected):
    sw2 = mf.critical_sigma_w("tanh", math.sqrt(sb2)) ** 2
    assert rel(sw2, expected) < 1e-6
    assert mf.chi1("tanh", math.sqrt(sw2), math.sqrt(sb2)) == pytest.approx(1.0, abs=1e-9)


def test_critical_line_vectorised_matches_scalar():
    line = mf.critical_line("tanh", [0.1, 0.3])
    assert line.shape == (2,)
    assert line[1] == mf.critical_sigma_w("tanh", 0.3)


TABLE = [  # sigma_w^2, q*, chi_1, c*, xi_c at sigma_b^2 = 0.05 (ANCHORS.md)
    (0.5, "0.08758", "0.43199", "1", "1.191"),
    (1.5, "0.41804", "0.93864", "1", "15.79"),
    (2.5, "1.06396", "1.13352", "0.4468", "11.80"),
    (4.0, "2.19549", "1.34240", "0.1651", "6.980"),
]


def _matches(value, text):
    """Equal to the printed digits: within half a unit of the last printed place."""
    places = len(text.split(".")[1]) if "." in text else 0
    return abs(value - float(text)) <= 0.5 * 10.0**-places + 1e-12


@pytest.mark.parametrize("row", TABLE, ids=lambda r: f"sw2={r[0]}")
def test_tanh_table_at_sigma_b2_005(row):
    sw2, q, c1, cs, xi = row
    p = mf.summary("tanh", math.sqrt(sw2), math.sqrt(0.05))
    assert _matches(p.q_star, q) and _matches(p.chi1, c1)
    assert _matches(p.c_star, cs) and _matches(p.xi_c, xi)
    # the individual functions agree with the summary
    assert mf.q_star("tanh", math.sqrt(sw2), math.sqrt(0.05)) == p.q_star
    assert mf.xi_c("tanh", math.sqrt(sw2), math.sqrt(0.05)) == p.xi_c
    assert p.regime == ("ordered" if sw2 < 1.76 else "chaotic")


@pytest.mark.parametrize("name,sw2", [("relu", 2.0), ("erf", math.pi / 4), ("hard_tanh", 1.0),
                                      ("linear", 1.0), ("tanh", 1.0)])
def test_exact_critical_points_at_zero_bias(name, sw2):
    assert rel(mf.critical_sigma_w(name, 0.0) ** 2, sw2) < 1e-12


def test_relu_chi1_is_half_sigma_w2_at_any_variance_and_bias():
    for q in (1e-3, 1.0, 50.0):
        assert mf.chi1("relu", 1.7, 0.3, q=q) == pytest.approx(1.7**2 / 2, rel=1e-13)
    assert rel(mf.critical_sigma_w("relu", 0.3) ** 2, 2.0) < 1e-12
    slope = 0.2
    assert rel(mf.critical_sigma_w(activations.get("leaky_relu", slope=slope), 0.0) ** 2,
               2 / (1 + slope**2)) < 1e-12
    # beyond sigma_w^2 = 2 the length map diverges, chi_1 stays sigma_w^2 / 2
    assert mf.q_star("relu", 1.6, 0.1) == math.inf
    assert mf.chi1("relu", 1.6, 0.1) == pytest.approx(1.28, rel=1e-13)
    assert mf.c_star("relu", 1.6, 0.1) == 1.0 and mf.xi_c("relu", 1.6, 0.1) == math.inf


def test_logistic_needs_a_large_weight_variance():
    sw2 = mf.critical_sigma_w("logistic", 0.0) ** 2
    assert 100.0 < sw2 < 106.0  # "about 103"
    assert sw2 == pytest.approx(mf.critical_sigma_w("sigmoid", 0.0) ** 2, rel=1e-12)
    # at sigma_w^2 = 1 bounded non-negative rates sit deep in the vanishing phase
    assert mf.chi1("logistic", 1.0, 0.0) < 0.1


def test_glorot_and_old_uniform_init_for_tanh():
    assert mf.chi1("tanh", math.sqrt(1 / 3), 0.0) == pytest.approx(1 / 3, rel=1e-14)
    assert mf.chi1("tanh", 1.0, 0.0) == pytest.approx(1.0, rel=1e-14)


# ------------------------------------------------------------------------------ maps
def test_length_and_correlation_iterates_reach_their_fixed_points():
    sw, sb = math.sqrt(2.5), math.sqrt(0.05)
    qs = mf.length_iterates("tanh", sw, sb, 80, q0=3.0)
    assert qs[0] == pytest.approx(2.5 * 3.0 + 0.05)
    assert qs[-1] == pytest.approx(mf.q_star("tanh", sw, sb), rel=1e-12)
    # inputs at q* and near c*: the deviation from c* shrinks by chi_c per layer
    qs, cs = mf.q_star("tanh", sw, sb), mf.c_star("tanh", sw, sb)
    q0 = (qs - sb**2) / sw**2
    c0 = (cs + 0.01) * qs / (sw**2 * q0) - sb**2 / (sw**2 * q0)  # so that c^1 = c* + 0.01
    qa, qb, c = mf.correlation_iterates("tanh", sw, sb, 25, c0=c0, q0=q0)
    np.testing.assert_allclose(qa, qs, rtol=1e-12)
    np.testing.assert_allclose(qa, qb)
    assert c[0] == pytest.approx(cs + 0.01, abs=1e-12)
    dev = c - cs
    assert dev[-1] / dev[-2] == pytest.approx(mf.chi_c("tanh", sw, sb), rel=1e-3)
    assert mf.correlation_map("tanh", cs, sw, sb) == pytest.approx(cs, abs=1e-12)
    assert mf.correlation_map("tanh", 1.0, sw, sb) == pytest.approx(1.0, abs=1e-12)


def test_xi_q_stein_form_equals_phi_second_derivative_form():
    sw, sb = 1.3, 0.4
    q = mf.q_star("tanh", sw, sb)
    slope = mf.chi1("tanh", sw, sb) + sw**2 * mf.gaussian_expectation(
        "tanh", q, phi_power=1, d2phi_power=1)
    assert mf.xi_q("tanh", sw, sb) == pytest.approx(-1 / math.log(slope), rel=1e-10)


def test_gradient_profile_is_a_product_of_per_layer_chi():
    prof = mf.gradient_profile("tanh", 1.1, 0.2, 6, q0=0.5)
    qs = mf.length_iterates("tanh", 1.1, 0.2, 6, q0=0.5)
    assert prof[-1] == 1.0
    assert prof[2] / prof[3] == pytest.approx(mf.chi1("tanh", 1.1, 0.2, q=qs[2]), rel=1e-13)
    assert mf.gradient_ratio("tanh", 1.1, 0.2) == mf.chi1("tanh", 1.1, 0.2)


def test_network_statistics_follow_layer_parameters():
    st = mf.network_statistics(["tanh", "relu", "linear"], [1.0, 1.5, 2.0], [0.1, 0.0, 0.3],
                               q0=2.0, fourth=True)
    assert st.q[0] == pytest.approx(2.0 + 0.01)
    assert st.q[1] == pytest.approx(1.5**2 * st.phi_sq[0])
    assert st.dphi_sq[1] == pytest.approx(0.5) and st.dphi_4th[1] == pytest.approx(0.5)
    assert st.phi_sq[2] == pytest.approx(st.q[2])


# ------------------------------------------------------------------------------ bio rules
def test_feedback_alignment_and_direct_feedback_alignment_predictions():
    sw, sb = 1.2, 0.1
    assert mf.chi_fa("tanh", sw, sb, sw) == pytest.approx(mf.chi1("tanh", sw, sb), rel=1e-14)
    assert mf.chi_fa("tanh", sw, sb, 2 * sw) == pytest.approx(4 * mf.chi1("tanh", sw, sb))
    assert mf.signal_ratio("tanh", sw, sb, "direct_feedback_alignment") == 1.0
    assert mf.signal_ratio("tanh", sw, sb, "feedback_alignment", sigma_B=0.5) == \
        mf.chi_fa("tanh", sw, sb, 0.5)
    with pytest.raises(ValueError, match="sigma_B"):
        mf.signal_ratio("tanh", sw, sb, "feedback_alignment")


def test_clipped_weights_shrink_the_effective_variance():
    factor = mf.effective_sigma_w(1.0, 2.0) ** 2
    assert round(factor, 4) == 0.9205
    rng = np.random.default_rng(0)
    z = np.clip(rng.standard_normal(2_000_000), -2, 2)
    assert factor == pytest.approx(z.var(), abs=3e-3)
    # absolute bounds with a fan-in: |W| <= 0.1 with std 1.5 / sqrt(400) = 0.075
    eff = mf.effective_sigma_w(1.5, 0.1, fan_in=400)
    assert eff == pytest.approx(1.5 * mf.effective_sigma_w(1.0, 0.1 / 0.075), rel=1e-14)
    trunc = mf.effective_sigma_w(1.0, (-1.0, 2.0), mode="truncate") ** 2
    assert trunc == pytest.approx(stats.truncnorm(-1.0, 2.0).var(), rel=1e-12)
    mean, var = mf.clipped_weight_moments(-1.0, 2.0)
    zc = np.clip(rng.standard_normal(2_000_000), -1, 2)
    assert mean == pytest.approx(zc.mean(), abs=3e-3) and var == pytest.approx(zc.var(),
                                                                                abs=3e-3)


def test_jacobian_prediction_formula():
    p = mf.jacobian_prediction("relu", math.sqrt(2), 0.0, 10)
    assert p.mean_squared_singular_value == pytest.approx(1.0)
    assert p.normalized_variance == pytest.approx(20.0)  # mu2/mu1^2 = 2, s1 = -1
    p = mf.jacobian_prediction("relu", math.sqrt(2), 0.0, 10, weights="orthogonal")
    assert p.normalized_variance == pytest.approx(10.0)
    sw = mf.critical_sigma_w("tanh", 0.1)
    p = mf.jacobian_prediction("tanh", sw, 0.1, 5, weights="orthogonal")
    assert p.mean_squared_singular_value == pytest.approx(1.0, abs=1e-8)
    assert 0 < p.normalized_variance < 5 * 0.2


# ------------------------------------------------------------------------------ coverage
@pytest.mark.parametrize("name", activations.names())
def test_every_registered_activation_has_consistent_fixed_points(name):
    for sw, sb in ((0.7, 0.2), (2.0, 0.5)):
        p = mf.summary(name, sw, sb)
        if math.isfinite(p.q_star):
            assert mf.length_map(name, p.q_star, sw, sb) == pytest.approx(p.q_star, rel=1e-11)
        assert 0.0 <= p.c_star <= 1.0
        assert p.chi1 >= 0.0 and p.xi_c >= 0.0


def test_phase_diagram_matches_point_summaries():
    ph = mf.phase_diagram("tanh", [0.5, 2.5], [0.05])
    assert ph.chi1.shape == (1, 2) and ph.critical_sigma_w2.shape == (1,)
    p = mf.summary("tanh", math.sqrt(2.5), math.sqrt(0.05))
    assert ph.c_star[0, 1] == pytest.approx(p.c_star, rel=1e-12)
    assert ph.xi_c[0, 1] == pytest.approx(p.xi_c, rel=1e-10)
    assert ph.critical_sigma_w2[0] == pytest.approx(1.760955, rel=1e-6)
    back = mf.PhaseDiagram.from_arrays(ph.to_arrays())
    np.testing.assert_array_equal(back.chi1, ph.chi1)
    assert back.activation == "tanh"


def test_bad_inputs_name_the_parameter():
    with pytest.raises(ValueError, match="unknown activation"):
        mf.q_star("tahn", 1.0, 0.1)
    with pytest.raises(ValueError, match="sigma_w"):
        mf.chi1("tanh", -1.0, 0.1)
    with pytest.raises(ValueError, match="sigma_b"):
        mf.chi1("tanh", 1.0, -0.1)
    with pytest.raises(TypeError, match="sigma_w"):
        mf.xi_c("tanh", "1", 0.1)
    with pytest.raises(ValueError, match="c must lie"):
        mf.correlation_map("tanh", 1.5, 1.0, 0.1)
    with pytest.raises(ValueError, match="n_layers"):
        mf.length_iterates("tanh", 1.0, 0.1, 0)
    with pytest.raises(ValueError, match="weights"):
        mf.jacobian_prediction("tanh", 1.0, 0.1, 3, weights="uniform")
    with pytest.raises(ValueError, match="mode"):
        mf.effective_sigma_w(1.0, 2.0, mode="wrap")
    with pytest.raises(ValueError, match="sigma_w2"):
        mf.phase_diagram("tanh", [0.0, 1.0], [0.1])



# ------------------------------------------------------------------ every activation, by SciPy
KINKS = {"relu": [0.0], "leaky_relu": [0.0], "prelu": [0.0], "elu": [0.0], "softsign": [0.0],
         "hard_tanh": [-1.0, 1.0], "saturating_linear": [0.0, 1.0], "naka_rushton": [0.0]}


def _pdf(z):
    return math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def _pieces(lo, hi, kinks):
    pts = sorted({lo, hi, *(k for k in kinks if lo < k < hi)})
    return list(zip(pts[:-1], pts[1:], strict=False))


def _scipy_expectation(f, q, kinks):
    """E[f(x)], x ~ N(0, q), by QUADPACK in z = x / sqrt(q), split at the kinks of f."""
    s = math.sqrt(q)
    return sum(integrate.quad(lambda z: f(s * z) * _pdf(z), a, b, epsabs=0, epsrel=1e-13,
                              limit=200)[0]
               for a, b in _pieces(-12.0, 12.0, [k / s for k in kinks]))


def _scalar(fn):
    return lambda x: float(fn(np.array([x]))[0])


@pytest.mark.parametrize("name", activations.names())
def test_q_star_and_chi1_of_every_activation_against_scipy(name):
    """q* as the root of the length map and chi_1 there, both from QUADPACK integrals (an
    integrator independent of the Gauss-Kronrod kernels), to 1e-8 relative."""
    from scipy.optimize import brentq

    act = activations.get(name)
    kinks = KINKS.get(name, [])
    phi, dphi = _scalar(act.value), _scalar(act.derivative)
    sw, sb = 0.9, 0.4  # sigma_w^2 < 1: q* is finite for every registered activation

    def excess(q):
        return sw**2 * _scipy_expectation(lambda x: phi(x) ** 2, q, kinks) + sb**2 - q

    q_ref = brentq(excess, sb**2, 10.0, xtol=1e-15, rtol=1e-14)  # excess(sb^2) > 0 > excess(10)
    chi_ref = sw**2 * _scipy_expectation(lambda x: dphi(x) ** 2, q_ref, kinks)
    p = mf.summary(name, sw, sb)
    assert rel(p.q_star, q_ref) < 1e-8
    assert rel(p.chi1, chi_ref) < 1e-8


@pytest.mark.parametrize("act", [activations.get("logistic", r_max=1.0, gain=4.0,
                                                 threshold=0.5),
                                 activations.get("saturating_linear", r_max=1.0, gain=1.5,
                                                 threshold=0.2),
                                 activations.get("naka_rushton")], ids=lambda a: a.name)
def test_pair_expectations_of_the_bounded_rate_activations_against_scipy(act):
    """The correlation-map and chi_c integrands of the rate activations (non-negative, bounded,
    kinked or steep) against nested QUADPACK integrals over (z1, z2), to 1e-8 relative."""
    q, c = 1.5, 0.6
    s, sc = math.sqrt(q), math.sqrt(1 - c * c)
    kinks = {"logistic": [], "saturating_linear": [0.2, 0.2 + 1 / 1.5],
             "naka_rushton": [0.0]}[act.name]

    def pair(f):
        def outer(z1):
            inner = sum(integrate.quad(lambda z2: f(s * (c * z1 + sc * z2)) * _pdf(z2), a, b,
                                       epsabs=1e-15, epsrel=1e-11)[0]
                        for a, b in _pieces(-10.0, 10.0,
                                            [(k / s - c * z1) / sc for k in kinks]))
            return f(s * z1) * inner * _pdf(z1)

        return sum(integrate.quad(outer, a, b, epsabs=1e-14, epsrel=1e-10, limit=200)[0]
                   for a, b in _pieces(-10.0, 10.0, [k / s for k in kinks]))

    phi, dphi = _scalar(act.value), _scalar(act.derivative)
    assert rel(mf.pair_expectation(act, q, q, c), pair(phi)) < 1e-8
    assert rel(mf.pair_expectation(act, q, q, c, derivative=True), pair(dphi)) < 1e-8
