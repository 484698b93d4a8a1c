"""Rate-based neuron networks with bounded rates and bounded synapses.

:class:`RateNetwork` is a layered network of rate neurons,
``tau dr_l/dt = -r_l + F(r_{l-1} W_l + b_l + I_l)`` with the input ``r_0 = X`` clamped, run for a
batch of trials at once. :class:`RecurrentRateNetwork` is the random fully connected network of
Sompolinsky, Crisanti & Sommers (1988). Both have:

- bounded transfer functions ``F`` (``logistic``, ``saturating_linear``, ``naka_rushton`` with
  rates in ``[0, r_max]``; ``tanh`` in ``[-1, 1]``). Rates are dimensionless (units of ``r_max``)
  when ``r_max = 1``, in Hz when ``r_max`` is given in Hz; ``tau`` and ``dt`` are in seconds;
- bounded synapses: every weight lives in ``w_bounds = (w_min, w_max)``;
- Dale's principle: ``dale = fraction_excitatory`` fixes the sign of each presynaptic neuron;
- forward Euler or exponential Euler integration and optional Gaussian white or
  Ornstein-Uhlenbeck input noise drawn from the model's seeded generator.

Noise conventions: ``noise="white"`` adds independent ``N(0, noise_std^2 tau / dt)`` draws to
every input current at every step (white noise of intensity ``noise_std^2 tau``, so that the
Euler-Maruyama scheme has a ``dt``-independent limit where the input enters linearly);
``noise="ou"`` adds an Ornstein-Uhlenbeck process of stationary standard deviation ``noise_std``
and correlation time ``noise_tau``, updated exactly. ``steady_state`` is always noise-free.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from . import activations as _activations
from ._device import resolve_device
from ._validation import (
    check_choice,
    check_data,
    check_dtype,
    check_in_range,
    check_int,
    check_positive,
    check_real,
    check_sizes,
    unknown_name_error,
)
from .kernels import rate as _k
from .kernels import rules as _rules_k

INTEGRATORS = ("euler", "exponential")
NOISE_KINDS = (None, "white", "ou")
BOUND_MODES = ("clip", "soft")
INIT_BOUNDS = ("error", "clip", "rescale")
FEEDBACK = (None, "symmetric")
FORMS = ("current", "rate")


class ConvergenceWarning(RuntimeWarning):
    """A relaxation stopped at ``max_steps`` before its residual fell below ``tol``."""


class Backend:
    """Kernel modules and array transfers of one device.

    On the CPU, ``put`` and ``host`` return their argument, so the kernels work in place on the
    model's own arrays. With ``device="cuda"`` the CUDA twins of the kernels run on device
    copies and results come back to the host.
    """

    def __init__(self, device):
        self.device = device
        if device == "cpu":
            self.rate, self.rules, self.cuda = _k, _rules_k, None
        else:
            from ._device import cuda_api
            from .kernels.cuda import rate as cuda_rate
            from .kernels.cuda import rules as cuda_rules
            from .kernels.cuda._launch import is_device_array

            self.rate, self.rules, self.cuda = cuda_rate, cuda_rules, cuda_api()
            self._on_device = is_device_array

    def put(self, a):
        if self.cuda is None or self._on_device(a):
            return a
        return self.cuda.to_device(np.ascontiguousarray(a))

    def host(self, a):
        return a if self.cuda is None or not self._on_device(a) else a.copy_to_host()

    def empty(self, shape, dtype):
        if self.cuda is None:
            return np.empty(shape, dtype=dtype)
        return self.cuda.device_array(shape, dtype=dtype)

    def back(self, device_array, out):
        """Copy a result into the host array ``out`` (nothing to do when it already is)."""
        if self.cuda is not None and self._on_device(device_array):
            device_array.copy_to_host(out)
        elif device_array is not out:
            out[...] = device_array
        return out

    def generator(self, rng):
        """The noise source the kernels take: the NumPy generator, or device states seeded
        from it."""
        return rng if self.cuda is None else self.rate.noise_rng(rng)


@dataclass
class SteadyState:
    """Result of :meth:`RateNetwork.steady_state`.

    Attributes
    ----------
    rates : list of ndarray
        Rates of layers 1..L at the final state, each of shape (batch, n_l).
    steps : int
        Integration steps taken.
    residual : float
        ``max |F(h) - r|`` over every unit and trial of the final state, in rate units
        (``tau`` times the largest ``|dr/dt|``).
    converged : bool
        ``residual < tol``.
    tol : float
        The tolerance used.
    """

    rates: list
    steps: int
    residual: float
    converged: bool
    tol: float

    @property
    def output(self) -> np.ndarray:
        """Rates of the output layer, shape (batch, n_out)."""
        return self.rates[-1]


@dataclass
class Trace:
    """A recorded time course.

    Attributes
    ----------
    times : ndarray, shape (n_records,)
        Time of each record in seconds (the initial state is the record at 0).
    rates : list of ndarray
        For a layered network, the rates of layers 1..L, each of shape (n_records, batch, n_l).
        For a recurrent network, one array (n_records, trials, n) of rates ``F(x)``.
    states : ndarray or None
        Recurrent networks only: the integrated variable (currents ``x`` in the ``"current"``
        form, equal to the rates in the ``"rate"`` form), shape (n_records, trials, n).
    """

    times: np.ndarray
    rates: list
    states: np.ndarray | None = None


def _check_w_bounds(w_bounds):
    if w_bounds is None:
        return None
    try:
        w_min, w_max = w_bounds
    except (TypeError, ValueError):
        raise TypeError(
            f"w_bounds must be None or a pair (w_min, w_max), got {w_bounds!r}"
        ) from None
    w_min = check_real("w_bounds[0] (w_min)", w_min)
    w_max = check_real("w_bounds[1] (w_max)", w_max)
    if w_min >= w_max:
        raise ValueError(f"w_bounds needs w_min < w_max, got w_bounds={w_bounds!r}")
    return (w_min, w_max)


def _check_dale(dale, w_bounds):
    if dale is None:
        return None
    dale = check_in_range("dale (fraction of excitatory neurons)", dale, 0.0, 1.0)
    if w_bounds is not None:
        w_min, w_max = w_bounds
        if dale > 0 and w_max <= 0:
            raise ValueError(
                f"dale={dale} has excitatory neurons but w_bounds={w_bounds!r} allows no positive "
                "weight; use w_max > 0"
            )
        if dale < 1 and w_min >= 0:
            raise ValueError(
                f"dale={dale} has inhibitory neurons but w_bounds={w_bounds!r} allows no negative "
                "weight; use w_min < 0"
            )
    return dale


def _check_time(tau, dt):
    tau = check_positive("tau (seconds)", tau)
    dt = check_positive("dt (seconds)", dt)
    if dt >= tau:
        raise ValueError(
            f"dt must be smaller than tau for a stable, accurate integration, got dt={dt} >= "
            f"tau={tau}; use dt <= tau / 10"
        )
    return tau, dt


def _resolve_activation(activation, r_max, activation_params):
    if activation_params is not None and not isinstance(activation_params, dict):
        raise TypeError(f"activation_params must be a dict or None, got {activation_params!r}")
    params = dict(activation_params or {})
    given = isinstance(activation, _activations.Activation)
    name = activation.name if given else activation
    if name not in _activations.RATE_ACTIVATIONS:
        if isinstance(name, str) and name in _activations.names():
            raise ValueError(
                f"activation {name!r} is not bounded; rate networks need one of "
                f"{', '.join(_activations.RATE_ACTIVATIONS)}"
            )
        raise unknown_name_error("rate activation", name, _activations.RATE_ACTIVATIONS)
    r_max = check_positive("r_max", r_max)
    if "r_max" in params:
        raise ValueError("give r_max as the r_max argument, not in activation_params")
    if name == "tanh":
        if r_max != 1.0:
            raise ValueError(
                f"tanh rates lie in [-1, 1]; r_max applies to logistic, saturating_linear and "
                f"naka_rushton only, got r_max={r_max!r}"
            )
    elif r_max != 1.0 or not given:
        params["r_max"] = r_max
    return _activations.get(activation, **params)


def _integration_coefficient(integrator, dt, tau):
    if integrator == "euler":
        return dt / tau
    return -np.expm1(-dt / tau)


def _noise_parameters(noise, noise_std, noise_tau, tau, dt):
    """(kind code, per-step scale, OU decay) of an input-noise specification."""
    if noise is None:
        return _k.NOISE_NONE, 0.0, 0.0
    if noise == "white":
        return _k.NOISE_WHITE, noise_std * np.sqrt(tau / dt), 0.0
    decay = np.exp(-dt / noise_tau)
    return _k.NOISE_OU, noise_std * np.sqrt(-np.expm1(-2.0 * dt / noise_tau)), decay


def _check_noise(noise, noise_std, noise_tau, tau):
    if noise not in NOISE_KINDS:
        raise ValueError(f"noise must be None, 'white' or 'ou', got {noise!r}")
    noise_std = check_real("noise_std", noise_std)
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std!r}")
    noise_tau = tau if noise_tau is None else check_positive("noise_tau (seconds)", noise_tau)
    return noise, noise_std, noise_tau


def _draw_signs(rng, n, dale):
    signs = -np.ones(n)
    n_exc = int(round(dale * n))
    signs[rng.permutation(n)[:n_exc]] = 1.0
    return signs


def _bounds_for_signs(signs, n, w_bounds):
    """Per-presynaptic-neuron bounds ``(lo, hi)``, each shape (n,)."""
    w_min, w_max = w_bounds if w_bounds is not None else (-np.inf, np.inf)
    lo = np.full(n, w_min)
    hi = np.full(n, w_max)
    if signs is not None:
        lo = np.where(signs > 0, max(w_min, 0.0), lo)
        hi = np.where(signs < 0, min(w_max, 0.0), hi)
    return lo, hi


def _fit_into_bounds(name, W, lo, hi, mode):
    """Check, clip or rescale ``W`` (rows = presynaptic neurons) into ``[lo, hi]`` per row."""
    lo_b = lo[:, None]
    hi_b = hi[:, None]
    outside = (W < lo_b) | (W > hi_b)
    if not outside.any():
        return W
    if mode == "clip":
        return np.clip(W, lo_b, hi_b)
    if mode == "rescale":
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(W > 0, W / hi_b, np.where(W < 0, W / lo_b, 0.0))
        worst = float(np.max(ratio))
        if not np.isfinite(worst) or np.any((W > 0) & (hi_b <= 0)) or np.any((W < 0) & (lo_b >= 0)):
            raise ValueError(
                f"{name} has weights of a sign its bounds forbid (Dale's principle), so rescaling "
                "cannot fit it; use init_bounds='clip'"
            )
        return W / worst
    count = int(outside.sum())
    raise ValueError(
        f"{name} has {count} of {W.size} weights outside their bounds (smallest {W.min():.4g}, "
        f"largest {W.max():.4g}; allowed per presynaptic neuron within [{lo.min():.4g}, "
        f"{hi.max():.4g}] and Dale signs); pass init_bounds='clip' to clip them or "
        "init_bounds='rescale' to scale each layer into the bounds"
    )


class RateNetwork:
    """Layered network of rate neurons with bounded rates and bounded synapses.

    Dynamics of layer ``l = 1..L`` for a batch of trials (``r_0 = X``, clamped)::

        tau dr_l/dt = -r_l + F(h_l),
        h_l = r_{l-1} W_l + b_l + I_l                     (feedback=None)
        h_l = r_{l-1} W_l + b_l + r_{l+1} W_{l+1}^T + I_l (feedback="symmetric", l < L)

    With ``feedback=None`` the unique fixed point is the feedforward map
    ``r_l = F(r_{l-1} W_l + b_l)``; :meth:`forward` computes it directly and
    :meth:`steady_state` reaches it by relaxing the dynamics. With ``feedback="symmetric"`` the
    network is the layered energy-based network of equilibrium propagation and :meth:`forward`
    relaxes the dynamics.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths ``[n_in, n_1, ..., n_L]``.
    activation : str or Activation
        ``"logistic"`` (default), ``"saturating_linear"``, ``"naka_rushton"`` or ``"tanh"``.
    r_max : float
        Largest rate (not for ``tanh``, whose rates lie in ``[-1, 1]``).
    w_bounds : (float, float) or None
        ``(w_min, w_max)`` for every weight; None leaves weights unbounded.
    dale : float or None
        Fraction of excitatory neurons in every presynaptic layer (input included); each
        neuron's outgoing weights keep its sign forever.
    tau, dt : float
        Membrane time constant and integration step in seconds (``0 < dt < tau``).
    seed : int
        Seed of the model's generator (initial weights, Dale signs, noise, feedback matrices).
    sigma_w, sigma_b : float
        Initial ``W_l ~ N(0, sigma_w^2 / fan_in)``, ``b_l ~ N(0, sigma_b^2)``; with Dale the
        weights are ``|N(0, sigma_w^2 / fan_in)|`` times the presynaptic sign.
    bound_mode : {"clip", "soft"}
        How learning rules keep weights inside the bounds (hard clipping, or potentiation
        scaled by ``(w_max - w)`` and depression by ``(w - w_min)``).
    integrator : {"euler", "exponential"}
    noise : {None, "white", "ou"}
        Input noise of :meth:`simulate`.
    noise_std, noise_tau : float
        Noise standard deviation (current units) and OU correlation time (seconds, default
        ``tau``).
    dtype : {"float64", "float32"}
    activation_params : dict, optional
        Extra activation parameters, e.g. ``{"gain": 4.0, "threshold": 0.5}``.
    feedback : {None, "symmetric"}
        Symmetric top-down feedback ``W_{l+1}^T`` (the energy-based network).
    weights, biases : list of ndarray, optional
        Initial parameters instead of random ones.
    init_bounds : {None, "error", "clip", "rescale"}
        What to do with initial weights outside the bounds. None: clip random draws, reject
        given ``weights``.
    device : {"cpu", "cuda"}
        Where the kernels run (CUDA: the twins in :mod:`neurosim.kernels.cuda`).
    """

    def __init__(self, sizes, activation="logistic", r_max=1.0, w_bounds=(-1.0, 1.0), dale=None,
                 tau=0.01, dt=0.001, seed=0, sigma_w=1.0, sigma_b=0.0, bound_mode="clip",
                 integrator="euler", noise=None, noise_std=0.1, noise_tau=None, dtype="float64",
                 activation_params=None, feedback=None, weights=None, biases=None,
                 init_bounds=None, device="cpu"):
        self.sizes = check_sizes("sizes", sizes)
        self.activation = _resolve_activation(activation, r_max, activation_params)
        self.w_bounds = _check_w_bounds(w_bounds)
        self.dale = _check_dale(dale, self.w_bounds)
        self.tau, self.dt = _check_time(tau, dt)
        self.seed = check_int("seed", seed, minimum=0)
        self.sigma_w = check_positive("sigma_w", sigma_w)
        self.sigma_b = check_real("sigma_b", sigma_b)
        if self.sigma_b < 0:
            raise ValueError(f"sigma_b must be >= 0, got {sigma_b!r}")
        self.bound_mode = check_choice("bound_mode", bound_mode, BOUND_MODES)
        if self.bound_mode == "soft" and self.w_bounds is None:
            raise ValueError("bound_mode='soft' needs finite w_bounds=(w_min, w_max)")
        self.integrator = check_choice("integrator", integrator, INTEGRATORS)
        self.noise, self.noise_std, self.noise_tau = _check_noise(noise, noise_std, noise_tau,
                                                                  self.tau)
        self.dtype = check_dtype("dtype", dtype)
        if feedback not in FEEDBACK:
            raise ValueError(f"feedback must be None or 'symmetric', got {feedback!r}")
        self.feedback = feedback
        if init_bounds is not None:
            check_choice("init_bounds", init_bounds, INIT_BOUNDS)
        self.device = resolve_device(device)
        self._backend = Backend(self.device)
        self.rng = np.random.default_rng(self.seed)
        self._build_layout()
        self._draw_dale_signs()
        self._feedback_cache = {}
        if weights is None:
            self._init_random(init_bounds or "clip")
        else:
            self.set_weights(weights, biases, init_bounds=init_bounds or "error")
            if biases is None:
                self._init_biases()

    # ------------------------------------------------------------------ layout and parameters
    def _build_layout(self):
        sizes = self.sizes
        w_off, b_off = [], []
        pos = 0
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
            w_off.append(pos)
            pos += n_in * n_out
            b_off.append(pos)
            pos += n_out
        self._params = np.zeros(pos, dtype=self.dtype)
        self._w_off = np.asarray(w_off, dtype=np.int64)
        self._b_off = np.asarray(b_off, dtype=np.int64)
        self._sizes = np.asarray(sizes, dtype=np.int64)
        self._ap = self.activation.param_array(self.dtype)

    def _draw_dale_signs(self):
        if self.dale is None:
            self.dale_signs = None
        else:
            self.dale_signs = [_draw_signs(self.rng, n, self.dale) for n in self.sizes[:-1]]
        lo, hi = [], []
        for l, n in enumerate(self.sizes[:-1]):
            signs = None if self.dale_signs is None else self.dale_signs[l]
            a, b = _bounds_for_signs(signs, n, self.w_bounds)
            lo.append(a)
            hi.append(b)
        self._lo_layers, self._hi_layers = lo, hi
        self._lo = np.concatenate(lo).astype(self.dtype)
        self._hi = np.concatenate(hi).astype(self.dtype)

    def _init_random(self, mode):
        for l, (n_in, n_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:], strict=True)):
            W = self.rng.standard_normal((n_in, n_out)) * (self.sigma_w / np.sqrt(n_in))
            if self.dale_signs is not None:
                W = np.abs(W) * self.dale_signs[l][:, None]
            W = _fit_into_bounds(f"random weights of layer {l + 1}", W, self._lo_layers[l],
                                 self._hi_layers[l], mode)
            self.weights[l][...] = W
        self._init_biases()

    def _init_biases(self):
        for b in self.biases:
            b[...] = self.rng.standard_normal(b.shape[0]) * self.sigma_b

    @property
    def n_layers(self) -> int:
        """Number of weight layers L."""
        return len(self.sizes) - 1

    @property
    def n_params(self) -> int:
        return self._params.size

    @property
    def weights(self) -> list:
        """Weight matrices of layers 1..L, shape (fan_in, fan_out): views into the parameters.

        Assigning a list checks shapes, finiteness, bounds and Dale signs. Writing into the
        views directly bypasses those checks.
        """
        out = []
        for l, (n_in, n_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:], strict=True)):
            o = self._w_off[l]
            out.append(self._params[o:o + n_in * n_out].reshape(n_in, n_out))
        return out

    @weights.setter
    def weights(self, values):
        self.set_weights(values)

    @property
    def biases(self) -> list:
        """Biases of layers 1..L, shape (fan_out,): views into the parameters."""
        return [self._params[o:o + n] for o, n in zip(self._b_off, self.sizes[1:], strict=True)]

    @biases.setter
    def biases(self, values):
        self.set_weights(self.weights, values)

    @property
    def weight_bounds(self) -> list:
        """Per-layer ``(lo, hi)`` arrays of shape (fan_in,): the range allowed to each
        presynaptic neuron's weights (synapse bounds intersected with its Dale sign)."""
        return list(zip(self._lo_layers, self._hi_layers, strict=True))

    def set_weights(self, weights, biases=None, init_bounds="error"):
        """Replace the weights (and optionally the biases) after checking them.

        Parameters
        ----------
        weights : list of ndarray
            One (fan_in, fan_out) array per layer.
        biases : list of ndarray, optional
        init_bounds : {"error", "clip", "rescale"}
            What to do with weights outside the bounds or against a Dale sign.
        """
        check_choice("init_bounds", init_bounds, INIT_BOUNDS)
        weights = list(weights)
        if len(weights) != self.n_layers:
            raise ValueError(f"weights needs {self.n_layers} arrays (one per layer), got "
                             f"{len(weights)}")
        new = []
        for l, W in enumerate(weights):
            W = np.asarray(W, dtype=np.float64)
            shape = (self.sizes[l], self.sizes[l + 1])
            if W.shape != shape:
                raise ValueError(f"weights[{l}] (layer {l + 1}) must have shape {shape}, got "
                                 f"{W.shape}")
            if not np.all(np.isfinite(W)):
                raise ValueError(f"weights[{l}] (layer {l + 1}) contains NaN or inf")
            new.append(_fit_into_bounds(f"weights[{l}] (layer {l + 1})", W, self._lo_layers[l],
                                        self._hi_layers[l], init_bounds))
        new_b = None
        if biases is not None:
            biases = list(biases)
            if len(biases) != self.n_layers:
                raise ValueError(f"biases needs {self.n_layers} arrays, got {len(biases)}")
            new_b = []
            for l, b in enumerate(biases):
                b = np.asarray(b, dtype=np.float64)
                if b.shape != (self.sizes[l + 1],):
                    raise ValueError(f"biases[{l}] must have shape ({self.sizes[l + 1]},), got "
                                     f"{b.shape}")
                if not np.all(np.isfinite(b)):
                    raise ValueError(f"biases[{l}] contains NaN or inf")
                new_b.append(b)
        for view, W in zip(self.weights, new, strict=True):
            view[...] = W
        if new_b is not None:
            for view, b in zip(self.biases, new_b, strict=True):
                view[...] = b

    def copy(self) -> RateNetwork:
        """An independent copy (parameters, generator state and feedback matrices)."""
        new = object.__new__(RateNetwork)
        new.__dict__.update(self.__dict__)
        new._params = self._params.copy()
        new.rng = np.random.default_rng()
        new.rng.bit_generator.state = self.rng.bit_generator.state
        new._feedback_cache = {k: v.copy() for k, v in self._feedback_cache.items()}
        return new

    def __repr__(self):
        return (f"RateNetwork(sizes={self.sizes}, activation={self.activation.name!r}, "
                f"w_bounds={self.w_bounds}, dale={self.dale}, tau={self.tau}, dt={self.dt}, "
                f"feedback={self.feedback!r}, dtype={self.dtype.name!r})")

    # ------------------------------------------------------------------ dynamics
    @property
    def integration_coefficient(self) -> float:
        """``a`` of the update ``r <- r + a (F(h) - r)``: ``dt/tau`` (Euler) or
        ``1 - exp(-dt/tau)`` (exponential Euler)."""
        return _integration_coefficient(self.integrator, self.dt, self.tau)

    @property
    def feedback_gain(self) -> float:
        return 0.0 if self.feedback is None else 1.0

    @property
    def rate_range(self) -> tuple[float, float]:
        """``(low, high)`` of the transfer function's output."""
        return self.activation.output_range

    def _inputs(self, X, name="X"):
        return check_data(name, X, n_features=self.sizes[0], dtype=self.dtype)

    def _flat_state(self, initial, batch):
        n_units = sum(self.sizes[1:])
        R = np.zeros(batch * n_units, dtype=self.dtype)
        if initial is None:
            return R
        initial = list(initial)
        if len(initial) != self.n_layers:
            raise ValueError(f"initial needs {self.n_layers} arrays (rates of layers 1..L), got "
                             f"{len(initial)}")
        low, high = self.rate_range
        pos = 0
        for l, r in enumerate(initial):
            r = np.asarray(r, dtype=self.dtype)
            n = self.sizes[l + 1]
            if r.shape != (batch, n):
                raise ValueError(f"initial[{l}] must have shape ({batch}, {n}), got {r.shape}")
            if not np.all(np.isfinite(r)) or r.min() < low or r.max() > high:
                raise ValueError(f"initial[{l}] must hold finite rates within [{low}, {high}]")
            R[pos:pos + batch * n] = r.ravel()
            pos += batch * n
        return R

    def _split(self, flat, batch, leading=()):
        out = []
        pos = 0
        for n in self.sizes[1:]:
            block = flat[..., pos:pos + batch * n]
            out.append(block.reshape(*leading, batch, n))
            pos += batch * n
        return out

    def _default_tol(self, tol):
        if tol is not None:
            return check_positive("tol", tol)
        low, high = self.rate_range
        return (1e-8 if self.dtype == np.float64 else 1e-5) * (high - low)

    def _relax_flat(self, X, R, tol, max_steps, Y=None, beta=0.0, a=None):
        be = self._backend
        batch = X.shape[0]
        Yk = X if Y is None else Y
        a = self.integration_coefficient if a is None else a
        dR = be.put(R)
        t = self.dtype.type
        steps, residual = be.rate.relax(
            self.activation.code, self._ap, be.put(self._params), self._w_off, self._b_off,
            self._sizes, be.put(X), dR, be.empty(R.shape[0], self.dtype),
            be.empty(batch * max(self.sizes[1:]), self.dtype), t(a), t(self.feedback_gain),
            be.put(Yk), t(beta), t(tol), max_steps)
        be.back(dR, R)
        return int(steps), float(residual)

    def steady_state(self, X, tol=None, max_steps=20000, initial=None, warn=True) -> SteadyState:
        """Relax the noise-free dynamics from ``initial`` (default: all rates 0) to the fixed point.

        Parameters
        ----------
        X : array_like, shape (batch, n_in)
            Input rates, clamped.
        tol : float, optional
            Stop when ``max |F(h) - r| < tol`` (rate units). Default ``1e-8`` (float64) or
            ``1e-5`` (float32) times the width of the rate range.
        max_steps : int
            Most integration steps.
        initial : list of ndarray, optional
            Starting rates of layers 1..L, each (batch, n_l).
        warn : bool
            Emit a :class:`ConvergenceWarning` when ``tol`` was not reached.

        Returns
        -------
        SteadyState
        """
        X = self._inputs(X)
        tol = self._default_tol(tol)
        max_steps = check_int("max_steps", max_steps, minimum=0)
        R = self._flat_state(initial, X.shape[0])
        steps, residual = self._relax_flat(X, R, tol, max_steps)
        converged = residual < tol
        if not converged and warn:
            warnings.warn(
                f"steady_state did not converge: residual {residual:.3g} >= tol {tol:.3g} after "
                f"{steps} steps; raise max_steps or tol", ConvergenceWarning, stacklevel=2)
        return SteadyState(self._split(R, X.shape[0]), steps, residual, converged, tol)

    def _forward_flat(self, X):
        """Currents and rates (flat) at the fixed point of every layer."""
        be = self._backend
        batch = X.shape[0]
        n = batch * sum(self.sizes[1:])
        H = np.empty(n, dtype=self.dtype)
        R = np.zeros(n, dtype=self.dtype)
        code, ap = self.activation.code, self._ap
        if self.feedback is None:
            dH, dR = be.empty(n, self.dtype), be.empty(n, self.dtype)
            be.rate.feedforward(code, ap, be.put(self._params), self._w_off, self._b_off,
                                self._sizes, be.put(X), dH, dR)
            return be.back(dH, H), be.back(dR, R)
        tol = self._default_tol(None)
        _, residual = self._relax_flat(X, R, tol, 200000)
        if residual >= tol:
            warnings.warn(f"the fixed point did not converge (residual {residual:.3g})",
                          ConvergenceWarning, stacklevel=3)
        dH = be.empty(n, self.dtype)
        be.rules.currents_and_slopes(code, ap, be.put(self._params), self._w_off, self._b_off,
                                     self._sizes, be.put(X), be.put(R), dH,
                                     be.empty(batch * max(self.sizes[1:]), self.dtype),
                                     self.dtype.type(1.0), be.empty(n, self.dtype))
        return be.back(dH, H), R

    def forward(self, X) -> np.ndarray:
        """Output-layer rates at the steady state, shape (batch, n_out)."""
        X = self._inputs(X)
        _, R = self._forward_flat(X)
        return self._split(R, X.shape[0])[-1].copy()

    __call__ = forward

    def layer_outputs(self, X):
        """Currents ``h_l`` and rates ``r_l`` of layers 1..L at the steady state.

        Returns
        -------
        pre, post : list of ndarray
            Each a list of L arrays of shape (batch, n_l).
        """
        X = self._inputs(X)
        H, R = self._forward_flat(X)
        return self._split(H, X.shape[0]), self._split(R, X.shape[0])

    def simulate(self, X, steps=500, record_every=1, initial=None, seed=None) -> Trace:
        """Integrate the dynamics (with the model's input noise) and record every layer.

        Parameters
        ----------
        X : array_like, shape (batch, n_in)
            Input rates, clamped.
        steps : int
            Integration steps (duration ``steps * dt`` seconds).
        record_every : int
            Keep every ``record_every``-th state; the initial state is always the first record.
        initial : list of ndarray, optional
            Starting rates (default all 0).
        seed : int, optional
            Seed for this run's noise; default: the model's own generator (which advances).

        Returns
        -------
        Trace
            ``trace.rates[l]`` has shape (steps // record_every + 1, batch, n_l).
        """
        X = self._inputs(X)
        steps = check_int("steps", steps, minimum=0)
        record_every = check_int("record_every", record_every, minimum=1)
        batch = X.shape[0]
        R = self._flat_state(initial, batch)
        rng = self.rng if seed is None else np.random.default_rng(check_int("seed", seed, 0))
        kind, scale, decay = _noise_parameters(self.noise, self.noise_std, self.noise_tau,
                                               self.tau, self.dt)
        Z = np.zeros_like(R)
        if kind == _k.NOISE_OU:
            Z[:] = rng.standard_normal(Z.shape[0]) * self.noise_std
        n_rec = steps // record_every + 1
        trace = np.empty((n_rec, R.shape[0]), dtype=self.dtype)
        be = self._backend
        t = self.dtype.type
        noise_source = be.generator(rng) if kind != _k.NOISE_NONE or be.cuda is None else None
        be.rate.simulate(self.activation.code, self._ap, be.put(self._params), self._w_off,
                         self._b_off, self._sizes, be.put(X), be.put(R),
                         be.empty(R.shape[0], self.dtype),
                         be.empty(batch * max(self.sizes[1:]), self.dtype), be.put(Z),
                         t(self.integration_coefficient), t(self.feedback_gain), steps,
                         record_every, kind, t(scale), t(decay), noise_source, trace)
        times = np.arange(n_rec) * (record_every * self.dt)
        return Trace(times, self._split(trace, batch, leading=(n_rec,)))

    def feedback_matrices(self, kind="feedback_alignment", scale=None) -> list:
        """Fixed random feedback matrices of feedback alignment or direct feedback alignment.

        Drawn once per ``(kind, scale)`` from a generator seeded by the model's seed (so they
        do not depend on call order) and kept. ``feedback_alignment``: ``B_l`` of shape
        (n_{l-1}, n_l), entries ``N(0, scale^2 / n_{l-1})`` like the weights;
        ``direct_feedback_alignment``: ``B_l`` of shape (n_L, n_l) for hidden layers, entries
        ``N(0, scale^2 / n_L)``. ``scale`` defaults to ``sigma_w``.

        Returns
        -------
        list of ndarray
            One matrix per layer 1..L (for DFA the output layer's entry is an identity, since
            the output error reaches it directly).
        """
        kinds = ("feedback_alignment", "direct_feedback_alignment")
        check_choice("kind", kind, kinds)
        scale = self.sigma_w if scale is None else check_positive("feedback scale", scale)
        key = (kind, scale)
        if key not in self._feedback_cache:
            rng = np.random.default_rng([self.seed, 1 + kinds.index(kind)])
            mats = []
            n_L = self.sizes[-1]
            for l in range(self.n_layers):
                n_in, n_out = self.sizes[l], self.sizes[l + 1]
                if kind == "feedback_alignment":
                    mats.append(rng.standard_normal((n_in, n_out)) * (scale / np.sqrt(n_in)))
                elif l == self.n_layers - 1:
                    mats.append(np.eye(n_L))
                else:
                    mats.append(rng.standard_normal((n_L, n_out)) * (scale / np.sqrt(n_L)))
            flat = np.concatenate([m.ravel() for m in mats]).astype(self.dtype)
            self._feedback_cache[key] = flat
        flat = self._feedback_cache[key]
        out, pos = [], 0
        for l in range(self.n_layers):
            rows = self.sizes[l] if kind == "feedback_alignment" else self.sizes[-1]
            cols = self.sizes[l + 1]
            out.append(flat[pos:pos + rows * cols].reshape(rows, cols))
            pos += rows * cols
        return out


