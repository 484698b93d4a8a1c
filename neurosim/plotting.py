"""Figures of signal propagation across depth, drawn from results (no simulation inside).

Every function takes analysis results (dataclasses from :mod:`neurosim.analysis`, or plain
arrays) and returns a :class:`matplotlib.figure.Figure`, built without pyplot's global state, so
it works under any backend (the Agg canvas is attached on save). Colours follow the Okabe-Ito
palette, which stays distinguishable with the common colour-vision deficiencies and in greyscale
print together with the line styles and markers; layers are numbered 1..L from the input.

==========================  ==================================================================
function                    what it shows
==========================  ==================================================================
plot_gradient_profile       signal norm per layer on a log axis, mean-field theory dashed
plot_ann_vs_bio             backprop MLP beside a bounded rate network, shared log axis
plot_phase_diagram          order-chaos diagram in (sigma_w^2, sigma_b^2) with the critical line,
                            and trainability over (sigma_w^2, depth) with 6 xi_c
plot_jacobian_spectra       singular-value distributions of input-output Jacobians
plot_alignment              angle between a rule's update and the gradient, per layer, over
                            training
plot_lyapunov               largest Lyapunov exponent against the gain, g - 1 beside
==========================  ==================================================================
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import patheffects
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from .analysis.propagation import anchored_theory

OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442",
             "#000000")
"""Okabe & Ito's colour-blind-safe palette (blue first; yellow late, as it is faint on white)."""

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")

_QUANTITIES = {
    "delta": ("delta_norms", "theory_sq_ratios",
              r"error signal $\langle\|\delta_l\|\rangle_{\rm batch}$"),
    "grad": ("grad_norms", "theory_grad_sq_ratios", r"gradient $\|\partial L/\partial W_l\|_F$"),
    "signal": ("signal_norms", "rule_theory_sq_ratios",
               r"delivered signal $\langle\|\delta_l\|\rangle_{\rm batch}$"),
    "update": ("update_norms", None, r"update $\|\Delta W_l\|_F$"),
}


def _figure(ncols: int = 1, nrows: int = 1, width: float = 4.8, height: float = 3.6,
            sharey: bool = False) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=sharey)
    return fig, axes


def _as_mapping(results, kind: str) -> dict:
    """A result, a sequence of results or a mapping label -> result, as a dict."""
    if isinstance(results, Mapping):
        if not results:
            raise ValueError(f"no {kind} to plot")
        return dict(results)
    if isinstance(results, Sequence) and not isinstance(results, (str, bytes)):
        if not results:
            raise ValueError(f"no {kind} to plot")
        return {_default_label(r, i): r for i, r in enumerate(results)}
    return {_default_label(results, 0): results}


def _default_label(result, index: int) -> str:
    source = getattr(result, "source", None)
    rule = getattr(result, "rule", None)
    if source and rule:
        return f"{source} ({rule})" if source != "MLP" else "MLP (backprop)"
    return f"result {index + 1}"


def _profile_lines(ax, profile, quantity, color, marker, label, theory):
    field, ratio_field, _ = _QUANTITIES[quantity]
    norms = np.asarray(getattr(profile, field), dtype=np.float64)
    if norms.ndim != 1:
        norms = norms[-1]  # a profile over training: its last record
    layers = np.arange(1, norms.shape[0] + 1)
    ax.plot(layers, norms, marker=marker, color=color, label=label, lw=1.5, ms=4)
    if theory and ratio_field is not None:
        ratios = np.asarray(getattr(profile, ratio_field), dtype=np.float64)
        if ratios.ndim == 1 and np.any(np.isfinite(ratios)):
            ax.plot(layers, anchored_theory(norms, ratios), ls="--", color=color, lw=1.2,
                    label=f"{label}: mean-field theory")


def _log_layers_axes(ax, ylabel, title=None):
    ax.set_yscale("log")
    ax.set_xlabel("layer $l$ (1 = next to the input)")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.xaxis.get_major_locator().set_params(integer=True)


