"""propagation_profile and perturbation_profile: exact norms against plain NumPy and finite
differences, and width-1000 simulations against mean-field theory."""

import io
import math

import numpy as np
import pytest
from _vanishing import vanishing_float32_case

import neurosim as ns
from neurosim.analysis import meanfield as mf
from neurosim.analysis.propagation import (
    DepthFit,
    PropagationProfile,
    anchored_theory,
    fit_depth_scale,
    perturbation_profile,
    propagation_profile,
    propagation_sweep,
)


def numpy_backprop(Ws, bs, X, Y, act="tanh"):
    """Reference: mse loss, hidden phi, linear output; returns loss, dW list, delta list."""
    f = {"tanh": (np.tanh, lambda h: 1 - np.tanh(h) ** 2),
         "relu": (lambda h: np.maximum(h, 0), lambda h: (h > 0).astype(float))}[act]
    a, pre, post = X, [], [X]
    for l, (W, b) in enumerate(zip(Ws, bs, strict=True)):
        h = a @ W + b
        pre.append(h)
        a = h if l == len(Ws) - 1 else f[0](h)
        post.append(a)
    B = X.shape[0]
    loss = 0.5 * np.sum((a - Y) ** 2) / B
    g = (a - Y) / B
    dWs, deltas = [None] * len(Ws), [None] * len(Ws)
    for l in range(len(Ws) - 1, -1, -1):
        d = g if l == len(Ws) - 1 else g * f[1](pre[l])
        deltas[l] = d
        dWs[l] = post[l].T @ d
        g = d @ Ws[l].T
    return loss, dWs, deltas


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    """Small products: threaded BLAS only adds contention on a shared machine."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    return rng.standard_normal((40, 12)), rng.standard_normal((40, 3))


@pytest.mark.parametrize("batch", [3, 40])  # Gram form and direct product
def test_mlp_norms_match_a_numpy_reference(data, batch):
    X, Y = data[0][:batch], data[1][:batch]
    net = ns.MLP([12, 9, 7, 3], activation="tanh", sigma_w=1.3, sigma_b=0.2, seed=1)
    p = propagation_profile(net, X, Y)
    loss, dWs, deltas = numpy_backprop([w.copy() for w in net.weights],
                                       [b.copy() for b in net.biases], X, Y)
    assert p.loss == pytest.approx(loss, rel=1e-13)
    np.testing.assert_allclose(p.grad_norms, [np.linalg.norm(d) for d in dWs], rtol=1e-12)
    np.testing.assert_allclose(p.delta_norms,
                               [np.mean(np.linalg.norm(d, axis=1)) for d in deltas],
                               rtol=1e-12)
    sq = np.array([np.mean(np.sum(d**2, axis=1)) for d in deltas])
    np.testing.assert_allclose(p.delta_sq_ratios, sq[:-1] / sq[1:], rtol=1e-12)
    assert p.layers.tolist() == [1, 2, 3] and p.source == "MLP" and p.rule == "backprop"
    # theory from the measured scales sigma_w^2 = fan_in mean(W^2), sigma_b^2 = mean(b^2)
    sw = np.array([math.sqrt(w.shape[0] * np.mean(w**2)) for w in net.weights])
    sb = np.array([math.sqrt(np.mean(b**2)) for b in net.biases])
    st = mf.network_statistics(["tanh", "tanh", "linear"], sw, sb, np.mean(X**2))
    np.testing.assert_allclose(p.theory_sq_ratios, sw[1:] ** 2 * st.dphi_sq[:-1], rtol=1e-12)
    dphi2 = [np.mean((1 - np.tanh(h) ** 2) ** 2) for h in net.layer_outputs(X)[0][:-1]]
    np.testing.assert_allclose(p.local_sq_ratios, sw[1:] ** 2 * dphi2, rtol=1e-12)


def test_gradient_norms_against_central_finite_differences(data):
    X, Y = data[0][:5], data[1][:5]
    net = ns.MLP([12, 6, 5, 3], activation="tanh", sigma_w=1.1, sigma_b=0.3, seed=3)
    p = propagation_profile(net, X, Y, theory=False)
    h = 1e-6
    for l, W in enumerate(net.weights):
        fd = np.empty(W.shape)
        for idx in np.ndindex(W.shape):
            w0 = W[idx]
            W[idx] = w0 + h
            up = net.gradients(X, Y)[0]
            W[idx] = w0 - h
            down = net.gradients(X, Y)[0]
            W[idx] = w0
            fd[idx] = (up - down) / (2 * h)
        assert p.grad_norms[l] == pytest.approx(np.linalg.norm(fd), rel=1e-7)


@pytest.mark.parametrize("options", [
    {"residual": True}, {"batchnorm": True}, {"activation": "prelu"}, {"dtype": "float32"},
    {"activation": "relu", "output_activation": "tanh"},
])
def test_norms_match_the_engine_for_every_mlp_option(data, options):
    X, Y = data[0][:8], data[1][:8]
    sizes = [12, 10, 10, 10, 3]
    net = ns.MLP(sizes, sigma_w=1.2, seed=2, **options)
    p = propagation_profile(net, X, Y, loss="mse")
    _, g = net.gradients(X, Y)
    tol = 1e-5 if options.get("dtype") == "float32" else 1e-12
    np.testing.assert_allclose(p.grad_norms, [np.linalg.norm(w) for w in g.weights], rtol=tol)
    np.testing.assert_allclose(p.delta_norms,
                               [np.mean(np.linalg.norm(d.astype(float), axis=1))
                                for d in g.deltas], rtol=tol)
    theory_applies = not (options.get("residual") or options.get("batchnorm"))
    assert np.all(np.isfinite(p.theory_sq_ratios)) == theory_applies


def test_cross_entropy_and_dropout_in_training_mode(data):
    X = data[0][:6]
    Y = np.eye(3)[[0, 1, 2, 0, 1, 2]]
    net = ns.MLP([12, 8, 8, 3], dropout=0.3, seed=4)
    p = propagation_profile(net, X, Y, loss="cross_entropy", training=False)
    _, g = net.gradients(X, Y, loss="cross_entropy", training=False)
    np.testing.assert_allclose(p.grad_norms, [np.linalg.norm(w) for w in g.weights],
                               rtol=1e-12)
    p = propagation_profile(net, X, Y, loss="cross_entropy")  # random masks: finite, positive
    assert np.all(p.grad_norms > 0) and np.all(np.isnan(p.theory_sq_ratios))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch", [6, 64, 150])  # Gram form (syrk, block kernels), direct
@pytest.mark.parametrize("options", [
    {}, {"residual": True}, {"activation": "prelu"}, {"activation": "relu"}, {"dropout": 0.25},
])
def test_column_chunks_match_the_engine_on_any_thread_count(dtype, batch, options):
    """Layers of 64 or more units are split into two column chunks that threads share (widths
    off the 32-unit grid and chunks too narrow for the block kernels included): the norms
    match the engine's gradients and are bit-identical on one and two threads."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((batch, 48))
    Y = rng.standard_normal((batch, 3))
    sizes = [48, 72, 72, 72, 3] if options.get("residual") else [48, 64, 96, 96, 72, 3]
    net = ns.MLP(sizes, sigma_w=1.3, sigma_b=0.1, seed=5, dtype=dtype, **options)
    profiles = [propagation_profile(net.copy(), X, Y, threads=t) for t in (1, 2)]
    for name in ("loss", "grad_norms", "delta_norms", "delta_sq_ratios", "grad_sq_ratios",
                 "local_sq_ratios"):
        assert np.array_equal(getattr(profiles[0], name), getattr(profiles[1], name)), name
    training = "dropout" not in options  # random masks: compare in inference mode
    p = propagation_profile(net, X, Y, training=training, threads=2)
    _, g = net.gradients(X, Y, training=training)
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(p.grad_norms, [np.linalg.norm(w.astype(float)) for w in g.weights],
                               rtol=tol)
    np.testing.assert_allclose(p.delta_norms,
                               [np.mean(np.linalg.norm(d.astype(float), axis=1))
                                for d in g.deltas], rtol=tol)
    if not options and dtype == "float64":  # the weight scales and phi'^2, chunk by chunk
        sw = np.array([math.sqrt(w.shape[0] * np.mean(w**2)) for w in net.weights])
        dphi2 = [np.mean((1 - np.tanh(h) ** 2) ** 2) for h in net.layer_outputs(X)[0][:-1]]
        np.testing.assert_allclose(p.local_sq_ratios, sw[1:] ** 2 * dphi2, rtol=1e-12)