class RecurrentRateNetwork:
    """Random fully connected rate network (Sompolinsky, Crisanti & Sommers 1988).

    ``form="current"``: ``tau dx/dt = -x + J F(x) + I`` with rates ``r = F(x)``;
    ``form="rate"``: ``tau dr/dt = -r + F(J r + I)``. ``J[i, j]`` is the weight from neuron ``j``
    onto neuron ``i``, drawn ``N(0, gain^2 / n)``; with Dale's principle column ``j`` keeps the
    sign of neuron ``j``. With ``tanh`` in the current form the quiet fixed point ``x = 0`` loses
    stability to chaos at ``gain = 1`` (for large ``n``).

    Parameters
    ----------
    n : int
        Number of neurons.
    gain : float
        ``g`` of ``J ~ N(0, g^2 / n)``.
    activation : str or Activation
        Bounded transfer function (``"tanh"`` default).
    seed : int
    tau, dt : float
        Seconds, ``0 < dt < tau``.
    w_bounds : (float, float) or None
        Bounds on every coupling.
    dale : float or None
        Fraction of excitatory neurons.
    noise, noise_std, noise_tau
        Input noise, as for :class:`RateNetwork`.
    form : {"current", "rate"}
    r_max : float
    activation_params : dict, optional
    integrator : {"euler", "exponential"}
    dtype : {"float64", "float32"}
    J : ndarray, optional
        A coupling matrix instead of a random one.
    init_bounds : {None, "error", "clip", "rescale"}
        As for :class:`RateNetwork`.
    self_connections : bool
        Keep the diagonal of ``J`` (default True, as in the original model).
    device : {"cpu", "cuda"}
    """

    def __init__(self, n=1000, gain=1.5, activation="tanh", seed=0, tau=0.01, dt=0.001,
                 w_bounds=None, dale=None, noise=None, noise_std=0.1, noise_tau=None,
                 form="current", r_max=1.0, activation_params=None, integrator="euler",
                 dtype="float64", J=None, init_bounds=None, self_connections=True, device="cpu"):
        self.n = check_int("n", n, minimum=1)
        self.gain = check_real("gain", gain)
        if self.gain < 0:
            raise ValueError(f"gain must be >= 0, got {gain!r}")
        self.activation = _resolve_activation(activation, r_max, activation_params)
        self.seed = check_int("seed", seed, minimum=0)
        self.tau, self.dt = _check_time(tau, dt)
        self.w_bounds = _check_w_bounds(w_bounds)
        self.dale = _check_dale(dale, self.w_bounds)
        self.noise, self.noise_std, self.noise_tau = _check_noise(noise, noise_std, noise_tau,
                                                                  self.tau)
        self.form = check_choice("form", form, FORMS)
        self.integrator = check_choice("integrator", integrator, INTEGRATORS)
        self.dtype = check_dtype("dtype", dtype)
        if init_bounds is not None:
            check_choice("init_bounds", init_bounds, INIT_BOUNDS)
        self.self_connections = bool(self_connections)
        self.device = resolve_device(device)
        self._backend = Backend(self.device)
        self.rng = np.random.default_rng(self.seed)
        self.dale_signs = (None if self.dale is None
                           else _draw_signs(self.rng, self.n, self.dale))
        self._lo, self._hi = _bounds_for_signs(self.dale_signs, self.n, self.w_bounds)
        self._ap = self.activation.param_array(self.dtype)
        if J is None:
            Jr = self.rng.standard_normal((self.n, self.n)) * (self.gain / np.sqrt(self.n))
            if self.dale_signs is not None:
                Jr = np.abs(Jr) * self.dale_signs[None, :]
            if not self.self_connections:
                np.fill_diagonal(Jr, 0.0)
            self._J = self._fit(Jr, init_bounds or "clip")
        else:
            self.set_J(J, init_bounds=init_bounds or "error")

    def _fit(self, J, mode):
        # Columns are presynaptic neurons; the bounds helper works on rows.
        return np.ascontiguousarray(
            _fit_into_bounds("J", J.T, self._lo, self._hi, mode).T, dtype=self.dtype)

    @property
    def J(self) -> np.ndarray:
        """Coupling matrix (n, n); ``J[i, j]`` from neuron ``j`` onto neuron ``i``."""
        return self._J

    @J.setter
    def J(self, value):
        self.set_J(value)

    def set_J(self, J, init_bounds="error"):
        """Replace the coupling matrix after checking shape, finiteness, bounds and Dale signs."""
        check_choice("init_bounds", init_bounds, INIT_BOUNDS)
        J = np.asarray(J, dtype=np.float64)
        if J.shape != (self.n, self.n):
            raise ValueError(f"J must have shape ({self.n}, {self.n}), got {J.shape}")
        if not np.all(np.isfinite(J)):
            raise ValueError("J contains NaN or inf")
        self._J = self._fit(J, init_bounds)

    @property
    def integration_coefficient(self) -> float:
        return _integration_coefficient(self.integrator, self.dt, self.tau)

    @property
    def rate_range(self) -> tuple[float, float]:
        return self.activation.output_range

    def rates(self, x) -> np.ndarray:
        """Rates of states ``x`` (``F(x)`` in the current form, ``x`` itself in the rate form)."""
        x = np.asarray(x, dtype=self.dtype)
        return self.activation.value(x) if self.form == "current" else x.copy()

    def __repr__(self):
        return (f"RecurrentRateNetwork(n={self.n}, gain={self.gain}, "
                f"activation={self.activation.name!r}, form={self.form!r}, tau={self.tau}, "
                f"dt={self.dt}, dtype={self.dtype.name!r})")

    def _initial(self, x0, trials, rng):
        if x0 is None:
            z = rng.standard_normal((trials, self.n))
            if self.form == "rate":
                z = self.activation.value(z)
            return np.ascontiguousarray(z, dtype=self.dtype)
        x0 = check_data("x0", x0, n_features=self.n, dtype=self.dtype).copy()
        if x0.shape[0] == 1 and trials > 1:
            x0 = np.repeat(x0, trials, axis=0)
        if x0.shape[0] != trials:
            raise ValueError(f"x0 has {x0.shape[0]} rows but trials={trials}")
        if self.form == "rate":
            low, high = self.rate_range
            if x0.min() < low or x0.max() > high:
                raise ValueError(f"x0 holds rates in the 'rate' form and must lie in "
                                 f"[{low}, {high}]")
        return x0

    def simulate(self, steps=1000, x0=None, I=None, trials=1, record_every=1,
                 seed=None) -> Trace:
        """Integrate the network and record its states.

        Parameters
        ----------
        steps : int
            Integration steps.
        x0 : array_like, shape (n,) or (trials, n), optional
            Initial state; default ``N(0, 1)`` currents (their rates in the ``"rate"`` form),
            drawn from the run's generator.
        I : float or array_like of shape (n,) or (trials, n), optional
            Constant external input (default 0).
        trials : int
            Independent trials run at once (matrix-matrix work).
        record_every : int
        seed : int, optional
            Seed for this run's random draws; default: the model's generator (which advances).

        Returns
        -------
        Trace
            ``states`` (n_records, trials, n) and ``rates[0]`` of the same shape.
        """
        steps = check_int("steps", steps, minimum=0)
        trials = check_int("trials", trials, minimum=1)
        record_every = check_int("record_every", record_every, minimum=1)
        rng = self.rng if seed is None else np.random.default_rng(check_int("seed", seed, 0))
        V = self._initial(x0, trials, rng)
        trials = V.shape[0]
        if I is None:
            Iarr = np.zeros((trials, self.n), dtype=self.dtype)
        else:
            Iarr = np.asarray(I, dtype=np.float64)
            if Iarr.ndim == 0:
                Iarr = np.full((trials, self.n), float(Iarr))
            Iarr = check_data("I", Iarr, n_features=self.n)
            Iarr = np.ascontiguousarray(np.broadcast_to(Iarr, (trials, self.n)), dtype=self.dtype)
        kind, scale, decay = _noise_parameters(self.noise, self.noise_std, self.noise_tau,
                                               self.tau, self.dt)
        Z = np.zeros_like(V)
        if kind == _k.NOISE_OU:
            Z[:] = rng.standard_normal(Z.shape) * self.noise_std
        n_rec = steps // record_every + 1
        trace = np.empty((n_rec, trials, self.n), dtype=self.dtype)
        t = self.dtype.type
        form = _k.FORM_CURRENT if self.form == "current" else _k.FORM_RATE
        be = self._backend
        noise_source = be.generator(rng) if kind != _k.NOISE_NONE or be.cuda is None else None
        dV = be.put(V)
        be.rate.recurrent_simulate(self.activation.code, self._ap, be.put(self._J), be.put(Iarr),
                                   dV, t(self.integration_coefficient), form, steps,
                                   record_every, kind, t(scale), t(decay), be.put(Z),
                                   noise_source, trace)
        times = np.arange(n_rec) * (record_every * self.dt)
        rates = trace if self.form == "rate" else self.activation.value(trace)
        return Trace(times, [rates], states=trace)