def plot_gradient_profile(profiles, *, quantity: str = "delta", theory: bool = True,
                          title: str | None = None, ax=None) -> Figure:
    """Per-layer norm of a learning signal on a log axis, the mean-field prediction dashed.

    Parameters
    ----------
    profiles : PropagationProfile, sequence of them, or mapping label -> profile
        From :func:`neurosim.analysis.propagation_profile` (a profile over training shows its
        last record).
    quantity : {"delta", "grad", "signal", "update"}
        ``delta``: the true error signal; ``grad``: ``||dL/dW_l||_F``; ``signal`` / ``update``:
        what a learning rule delivers.
    theory : bool
        Draw the prediction, pinned to the measurement at the output layer.
    title : str, optional
    ax : matplotlib Axes, optional
        Draw into it instead of a new figure.

    Returns
    -------
    Figure
    """
    if quantity not in _QUANTITIES:
        raise ValueError(f"quantity must be one of {sorted(_QUANTITIES)}, got {quantity!r}")
    items = _as_mapping(profiles, "profiles")
    if ax is None:
        fig, axes = _figure()
        ax = axes[0, 0]
    else:
        fig = ax.figure
    for i, (label, prof) in enumerate(items.items()):
        _profile_lines(ax, prof, quantity, OKABE_ITO[i % 8], MARKERS[i % 8], label, theory)
    _log_layers_axes(ax, _QUANTITIES[quantity][2], title)
    ax.legend(fontsize=8)
    return fig


def plot_ann_vs_bio(ann, bio, *, theory: bool = True,
                    titles=("backprop MLP", "bounded rate network")) -> Figure:
    """An artificial and a biologically inspired network side by side on one log scale.

    Left: the backpropagated error ``||delta_l||`` of each MLP profile. Right: the signal each
    rate-network rule delivers (solid) beside the true gradient's ``||delta_l||`` through the
    same network (dotted grey), theory dashed.

    Parameters
    ----------
    ann : PropagationProfile or mapping label -> profile (MLP profiles)
    bio : PropagationProfile or mapping label -> profile (RateNetwork profiles, any rules)
    theory : bool
    titles : (str, str)

    Returns
    -------
    Figure
    """
    ann_items = _as_mapping(ann, "ANN profiles")
    bio_items = _as_mapping(bio, "rate-network profiles")
    fig, axes = _figure(ncols=2, sharey=True)
    left, right = axes[0]
    for i, (label, prof) in enumerate(ann_items.items()):
        _profile_lines(left, prof, "delta", OKABE_ITO[i % 8], MARKERS[i % 8], label, theory)
    offset = len(ann_items)
    true_drawn = False
    for i, (label, prof) in enumerate(bio_items.items()):
        k = (offset + i) % 8
        _profile_lines(right, prof, "signal", OKABE_ITO[k], MARKERS[k], label, theory)
        if not true_drawn and getattr(prof, "rule", "backprop") != "backprop":
            norms = np.asarray(prof.delta_norms, dtype=np.float64)
            norms = norms if norms.ndim == 1 else norms[-1]
            right.plot(np.arange(1, norms.shape[0] + 1), norms, ls=":", color="0.4", lw=1.5,
                       label="true gradient (backprop)")
            true_drawn = True
    _log_layers_axes(left, r"error signal $\langle\|\delta_l\|\rangle_{\rm batch}$",
                     titles[0])
    _log_layers_axes(right, "", titles[1])
    right.tick_params(labelleft=True)
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    return fig