# ----------------------------------------------------------------------- theory at width 1000
CONFIGS = [  # activation, sigma_w^2, sigma_b^2: both phases
    ("tanh", 1.2, 0.05), ("tanh", 2.5, 0.05), ("erf", 0.6, 0.02), ("erf", 2.0, 0.1),
    ("relu", 1.5, 0.1), ("relu", 2.5, 0.1),
]


@pytest.mark.slow
@pytest.mark.parametrize("act,sw2,sb2", CONFIGS)
def test_width_1000_gradient_ratios_and_q_star_match_mean_field(act, sw2, sb2):
    """Averaged over layers and networks: ratios within max(4 SE, 0.01) of chi_1, q* within 2%.

    Inputs are scaled so that layer 1 already sits at q* (for relu above sigma_w^2 = 2 there
    is no q*; the ratio is sigma_w^2 / 2 at every variance). The targets are 100 times larger
    than the outputs: the theory assumes the error entering at the output is independent of
    the forward weights (gradient independence). With mse and targets the size of the outputs,
    ``a_L`` itself is part of the error and, for relu, travels down coherently (ratios 0.92
    instead of 0.75 at sigma_w^2 = 1.5).
    """
    sw, sb = math.sqrt(sw2), math.sqrt(sb2)
    width, depth, batch, nets = 1000, 5, 4, 3
    q = mf.q_star(act, sw, sb)
    q1 = q if math.isfinite(q) else 1.0
    chi = mf.chi1(act, sw, sb, q=q1)
    ratios, qs = [], []
    for seed in range(nets):
        rng = np.random.default_rng(100 + seed)
        X = rng.standard_normal((batch, width))
        X *= np.sqrt((q1 - sb2) / sw2 / np.mean(X**2, axis=1, keepdims=True))
        Y = 100.0 * rng.standard_normal((batch, width))
        net = ns.MLP([width] * (depth + 1), activation=act, sigma_w=sw, sigma_b=sb, seed=seed)
        p = propagation_profile(net, X, Y, theory=False)
        ratios.extend(p.delta_sq_ratios)
        if math.isfinite(q):
            pre, _ = net.layer_outputs(X)
            qs.extend(float(np.mean(h**2)) for h in pre[:-1])
    ratios = np.asarray(ratios)
    se = ratios.std(ddof=1) / math.sqrt(ratios.size)
    assert abs(ratios.mean() - chi) <= max(4 * se, 0.01), (ratios.mean(), chi, se)
    if qs:
        assert np.mean(qs) == pytest.approx(q, rel=0.02)


