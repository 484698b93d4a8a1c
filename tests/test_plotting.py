"""Figures are drawn from hand-made results (no simulation) and written as real images."""

import dataclasses

import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib.figure import Figure

from neurosim import plotting
from neurosim.analysis.alignment import AlignmentAngles
from neurosim.analysis.dynamics import LyapunovResult
from neurosim.analysis.jacobian import JacobianSpectrum
from neurosim.analysis.meanfield import PhaseDiagram
from neurosim.analysis.propagation import propagation_profile
from neurosim.analysis.trainability import Trainability
from neurosim.history import History

L = 6


def profile(ratio, source="MLP", rule="backprop", rule_ratio=None):
    """A single-record profile with norms shrinking by sqrt(ratio) per layer toward the input."""
    norms = np.sqrt(ratio) ** np.arange(L - 1, -1, -1, dtype=float)
    hist = History(grad_norms=norms[None] * 2, delta_norms=norms[None],
                   signal_norms=(np.sqrt(rule_ratio) ** np.arange(L - 1, -1, -1.0))[None]
                   if rule_ratio else norms[None], update_norms=norms[None] * 2,
                   steps=np.array([0]), step_loss=np.array([1.0]), rule=rule)
    p = propagation_profile(hist)
    flat = {f.name: (v[0] if isinstance(v, np.ndarray) and v.ndim == 2 else v)
            for f in dataclasses.fields(p) for v in [getattr(p, f.name)]}
    flat.update(source=source, theory_sq_ratios=np.full(L - 1, ratio * 1.05),
                theory_grad_sq_ratios=np.full(L - 1, ratio),
                rule_theory_sq_ratios=np.full(L - 1, rule_ratio or ratio), steps=None)
    return dataclasses.replace(p, **flat)


def check_png(fig, tmp_path, name):
    assert isinstance(fig, Figure)
    path = tmp_path / f"{name}.png"
    fig.savefig(path, dpi=60)
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert float(img[..., :3].std()) > 0.01  # something was drawn


def test_gradient_profile(tmp_path):
    fig = plotting.plot_gradient_profile({"ordered": profile(0.7), "chaotic": profile(1.3)})
    check_png(fig, tmp_path, "profile")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and "layer" in ax.get_xlabel()
    assert len(ax.get_lines()) == 4  # measured and theory for each
    fig2 = plotting.plot_gradient_profile(profile(0.9), quantity="grad", theory=False)
    assert len(fig2.axes[0].get_lines()) == 1
    with pytest.raises(ValueError, match="quantity"):
        plotting.plot_gradient_profile(profile(0.9), quantity="weights")
    with pytest.raises(ValueError, match="no profiles"):
        plotting.plot_gradient_profile({})


def test_ann_beside_bio_on_shared_axes(tmp_path):
    bio = {"FA": profile(0.5, "RateNetwork", "feedback_alignment", rule_ratio=0.6),
           "DFA": profile(0.5, "RateNetwork", "direct_feedback_alignment", rule_ratio=1.0)}
    fig = plotting.plot_ann_vs_bio(profile(0.95), bio)
    check_png(fig, tmp_path, "ann_bio")
    left, right = fig.axes[:2]
    assert left.get_ylim() == right.get_ylim()
    assert any("true gradient" in t.get_text() for t in right.get_legend().get_texts())


def test_phase_diagram_with_trainability(tmp_path):
    sw2 = np.linspace(0.5, 4.0, 8)
    sb2 = np.linspace(0.0, 0.3, 4)
    chi = np.outer(np.ones(4), sw2 / 1.7)
    phase = PhaseDiagram("tanh", sw2, sb2, np.ones((4, 8)), chi, np.ones((4, 8)), chi,
                         np.abs(-1 / np.log(chi)), np.ones((4, 8)),
                         np.array([1.0, 1.6, 2.0, 2.4]))
    sw = np.sqrt(sw2)
    trained = np.zeros((2, 8, 3), dtype=bool)
    trained[:, 2:6, :] = True
    tr = Trainability("tanh", sw, 0.05, np.array([5, 20, 40]), np.array([0, 1]), "accuracy",
                      0.66, trained.astype(float), trained, np.ones_like(trained, float),
                      np.ones_like(trained, float), np.zeros_like(trained),
                      np.linspace(2, 10, 8), 1.3)
    check_png(plotting.plot_phase_diagram(phase, tr), tmp_path, "phase")
    check_png(plotting.plot_phase_diagram(phase, quantity="xi_c"), tmp_path, "phase_xi")
    with pytest.raises(ValueError, match="quantity"):
        plotting.plot_phase_diagram(phase, quantity="q")