def plot_phase_diagram(phase, trainability=None, *, quantity: str = "chi1",
                       depth_levels=(10, 30, 100)) -> Figure:
    """Order-chaos phase diagram, and trainability beside ``6 xi_c``.

    Parameters
    ----------
    phase : PhaseDiagram
        From :func:`neurosim.analysis.meanfield.phase_diagram`.
    trainability : Trainability, optional
        From :func:`neurosim.analysis.trainable_depth`; adds a panel of the share of networks
        that trained over ``(sigma_w^2, depth)`` with the curve ``6 xi_c`` and the critical
        ``sigma_w^2``.
    quantity : {"chi1", "xi_c"}
        Colour of the phase panel: ``chi_1`` on a log scale centred at 1, or ``xi_c``.
    depth_levels : sequence of float
        Depths ``L`` whose contours ``6 xi_c = L`` are drawn on the phase panel: the
        mean-field edge of trainability of an ``L``-layer network (it trains between the two
        branches of its contour, around the critical line). Empty for none.

    Returns
    -------
    Figure
    """
    if quantity not in ("chi1", "xi_c"):
        raise ValueError(f"quantity must be 'chi1' or 'xi_c', got {quantity!r}")
    ncols = 1 if trainability is None else 2
    fig, axes = _figure(ncols=ncols, width=5.0, height=4.0)
    ax = axes[0, 0]
    x = np.asarray(phase.sigma_w2, dtype=np.float64)
    y = np.asarray(phase.sigma_b2, dtype=np.float64)
    if quantity == "chi1":
        z = np.log(np.asarray(phase.chi1, dtype=np.float64))
        lim = max(float(np.nanmax(np.abs(z))), 1e-6) if np.any(np.isfinite(z)) else 1.0
        mesh = ax.pcolormesh(x, y, z, cmap="PuOr_r", norm=TwoSlopeNorm(0.0, -lim, lim),
                             shading="nearest")
        cbar = fig.colorbar(mesh, ax=ax)
        cbar.set_label(r"$\ln \chi_1$ (< 0 ordered, > 0 chaotic)")
    else:
        z = np.asarray(phase.xi_c, dtype=np.float64)
        finite = np.where(np.isfinite(z), z, np.nan)
        mesh = ax.pcolormesh(x, y, finite, cmap="cividis", shading="nearest")
        cbar = fig.colorbar(mesh, ax=ax)
        cbar.set_label(r"correlation depth scale $\xi_c$ (layers)")
    crit = np.asarray(phase.critical_sigma_w2, dtype=np.float64)
    ok = np.isfinite(crit) & (crit >= x.min()) & (crit <= x.max())
    ax.plot(crit[ok], y[ok], color="black", lw=2, label=r"critical line $\chi_1 = 1$")
    _depth_contours(ax, x, y, np.asarray(phase.xi_c, dtype=np.float64), depth_levels)
    ax.set_xlabel(r"weight variance $\sigma_w^2$")
    ax.set_ylabel(r"bias variance $\sigma_b^2$")
    ax.set_title(f"{phase.activation}: order-chaos phase diagram")
    ax.legend(fontsize=8, loc="upper left")
    if trainability is not None:
        _trainability_panel(axes[0, 1], fig, trainability)
    return fig


def _depth_contours(ax, x, y, xi_c, depth_levels):
    """Contours ``6 xi_c = L`` for each depth L, labelled inline."""
    levels = sorted(float(v) for v in depth_levels)
    six = 6.0 * np.where(np.isinf(xi_c), np.finfo(np.float64).max, xi_c)
    if not levels or x.size < 2 or y.size < 2 or not np.any(np.isfinite(six)):
        return
    lo, hi = float(np.nanmin(six)), float(np.nanmax(six))
    levels = [v for v in levels if lo < v < hi]
    if not levels:
        return
    cs = ax.contour(x, y, six, levels=levels, colors="white", linewidths=1.2,
                    linestyles="--")
    for line in (getattr(cs, "collections", None) or [cs]):
        line.set_path_effects([patheffects.withStroke(linewidth=2.6, foreground="black")])
    ax.clabel(cs, fmt=lambda v: f"L = {v:g}", fontsize=7)
    ax.plot([], [], color="white", ls="--", lw=1.2,
            path_effects=[patheffects.withStroke(linewidth=2.6, foreground="black")],
            label=r"$6\,\xi_c = L$ (trainable depth)")