def test_theory_lines_follow_the_measured_profile():
    rng = np.random.default_rng(0)
    net = ns.MLP([300] * 7 + [10], sigma_w=1.1, sigma_b=0.1, seed=0)
    X = rng.standard_normal((16, 300))
    Y = rng.standard_normal((16, 10))
    p = propagation_profile(net, X, Y)
    np.testing.assert_allclose(p.theory_sq_ratios, p.local_sq_ratios, rtol=0.1)
    np.testing.assert_allclose(p.delta_sq_ratios, p.theory_sq_ratios, rtol=0.2)
    assert p.theory_norms()[-1] == p.delta_norms[-1]
    assert p.theory_norms("input")[0] == p.delta_norms[0]
    assert p.regime == p.signal_fit.regime == "vanishing"
    assert math.isfinite(p.theory_depth_scale)


# ------------------------------------------------------------------------ rate networks
@pytest.fixture(scope="module")
def rate_data():
    rng = np.random.default_rng(3)
    return rng.random((8, 300)), rng.random((8, 300))


def _rate_net(seed=0):
    return ns.RateNetwork([300] * 7, activation="tanh", w_bounds=None, sigma_w=1.0,
                          sigma_b=0.3, seed=seed)


def test_feedback_alignment_tracks_chi_fa_and_dfa_is_flat(rate_data):
    X, Y = rate_data
    fa, dfa, bp = [], [], []
    fa_theory = []
    for seed in range(2):
        rn = _rate_net(seed)
        p = propagation_profile(rn, X, Y, rule="feedback_alignment", feedback_scale=1.5)
        fa.extend(p.signal_sq_ratios[:-1])
        fa_theory.extend(p.rule_theory_sq_ratios[:-1])
        bp.extend(p.delta_sq_ratios[:-1])
        p = propagation_profile(rn, X, Y, rule="direct_feedback_alignment")
        dfa.extend(p.signal_sq_ratios[:-1])
        np.testing.assert_allclose(p.rule_theory_sq_ratios[:-1], 1.0, rtol=0.15)
    fa, dfa, bp = map(np.asarray, (fa, dfa, bp))
    # chi_FA = sigma_B^2 E[phi'^2]: here 2.25 times backprop's factor
    assert np.mean(fa) == pytest.approx(np.mean(fa_theory), rel=0.08)
    assert np.mean(fa) == pytest.approx(2.25 * np.mean(bp), rel=0.1)
    assert np.mean(bp) < 0.8  # backprop's error shrinks toward the input...
    assert np.mean(dfa) == pytest.approx(1.0, abs=0.08)  # ...DFA's does not compound