def test_jacobian_spectra(tmp_path):
    rng = np.random.default_rng(0)

    def spec(scale):
        sv = np.exp(rng.normal(0, scale, (3, 50)))
        lam = sv**2
        return JacobianSpectrum(sv, lam.mean(), lam.var(), lam.var() / lam.mean() ** 2,
                                sv.max(), 0.5, 1.0, 1.0, np.zeros(4), 4)

    fig = plotting.plot_jacobian_spectra({"orthogonal": spec(0.1), "gaussian": spec(1.5)})
    check_png(fig, tmp_path, "jacobian")
    assert fig.axes[0].get_xscale() == "log"


def test_alignment_over_training(tmp_path):
    steps = np.arange(0, 100, 10)
    angles = np.stack([90 - steps * 0.3 * (l + 1) / 3 for l in range(3)] + [0 * steps], axis=1)
    al = AlignmentAngles("feedback_alignment", np.arange(1, 5), angles,
                         np.full_like(angles, np.nan), np.ones_like(angles),
                         np.ones_like(angles), steps)
    fig = plotting.plot_alignment({"FA": al, "FA again": al})
    check_png(fig, tmp_path, "alignment")
    assert len(fig.axes) == 2
    many = dataclasses.replace(al, angles=np.tile(angles, (1, 10)))
    assert len(plotting.plot_alignment(many, max_layers=6).axes[0].get_lines()) == 7


def test_lyapunov_against_gain(tmp_path):
    gains = np.array([0.5, 0.8, 1.5, 2.0, 3.0])
    lam = np.array([-0.5, -0.2, 0.03, 0.09, 0.2])
    fig = plotting.plot_lyapunov(gains=gains, exponents=lam, stderr=np.full(5, 0.01))
    check_png(fig, tmp_path, "lyapunov")
    results = [LyapunovResult(l, np.array([l]), np.array([0.01]), np.array([[l]]),
                              np.array([1.0]), np.array([[l]]), 0.01, 100.0, 10.0, 0.1, g, 300)
               for g, l in zip(gains, lam, strict=True)]
    fig = plotting.plot_lyapunov(results)
    assert "N = 300" in fig.axes[0].get_legend().get_texts()[-1].get_text()
    with pytest.raises(ValueError, match="gains"):
        plotting.plot_lyapunov()


def test_phase_diagram_draws_six_xi_c_depth_contours_where_they_belong(tmp_path):
    """With chi_c = sigma_w^2 / 1.7 the contour 6 xi_c = L sits at sigma_w^2 = 1.7 e^(+-6/L)."""
    sw2 = np.linspace(0.5, 4.0, 140)  # 1.7 itself is not on the grid
    sb2 = np.array([0.0, 0.1, 0.2])
    chi = np.outer(np.ones(3), sw2 / 1.7)
    xi = np.abs(-1 / np.log(chi))
    phase = PhaseDiagram("tanh", sw2, sb2, np.ones((3, 140)), chi, np.ones((3, 140)), chi, xi,
                         np.ones((3, 140)), np.full(3, 1.7))
    fig = plotting.plot_phase_diagram(phase, depth_levels=(30, 5000))
    check_png(fig, tmp_path, "phase_contours")
    ax = fig.axes[0]
    (cs,) = [c for c in ax.collections if hasattr(c, "allsegs")]
    assert list(cs.levels) == [30]  # 5000 lies beyond the grid's largest 6 xi_c
    xs = np.concatenate([seg[:, 0] for seg in cs.allsegs[0]])
    for branch in (1.7 * np.exp(-6 / 30), 1.7 * np.exp(6 / 30)):
        near = xs[np.abs(xs - branch) < 0.1]
        assert near.size and np.max(np.abs(near - branch)) < 0.01
    assert any("xi_c = L" in t.get_text() for t in ax.get_legend().get_texts())
    none = plotting.plot_phase_diagram(phase, depth_levels=())
    assert not [c for c in none.axes[0].collections if hasattr(c, "allsegs")]