def _trainability_panel(ax, fig, tr):
    sw2 = np.asarray(tr.sigma_w, dtype=np.float64) ** 2
    depths = np.asarray(tr.depths, dtype=np.float64)
    frac = np.asarray(tr.trained, dtype=np.float64).mean(axis=0).T  # (n_d, n_w)
    mesh = ax.pcolormesh(sw2, depths, frac, cmap="cividis", vmin=0.0, vmax=1.0,
                         shading="nearest")
    cbar = fig.colorbar(mesh, ax=ax)
    cbar.set_label(f"share trained ({tr.metric} target {tr.target:.3g})")
    six = 6.0 * np.asarray(tr.xi_c, dtype=np.float64)
    ax.plot(sw2, np.where(np.isfinite(six), six, np.nan), color="white", lw=2.2,
            path_effects=[patheffects.withStroke(linewidth=4, foreground="black")],
            label=r"$6\,\xi_c$ (mean field)")
    if math.isfinite(tr.critical_sigma_w):
        ax.axvline(tr.critical_sigma_w**2, color=OKABE_ITO[1], ls="--", lw=1.5,
                   label=r"critical $\sigma_w^2$")
    ax.set_ylim(depths.min() - 0.5 * _step(depths), depths.max() + 0.5 * _step(depths))
    ax.set_xlabel(r"weight variance $\sigma_w^2$")
    ax.set_ylabel("depth (hidden layers)")
    ax.set_title(rf"trainability, $\sigma_b^2 = {tr.sigma_b**2:g}$")
    ax.legend(fontsize=8, loc="upper right")


def _step(values: np.ndarray) -> float:
    return float(np.min(np.diff(np.unique(values)))) if np.unique(values).size > 1 else 1.0


def plot_jacobian_spectra(spectra, *, bins: int = 60, band=(0.5, 2.0)) -> Figure:
    """Distributions of the Jacobian's singular values, one per network.

    Parameters
    ----------
    spectra : JacobianSpectrum, sequence, or mapping label -> JacobianSpectrum
    bins : int
        Logarithmic bins.
    band : (float, float)
        Shaded singular-value band (near-isometry).

    Returns
    -------
    Figure
    """
    items = _as_mapping(spectra, "spectra")
    fig, axes = _figure(width=5.4)
    ax = axes[0, 0]
    all_sv = np.concatenate([np.asarray(s.singular_values, np.float64).ravel()
                             for s in items.values()])
    all_sv = all_sv[all_sv > 0]
    if all_sv.size == 0:
        raise ValueError("the spectra hold no positive singular values")
    lo = min(float(all_sv.min()), band[0]) / 1.5
    hi = max(float(all_sv.max()), band[1]) * 1.5
    edges = np.geomspace(lo, hi, bins + 1)
    ax.axvspan(*band, color="0.9", zorder=0, label=f"[{band[0]:g}, {band[1]:g}]")
    for i, (label, s) in enumerate(items.items()):
        sv = np.asarray(s.singular_values, np.float64).ravel()
        frac = float(np.mean((sv >= band[0]) & (sv <= band[1])))
        ax.hist(sv[sv > 0], bins=edges, density=True, histtype="step", lw=1.8,
                color=OKABE_ITO[i % 8], label=f"{label} ({100 * frac:.0f}% in band)")
    ax.set_xscale("log")
    ax.set_xlabel(r"singular value of $\partial a_L / \partial x$")
    ax.set_ylabel("density")
    ax.set_title("input-output Jacobian spectra")
    ax.legend(fontsize=8)
    return fig