def test_rate_network_profile_sets_the_true_gradient_beside_the_rule(rate_data):
    X, Y = rate_data
    from neurosim.rules import compare_to_gradient

    rn = _rate_net()
    p = propagation_profile(rn, X, Y, rule="feedback_alignment")
    sig = compare_to_gradient(rn, X, Y, "feedback_alignment")
    np.testing.assert_allclose(p.grad_norms, [np.linalg.norm(g) for g in sig.true_grads])
    np.testing.assert_allclose(p.update_norms, [np.linalg.norm(u) for u in sig.updates])
    bp = propagation_profile(rn, X, Y)
    np.testing.assert_allclose(bp.signal_norms, bp.delta_norms)
    np.testing.assert_allclose(bp.delta_norms, p.delta_norms)
    assert p.source == "RateNetwork" and p.rule == "feedback_alignment"


def test_sweep_equals_probes_built_one_by_one(data):
    X, Y = data[0][:5], data[1][:5]
    sizes = [12, 10, 10, 3]
    sw = [0.6, 1.5]
    for init in ("gaussian", "orthogonal", "glorot"):
        sweep = propagation_sweep(sizes, sw, [0, 2], X, Y, init=init, sigma_b=0.1)
        assert sweep.grad_norms.shape == (2, 2, 3) and sweep.regime.shape == (2, 2)
        for i, seed in enumerate((0, 2)):
            for j, s in enumerate(sw):
                net = ns.MLP(sizes, init=init, sigma_w=s, sigma_b=0.1, seed=seed)
                p = propagation_profile(net, X, Y)
                np.testing.assert_allclose(sweep.grad_norms[i, j], p.grad_norms, rtol=1e-12)
                np.testing.assert_allclose(sweep.theory_sq_ratios[i, j], p.theory_sq_ratios,
                                           rtol=1e-9)
                assert sweep.ratio[i, j] == pytest.approx(p.delta_fit.ratio, rel=1e-12)
    with pytest.raises(ValueError, match="swept"):
        propagation_sweep(sizes, sw, [0], X, Y, seed=3)
    with pytest.raises(ValueError, match="threads"):
        propagation_sweep(sizes, sw, [0], X, Y, threads=0)


