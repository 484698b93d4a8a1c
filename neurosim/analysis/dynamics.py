"""Chaos in recurrent rate networks: the Lyapunov spectrum by the Benettin / QR method.

For ``tau dx/dt = -x + J tanh(x)`` with ``J ~ N(0, g^2 / N)`` (Sompolinsky, Crisanti & Sommers
1988) the quiet state ``x = 0`` is stable for ``g < 1``, where the largest exponent is the real
part of the rightmost eigenvalue of ``-1 + J``, about ``g - 1`` (in units of ``1 / tau``), and
the network is chaotic for ``g > 1`` (largest exponent positive).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np

from .._validation import check_data, check_int, check_positive, check_real
from ..kernels import lyapunov as _k


def _one_blas_thread():
    """Limit BLAS to one thread where threadpoolctl is installed.

    Each Runge-Kutta stage multiplies ``J`` by only ``trials * (1 + k)`` columns: a product too
    thin for threads to pay off, and threaded BLAS on a busy machine was measured 30x slower.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional dependency
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


@dataclass
class LyapunovResult:
    """Lyapunov exponents of a recurrent network, in units of ``1 / tau``.

    Attributes
    ----------
    exponent : float
        The largest exponent (mean over trials).
    exponents : ndarray, shape (k,)
        The ``k`` leading exponents, descending (mean over trials).
    stderr : ndarray, shape (k,)
        Standard errors from block averages over time and trials.
    per_trial : ndarray, shape (trials, k)
    times : ndarray, shape (n_points,)
        Time since the end of the transient, in units of tau.
    running : ndarray, shape (n_points, k)
        Running estimate of the exponents at ``times`` (mean over trials): how it converges.
    tau : float
        The network's time constant in seconds (divide an exponent by it for 1/s).
    duration, transient, dt : float
        Averaging time, discarded transient and integration step, in units of tau.
    gain : float
        The network's gain (NaN if it has none).
    n : int
        Number of neurons.
    """

    exponent: float
    exponents: np.ndarray
    stderr: np.ndarray
    per_trial: np.ndarray
    times: np.ndarray
    running: np.ndarray
    tau: float
    duration: float
    transient: float
    dt: float
    gain: float
    n: int

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in self.__dict__.items()}


def lyapunov_exponent(model, *, n_exponents=1, duration=200.0, transient=50.0, dt=None,
                      trials=1, renorm_every=None, x0=None, I=None, seed=0) -> LyapunovResult:
    """Leading Lyapunov exponents of a :class:`~neurosim.bio.RecurrentRateNetwork`.

    Parameters
    ----------
    model : RecurrentRateNetwork
        Uses its couplings ``J``, activation, ``tau`` and form (``"current"`` or ``"rate"``);
        input noise is not part of the deterministic dynamics analysed here.
    n_exponents : int
        Number of leading exponents (tangent vectors re-orthonormalised by QR).
    duration : float
        Averaging time in units of tau (after the transient). Finite-time estimates fluctuate
        by roughly ``1 / sqrt(duration)``: near the transition use long runs.
    transient : float
        Time in units of tau discarded first (the state settles on its attractor and the
        tangent vectors align).
    dt : float, optional
        Runge-Kutta step in units of tau (default the model's ``dt / tau``, at most 0.1).
    trials : int
        Independent initial conditions integrated together (the exponent is their mean).
    renorm_every : int, optional
        Steps between re-orthonormalisations (default: about every 1 tau).
    x0 : array_like, shape (n,) or (trials, n), optional
        Initial states (default ``N(0, 1)`` draws).
    I : float or array_like, shape (n,), optional
        Constant input (default 0).
    seed : int
        Seed of the initial states and tangent vectors.

    Returns
    -------
    LyapunovResult
    """
    from ..bio import RecurrentRateNetwork

    if not isinstance(model, RecurrentRateNetwork):
        raise TypeError(f"lyapunov_exponent takes a RecurrentRateNetwork, got "
                        f"{type(model).__name__}")
    n = model.n
    k = check_int("n_exponents", n_exponents, minimum=1)
    if k > n:
        raise ValueError(f"n_exponents must be <= n = {n}, got {k}")
    duration = check_positive("duration", duration)
    transient = check_real("transient", transient)
    if transient < 0:
        raise ValueError(f"transient must be >= 0 (units of tau), got {transient!r}")
    h = min(model.dt / model.tau, 0.1) if dt is None else check_positive("dt", dt)
    if h > 0.5:
        raise ValueError(f"dt must be <= 0.5 tau for an accurate Runge-Kutta step, got {h!r}")
    trials = check_int("trials", trials, minimum=1)
    every = max(1, round(1.0 / h)) if renorm_every is None else check_int(
        "renorm_every", renorm_every, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    rng = np.random.default_rng(seed)
    if x0 is None:
        X0 = rng.standard_normal((trials, n))
    else:
        X0 = check_data("x0", x0, n_features=n, dtype=np.float64)
        if X0.shape[0] == 1 and trials > 1:
            X0 = np.repeat(X0, trials, axis=0)
        if X0.shape[0] != trials:
            raise ValueError(f"x0 has {X0.shape[0]} rows but trials={trials}")
    if I is None:
        Iarr = np.zeros((n, trials))
    else:
        Iv = np.asarray(I, dtype=np.float64)
        if Iv.ndim == 0:
            Iv = np.full(n, float(Iv))
        if Iv.shape != (n,) or not np.all(np.isfinite(Iv)):
            raise ValueError(f"I must be a finite number or an array of shape ({n},)")
        Iarr = np.repeat(Iv[:, None], trials, axis=1)
    S = np.empty((n, trials * (1 + k)))
    S[:, :trials] = X0.T
    for t in range(trials):
        q, _ = np.linalg.qr(rng.standard_normal((n, k)))
        S[:, trials + t * k: trials + (t + 1) * k] = q
    n_trans = int(math.ceil(transient / h / every)) * every
    n_avg = max(every, int(math.ceil(duration / h / every)) * every)
    logs = np.zeros(((n_trans + n_avg) // every, trials, k))
    J = np.ascontiguousarray(model.J, dtype=np.float64)
    form = _k.FORM_CURRENT if model.form == "current" else _k.FORM_RATE
    act = model.activation
    with _one_blas_thread():
        _k.benettin(act.code, act.param_array(np.float64), J, np.ascontiguousarray(Iarr), S,
                    trials, k, form, h, n_trans + n_avg, every, logs)
    kept = logs[n_trans // every:]
    block_time = every * h
    per_trial = kept.sum(axis=0) / (kept.shape[0] * block_time)
    exponents = per_trial.mean(axis=0)
    order = np.argsort(-exponents)
    exponents, per_trial = exponents[order], per_trial[:, order]
    kept = kept[:, :, order]
    n_blocks = min(20, kept.shape[0])
    blocks = np.array_split(kept, n_blocks, axis=0)
    means = np.array([b.sum(axis=0) / (b.shape[0] * block_time) for b in blocks])
    samples = means.reshape(-1, k)
    stderr = (samples.std(axis=0, ddof=1) / math.sqrt(samples.shape[0])
              if samples.shape[0] > 1 else np.full(k, np.nan))
    cumulative = np.cumsum(kept.mean(axis=1), axis=0)
    times = np.arange(1, kept.shape[0] + 1) * block_time
    running = cumulative / times[:, None]
    return LyapunovResult(float(exponents[0]), exponents, stderr, per_trial, times, running,
                          float(model.tau), n_avg * h, n_trans * h, h,
                          float(getattr(model, "gain", math.nan)), n)