def plot_alignment(alignments, *, max_layers: int = 12) -> Figure:
    """Angle between each layer's update and the true gradient over training.

    Parameters
    ----------
    alignments : AlignmentAngles (from a History), sequence, or mapping label -> them
        From :func:`neurosim.analysis.alignment_angles` applied to training histories; one
        panel per entry, one line per layer.
    max_layers : int
        Show at most this many layers (evenly spaced, always the first and the last).

    Returns
    -------
    Figure
    """
    items = _as_mapping(alignments, "alignments")
    fig, axes = _figure(ncols=len(items), sharey=True)
    for ax, (label, al) in zip(axes[0], items.items(), strict=True):
        angles = np.asarray(al.angles, dtype=np.float64)
        if angles.ndim == 1:
            angles = angles[None, :]
        steps = (np.asarray(al.steps) if getattr(al, "steps", None) is not None
                 and np.size(al.steps) == angles.shape[0] else np.arange(angles.shape[0]))
        L = angles.shape[1]
        shown = np.unique(np.round(np.linspace(0, L - 1, min(L, max_layers))).astype(int))
        colors = _layer_colors(len(shown))
        for c, l in zip(colors, shown, strict=True):
            ax.plot(steps, angles[:, l], color=c, lw=1.5, label=f"layer {l + 1}",
                    marker=None if angles.shape[0] > 1 else "o")
        ax.axhline(90.0, color="0.5", ls="--", lw=1, label="orthogonal (90°)")
        ax.set_ylim(0, 180 if np.nanmax(angles, initial=0) > 95 else 100)
        ax.set_xlabel("optimizer step")
        ax.set_title(f"{getattr(al, 'rule', label)}" if label.startswith("result")
                     else label)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    axes[0, 0].set_ylabel("angle to the true gradient (degrees)")
    return fig


def _layer_colors(n: int) -> list:
    if n <= len(OKABE_ITO) - 1:
        return list(OKABE_ITO[:n])
    from matplotlib import colormaps

    cmap = colormaps["cividis"]
    return [cmap(v) for v in np.linspace(0.0, 0.9, n)]


def plot_lyapunov(results=None, *, gains=None, exponents=None, stderr=None,
                  label: str | None = None) -> Figure:
    """Largest Lyapunov exponent against the coupling gain, with ``g - 1`` below the transition.

    Parameters
    ----------
    results : sequence of LyapunovResult, optional
        From :func:`neurosim.analysis.lyapunov_exponent` (gain and standard error taken from
        each); or give the arrays below.
    gains, exponents, stderr : array_like, optional
        Gains, largest exponents (units of 1/tau) and their standard errors.
    label : str, optional
        Legend label of the measurement (default mentions the network size).

    Returns
    -------
    Figure
    """
    if results is not None:
        results = list(results)
        gains = np.array([r.gain for r in results], dtype=np.float64)
        exponents = np.array([r.exponent for r in results], dtype=np.float64)
        stderr = np.array([r.stderr[0] for r in results], dtype=np.float64)
        sizes = {r.n for r in results}
        if label is None and len(sizes) == 1:
            label = f"Benettin/QR, N = {sizes.pop()}"
    if gains is None or exponents is None:
        raise ValueError("give results= or both gains= and exponents=")
    g = np.asarray(gains, dtype=np.float64)
    lam = np.asarray(exponents, dtype=np.float64)
    if g.shape != lam.shape or g.ndim != 1:
        raise ValueError(f"gains and exponents must be 1-D of one length, got {g.shape} and "
                         f"{lam.shape}")
    order = np.argsort(g)
    g, lam = g[order], lam[order]
    err = None if stderr is None else np.asarray(stderr, dtype=np.float64)[order]
    fig, axes = _figure(width=5.0)
    ax = axes[0, 0]
    ax.axhline(0.0, color="0.5", lw=1)
    ax.axvline(1.0, color="0.5", ls=":", lw=1)
    below = np.linspace(min(float(g.min()), 0.0), 1.0, 50)
    ax.plot(below, below - 1.0, ls="--", color=OKABE_ITO[1], lw=1.5,
            label=r"$g - 1$ (quiet fixed point)")
    ax.errorbar(g, lam, yerr=err, marker="o", color=OKABE_ITO[0], lw=1.5, capsize=3,
                label=label or "measured")
    ax.set_xlabel(r"gain $g$ ($J_{ij} \sim N(0, g^2/N)$)")
    ax.set_ylabel(r"largest Lyapunov exponent ($1/\tau$)")
    ax.set_title("transition to chaos")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return fig