def test_sweep_numbers_do_not_depend_on_threads():
    """Concurrent probes, each on one thread with one BLAS thread: the same bits as serial
    probes (float32 products large enough that a two-thread BLAS would take them)."""
    rng = np.random.default_rng(7)
    X = rng.standard_normal((32, 128)).astype(np.float32)
    Y = rng.standard_normal((32, 10)).astype(np.float32)
    sizes = [128, 128, 128, 128, 10]
    runs = [propagation_sweep(sizes, [0.8, 1.2, 2.0], [0, 1], X, Y, dtype="float32",
                              threads=t) for t in (1, 2, 4)]
    for other in runs[1:]:
        for name in ("loss", "grad_norms", "delta_norms", "delta_sq_ratios", "ratio"):
            assert np.array_equal(getattr(runs[0], name), getattr(other, name)), name


# ------------------------------------------------------------------------ History and fits
def test_profile_over_training_from_a_history():
    task = ns.tasks.teacher_student(depth=2, width=16, n_train=64, n_test=16, n_outputs=4)
    net = ns.MLP([16, 16, 16, 16, 4], seed=0)
    hist = ns.train(net, task, lr=0.05, epochs=2, batch_size=16, record_every=2)
    p = propagation_profile(hist)
    n_rec = hist.grad_norms.shape[0]
    assert p.source == "History" and p.steps.shape == (n_rec,)
    assert p.delta_sq_ratios.shape == (n_rec, 3)
    assert p.delta_fit.ratio.shape == (n_rec,) and p.delta_fit.regime.shape == (n_rec,)
    np.testing.assert_allclose(p.grad_sq_ratios[0], hist.grad_norms[0, :-1] ** 2
                               / hist.grad_norms[0, 1:] ** 2)
    buf = io.BytesIO()
    np.savez(buf, **p.to_arrays())
    buf.seek(0)
    back = PropagationProfile.from_arrays(np.load(buf, allow_pickle=False))
    np.testing.assert_array_equal(back.delta_fit.ratio, p.delta_fit.ratio)
    assert back.rule == "backprop" and back.steps.shape == (n_rec,)


# direct product; Gram form by BLAS syrk (half a batch of 8 is no whole panel) and by the block
# kernels (96 units in two chunks, a batch of 64)
@pytest.mark.parametrize("width, batch", [(32, 48), (32, 8), (96, 64)])
def test_float32_profile_of_a_vanishing_signal_does_not_underflow(width, batch):
    """Deltas of ~1e-27 square below float32's range: the profile's sums of squares (and the
    Gram form of ||dL/dW_l||, chunk by chunk) must not flush them to zero."""
    net, X, Y, grad_ref, delta_ref = vanishing_float32_case()
    if width != 32:
        net = ns.MLP([16] + [width] * 80 + [4], sigma_w=0.5, seed=1, dtype="float32")
    if (width, batch) != (32, X.shape[0]):
        X, Y = X[:batch], Y[:batch]
        _, grads = net.gradients(X, Y)
        grad_ref = [np.sqrt(np.sum(np.square(w, dtype=np.float64))) for w in grads.weights]
        delta_ref = [np.mean(np.sqrt(np.sum(np.square(d, dtype=np.float64), axis=1)))
                     for d in grads.deltas]
        assert max(delta_ref[:3]) < 1e-24
    for threads in (1, 2):
        profile = propagation_profile(net, X, Y, threads=threads)
        np.testing.assert_allclose(profile.grad_norms, grad_ref, rtol=1e-5)
        np.testing.assert_allclose(profile.delta_norms, delta_ref, rtol=1e-5)


def test_fit_depth_scale_recovers_an_exponential():
    layers = np.arange(1, 11)
    norms = 3.0 * np.sqrt(0.8) ** (10 - layers)  # squared ratio 0.8 per layer toward input
    fit = fit_depth_scale(norms)
    assert fit.ratio == pytest.approx(0.8, rel=1e-12)
    assert fit.depth_scale == pytest.approx(-1 / math.log(0.8), rel=1e-12)
    assert fit.ratio_err == pytest.approx(0.0, abs=1e-12) and fit.regime == "vanishing"
    assert fit_depth_scale(norms[::-1]).regime == "exploding"
    assert fit_depth_scale(np.ones(10)).regime == "critical"
    assert fit_depth_scale([1.0, 0.0]).regime == "undefined"
    noisy = norms * np.exp(np.random.default_rng(0).normal(0, 0.05, 10))
    f2 = fit_depth_scale(noisy)
    assert 0 < f2.ratio_err < 0.05 and abs(f2.ratio - 0.8) < 4 * f2.ratio_err
    rows = fit_depth_scale(np.stack([norms, norms[::-1]]))
    assert isinstance(rows, DepthFit) and rows.regime.tolist() == ["vanishing", "exploding"]


def test_anchored_theory():
    out = anchored_theory([1.0, 2.0, 4.0], [0.25, 0.25])
    np.testing.assert_allclose(out, [1.0, 2.0, 4.0])
    np.testing.assert_allclose(anchored_theory([5.0, 2.0, 4.0], [0.25, 0.25], "input"),
                               [5.0, 10.0, 20.0])


# ------------------------------------------------------------------------ perturbations
def test_perturbation_profile_tangent_matches_small_finite_perturbations():
    rng = np.random.default_rng(1)
    net = ns.MLP([20, 15, 15, 15, 5], sigma_w=1.4, sigma_b=0.2, seed=5)
    X = rng.standard_normal((6, 20))
    tan = perturbation_profile(net, X)
    fin = perturbation_profile(net, X, eps=1e-6)
    np.testing.assert_allclose(tan.sizes, fin.sizes, rtol=1e-5)
    res = ns.MLP([20, 20, 20, 20, 5], residual=True, seed=5)
    np.testing.assert_allclose(perturbation_profile(res, X).sizes,
                               perturbation_profile(res, X, eps=1e-6).sizes, rtol=1e-5)


def test_perturbation_growth_matches_theory_at_width_800():
    rng = np.random.default_rng(2)
    sw, sb = math.sqrt(2.0), math.sqrt(0.05)
    net = ns.MLP([800] * 5, sigma_w=sw, sigma_b=sb, seed=1, output_activation="tanh")
    X = rng.standard_normal((8, 800))
    p = perturbation_profile(net, X)
    np.testing.assert_allclose(p.growth, p.theory_growth, rtol=0.05)
    np.testing.assert_allclose(p.local_growth, p.theory_growth, rtol=0.05)
    big = perturbation_profile(net, X, eps=5.0)  # finite: two-input mean-field iterates
    np.testing.assert_allclose(big.growth, big.theory_growth, rtol=0.05)
    rn = ns.RateNetwork([50, 40, 40], activation="logistic", sigma_w=2.0, w_bounds=None)
    assert perturbation_profile(rn, rng.random((3, 50))).sizes.shape == (3, 2)


def test_bad_inputs(data):
    X, Y = data[0][:4], data[1][:4]
    net = ns.MLP([12, 5, 3])
    with pytest.raises(ValueError, match="rule"):
        propagation_profile(net, X, Y, rule="feedback_alignment")
    with pytest.raises(ValueError, match="targets Y"):
        propagation_profile(net, X)
    with pytest.raises(ValueError, match="features"):
        propagation_profile(net, X[:, :5], Y)
    with pytest.raises(ValueError, match="History"):
        propagation_profile(ns.History(), X, Y)
    with pytest.raises(TypeError, match="MLP, a RateNetwork or a History"):
        propagation_profile("net", X, Y)
    with pytest.raises(ValueError, match="loss"):
        propagation_profile(net, X, Y, loss="hinge")
    with pytest.raises(ValueError, match="threads"):
        propagation_profile(net, X, Y, threads=0)
    with pytest.raises(ValueError, match="eps"):
        perturbation_profile(net, X, eps=-1.0)
    with pytest.raises(ValueError, match="batch-normalised"):
        perturbation_profile(ns.MLP([12, 5, 5, 3], batchnorm=True), X)
