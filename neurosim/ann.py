"""Multilayer perceptrons trained by backpropagation, computed by compiled kernels.

Layer ``l = 1..L`` computes ``h_l = a_{l-1} W_l + b_l`` and ``a_l = phi(h_l)`` (``a_0 = X``,
the last layer uses ``output_activation``). Options, on hidden layers only:

- ``residual=True``: ``a_l = a_{l-1} + phi(h_l)`` for every hidden layer whose input has the
  same width (all hidden widths must be equal);
- ``batchnorm=True``: ``h_l = gamma_l * xhat_l + beta_l``, ``xhat_l`` the batch-normalised
  ``a_{l-1} W_l + b_l`` (training mode: batch mean and biased variance; inference mode: running
  averages with momentum 0.1 and the unbiased batch variance, as PyTorch; eps 1e-5). ``b_l`` is
  kept for a uniform layout; it cancels in training mode, so its gradient there is zero;
- ``dropout=p``: inverted dropout on ``phi(h_l)`` in training mode (kept units scaled by
  ``1 / (1 - p)``);
- activation ``"prelu"``: one learnable slope per layer.

Every trainable parameter lives in one flat buffer ``net.params``: ``W_1, b_1, ..., W_L, b_L``
(each ``W_l`` row-major), then ``gamma_l, beta_l`` of the batch-norm layers, then the PReLU
slopes; ``net.layout`` (see :mod:`neurosim.kernels.dense`) gives every offset.
"""

from __future__ import annotations

import copy as _copy
import numbers
from dataclasses import dataclass

import numpy as np

from . import activations as _activations
from . import init as _init
from . import losses as _losses
from ._device import DEVICES
from ._validation import (
    check_choice,
    check_data,
    check_dtype,
    check_in_range,
    check_int,
    check_nonnegative,
    check_same_batch,
    check_sizes,
    unknown_name_error,
)
from .kernels import dense as _k

BN_EPS = 1e-5
BN_MOMENTUM = 0.1
_FORWARD_CHUNK_VALUES = 1 << 22  # workspace values per inference chunk (per buffer)


@dataclass
class Gradients:
    """Gradients of the batch-mean loss, per layer ``l = 1..L`` (list index ``l - 1``).

    Attributes
    ----------
    weights : list of ndarray, shapes (n_{l-1}, n_l)
        dL/dW_l.
    biases : list of ndarray, shapes (n_l,)
        dL/db_l.
    deltas : list of ndarray, shapes (batch, n_l)
        ``delta_l = dL/dh_l``, the error signal at the input of phi (row ``i`` carries the
        factor ``1 / batch`` of the batch-mean loss).
    slopes : list of float or None
        dL/d(PReLU slope) of the layers with a learnable slope.
    gammas, betas : list of ndarray or None
        dL/dgamma_l, dL/dbeta_l of the batch-norm layers.
    flat : ndarray, shape (n_params,)
        Every gradient in the layout of ``net.params`` (the lists above are views into it).
    """

    weights: list
    biases: list
    deltas: list
    slopes: list
    gammas: list
    betas: list
    flat: np.ndarray


class _ParamList(list):
    """Per-layer views into a flat buffer; assigning an item writes into the buffer."""

    def __init__(self, views, name):
        super().__init__(views)
        self._name = name

    def __setitem__(self, index, value):
        if not isinstance(index, numbers.Integral):
            raise TypeError(f"{self._name} items are assigned one layer at a time, "
                            f"got index {index!r}")
        view = list.__getitem__(self, index)
        if view is None:
            raise ValueError(f"{self._name}[{index}] does not exist (layer {index + 1} has no "
                             "such parameter)")
        _write(view, value, f"{self._name}[{index}]")


def _write(view: np.ndarray, value, name: str) -> None:
    arr = np.asarray(value)
    if arr.dtype == object or arr.dtype == bool or not np.issubdtype(arr.dtype, np.number) \
            or np.iscomplexobj(arr):
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.shape != view.shape:
        raise ValueError(f"{name} must have shape {view.shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf values; parameters must be finite")
    view[...] = arr


def _resolve_activation(param, spec, params):
    if params is not None and not isinstance(params, dict):
        raise TypeError(f"{param}_params must be a dict, got {type(params).__name__}")
    if isinstance(spec, _activations.Activation):
        return _activations.get(spec, **(params or {}))
    if not isinstance(spec, str) or spec not in _activations.names():
        raise unknown_name_error(param, spec, _activations.names())
    return _activations.get(spec, **(params or {}))


def _check_bool(param, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{param} must be True or False, got {value!r}")
    return bool(value)


class MLP:
    """A multilayer perceptron with compiled forward and backward passes.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths ``[n_0, n_1, ..., n_L]`` (input first), at least two.
    activation : str or Activation
        Hidden-layer activation (see :mod:`neurosim.activations`).
    init : str
        Weight initializer: gaussian, glorot, he, orthogonal (:mod:`neurosim.init`).
    sigma_w : float
        Weight scale (standard deviation times ``sqrt(fan_in)`` for gaussian; a gain for the
        others).
    sigma_b : float
        Bias standard deviation.
    seed : int
        Seed of the initial parameters and of dropout masks drawn outside :func:`neurosim.train`.
    dtype : {"float64", "float32"}
        Float type of parameters and every computation.
    output_activation : str or Activation
        Activation of layer L (``"linear"``: outputs are logits for cross entropy).
    activation_params : dict, optional
        Parameters of the hidden activation, e.g. ``{"slope": 0.2}`` for leaky_relu or the
        initial prelu slope.
    residual, batchnorm : bool
        Identity skips / batch normalisation on hidden layers (module docstring).
    dropout : float
        Dropout probability of hidden units in training mode, in [0, 1).
    device : {"cpu", "cuda"}
        Compute device. With ``"cuda"`` the forward and backward passes and :func:`neurosim.train`
        run on the GPU (numba's CUDA target); :attr:`params` stays a host array, copied to the
        device for each call and copied back when training ends. Raises
        :class:`~neurosim._device.CudaUnavailableError` when no CUDA device can be used.

    Attributes
    ----------
    sizes : list of int
    n_layers : int
        L, the number of weight layers.
    activation, output_activation : Activation
    dtype : numpy.dtype
    params : ndarray, shape (n_params,)
        The flat parameter buffer.
    layout : ndarray of int64, shape (L, N_LAYOUT_COLS)
        Offsets and options per layer (:mod:`neurosim.kernels.dense`).
    """

    def __init__(self, sizes, activation="tanh", init="gaussian", sigma_w=1.0, sigma_b=0.05,
                 seed=0, dtype="float64", output_activation="linear", activation_params=None,
                 residual=False, batchnorm=False, dropout=0.0, device="cpu"):
        sizes = check_sizes("sizes", sizes)
        act = _resolve_activation("activation", activation, activation_params)
        out_act = _resolve_activation("output_activation", output_activation, None)
        init = check_choice("init", init, _init.names())
        sigma_w = check_nonnegative("sigma_w", sigma_w)
        sigma_b = check_nonnegative("sigma_b", sigma_b)
        seed = check_int("seed", seed, minimum=0)
        dtype = check_dtype("dtype", dtype)
        residual = _check_bool("residual", residual)
        batchnorm = _check_bool("batchnorm", batchnorm)
        dropout = check_in_range("dropout", dropout, 0.0, 1.0, high_closed=False)
        device = check_choice("device", device, DEVICES)
        n_layers = len(sizes) - 1
        if residual:
            hidden = sizes[1:-1]
            if not hidden:
                raise ValueError(f"residual=True needs at least one hidden layer; sizes={sizes}")
            if len(set(hidden)) > 1:
                raise ValueError(f"residual=True needs equal hidden widths, got sizes={sizes}")
            if len(hidden) == 1 and sizes[0] != hidden[0]:
                raise ValueError(
                    f"residual=True adds no skip to sizes={sizes}: the only hidden layer's "
                    f"width {hidden[0]} differs from the input width {sizes[0]}"
                )
        if device == "cuda":
            from ._device import cuda_api

            cuda_api()  # no device and no simulator: CudaUnavailableError with the install hint

        self.sizes = sizes
        self.n_layers = n_layers
        self.activation = act
        self.output_activation = out_act
        self.init = init
        self.sigma_w = sigma_w
        self.sigma_b = sigma_b
        self.seed = seed
        self.dtype = dtype
        self.residual = residual
        self.batchnorm = batchnorm
        self.dropout = dropout
        self.device = device
        self._build_layout()
        init_seq, dropout_seq = np.random.SeedSequence(seed).spawn(2)
        self._rng = np.random.default_rng(dropout_seq)
        for l, (W, b) in enumerate(_init.initialize(init, sizes, sigma_w, sigma_b,
                                                    np.random.default_rng(init_seq))):
            self._w_view(self.params, l)[...] = W
            self._b_view(self.params, l)[...] = b

    # ----------------------------------------------------------------------------- layout
    def _build_layout(self):
        sizes, L = self.sizes, self.n_layers
        acts = [self.activation] * (L - 1) + [self.output_activation]
        layout = np.full((L, _k.N_LAYOUT_COLS), -1, dtype=np.int64)
        act_params = np.zeros((L, 3), dtype=self.dtype)
        offset = 0
        for l in range(L):
            layout[l, _k.N_IN] = sizes[l]
            layout[l, _k.N_OUT] = sizes[l + 1]
            layout[l, _k.W_OFF] = offset
            offset += sizes[l] * sizes[l + 1]
            layout[l, _k.B_OFF] = offset
            offset += sizes[l + 1]
            layout[l, _k.ACT] = acts[l].code
            act_params[l] = acts[l].param_array(self.dtype)
            hidden = l < L - 1
            layout[l, _k.SKIP] = int(self.residual and hidden and sizes[l] == sizes[l + 1])
            layout[l, _k.DROPOUT] = int(self.dropout > 0 and hidden)
        units = np.concatenate([[0], np.cumsum(sizes[1:])])
        layout[:, _k.UNIT_OFF] = units[:-1]
        run_off = stat_off = 0
        for l in range(L - 1 if self.batchnorm else 0):
            n = sizes[l + 1]
            layout[l, _k.BN_OFF] = offset
            offset += 2 * n
            layout[l, _k.BN_RUN_OFF] = run_off
            run_off += 2 * n
            layout[l, _k.BN_STAT_OFF] = stat_off
            stat_off += 3 * n
        for l in range(L):
            if acts[l].name == "prelu":
                layout[l, _k.SLOPE_OFF] = offset
                offset += 1
        self.layout = layout
        self.act_params = act_params
        self._units = int(units[-1])
        self._max_width = max(sizes[1:])
        self._n_stat = stat_off
        self._separate = bool(layout[:, _k.SKIP].any() or layout[:, _k.DROPOUT].any())
        self.params = np.zeros(offset, dtype=self.dtype)
        self.bn_state = np.zeros(run_off, dtype=self.dtype)
        for l in range(L):
            if layout[l, _k.BN_OFF] >= 0:
                n = sizes[l + 1]
                self.params[layout[l, _k.BN_OFF]:layout[l, _k.BN_OFF] + n] = 1.0
                self.bn_state[layout[l, _k.BN_RUN_OFF] + n:layout[l, _k.BN_RUN_OFF] + 2 * n] = 1.0
            if layout[l, _k.SLOPE_OFF] >= 0:
                self.params[layout[l, _k.SLOPE_OFF]] = act_params[l, 0]

    def _w_view(self, buf, l):
        lay = self.layout[l]
        start = lay[_k.W_OFF]
        return buf[start:start + lay[_k.N_IN] * lay[_k.N_OUT]].reshape(lay[_k.N_IN],
                                                                        lay[_k.N_OUT])

    def _b_view(self, buf, l):
        start = self.layout[l, _k.B_OFF]
        return buf[start:start + self.sizes[l + 1]]

    def _bn_views(self, buf, l, shift):
        start = self.layout[l, _k.BN_OFF]
        if start < 0:
            return None
        n = self.sizes[l + 1]
        return buf[start + shift * n:start + (shift + 1) * n]

    def _slope_view(self, buf, l):
        start = self.layout[l, _k.SLOPE_OFF]
        return None if start < 0 else buf[start:start + 1].reshape(())

    # ------------------------------------------------------------------------- parameters
    @property
    def n_params(self) -> int:
        """Number of trainable parameters."""
        return self.params.size

    @property
    def weights(self) -> list:
        """``W_l`` (shape (n_{l-1}, n_l)) for l = 1..L: views into :attr:`params`."""
        return _ParamList([self._w_view(self.params, l) for l in range(self.n_layers)],
                          "weights")

    @weights.setter
    def weights(self, values):
        self._assign_all("weights", self.weights, values)

    @property
    def biases(self) -> list:
        """``b_l`` (shape (n_l,)) for l = 1..L: views into :attr:`params`."""
        return _ParamList([self._b_view(self.params, l) for l in range(self.n_layers)],
                          "biases")

    @biases.setter
    def biases(self, values):
        self._assign_all("biases", self.biases, values)

    @property
    def gammas(self) -> list:
        """Batch-norm scales per layer (None where a layer has no batch norm)."""
        return _ParamList([self._bn_views(self.params, l, 0) for l in range(self.n_layers)],
                          "gammas")

    @gammas.setter
    def gammas(self, values):
        self._assign_all("gammas", self.gammas, values)

    @property
    def betas(self) -> list:
        """Batch-norm shifts per layer (None where a layer has no batch norm)."""
        return _ParamList([self._bn_views(self.params, l, 1) for l in range(self.n_layers)],
                          "betas")

    @betas.setter
    def betas(self, values):
        self._assign_all("betas", self.betas, values)

    @property
    def slopes(self) -> list:
        """Learnable PReLU slopes per layer as 0-d views (None where the layer has none)."""
        return _ParamList([self._slope_view(self.params, l) for l in range(self.n_layers)],
                          "slopes")

    @slopes.setter
    def slopes(self, values):
        self._assign_all("slopes", self.slopes, values)

    @property
    def running_means(self) -> list:
        """Batch-norm running means per layer (None where a layer has no batch norm)."""
        return [self._run_view(l, 0) for l in range(self.n_layers)]

    @property
    def running_vars(self) -> list:
        """Batch-norm running variances per layer (None where a layer has no batch norm)."""
        return [self._run_view(l, 1) for l in range(self.n_layers)]

    def _run_view(self, l, shift):
        start = self.layout[l, _k.BN_RUN_OFF]
        if start < 0:
            return None
        n = self.sizes[l + 1]
        return self.bn_state[start + shift * n:start + (shift + 1) * n]

    def _assign_all(self, name, views, values):
        values = list(values)
        if len(values) != len(views):
            raise ValueError(f"{name} needs {len(views)} entries (one per layer), "
                             f"got {len(values)}")
        for i, (view, value) in enumerate(zip(views, values, strict=True)):
            if view is None:
                if value is not None:
                    raise ValueError(f"{name}[{i}] must be None: layer {i + 1} has no such "
                                     "parameter")
                continue
            _write(view, value, f"{name}[{i}]")

    def copy(self) -> MLP:
        """An independent copy (parameters, running statistics and dropout generator)."""
        return _copy.deepcopy(self)

    # ------------------------------------------------------------------------- workspaces
    def _workspace(self, nb: int, masks: bool, empty=np.empty):
        """Forward workspaces ``H, U, A, XH, ST, MK`` for ``nb`` samples, allocated by
        ``empty(size, dtype)`` (``numba.cuda.device_array`` for device twins)."""
        dt = self.dtype
        size = nb * self._units
        H = empty(size, dt)
        U = empty(size, dt)
        A = empty(size, dt) if self._separate else U
        XH = empty(size if self.batchnorm else 0, dt)
        ST = empty(self._n_stat, dt)
        MK = empty(size if masks else 0, dt)
        return H, U, A, XH, ST, MK

    def _backward_workspace(self, nb: int, empty=np.empty):
        """Backward workspaces ``D, G0, G1, E`` for ``nb`` samples (``empty`` as above)."""
        dt = self.dtype
        scratch = nb * self._max_width
        return (empty(nb * self._units, dt), empty(scratch, dt), empty(scratch, dt),
                empty(scratch if self.batchnorm else 0, dt))

    def _check_X(self, X):
        return check_data("X", X, n_features=self.sizes[0], dtype=self.dtype)

    def _fill_masks(self, MK, nb, dropout_mask):
        """Dropout masks into the workspace: the given 0/1 masks or fresh draws."""
        if dropout_mask is None:
            _k.draw_dropout_masks(self._rng, self.dropout, self.layout, nb, MK)
            return
        scale = 1.0 / (1.0 - self.dropout)
        for l in range(self.n_layers - 1):
            start = nb * self.layout[l, _k.UNIT_OFF]
            n = self.sizes[l + 1]
            MK[start:start + nb * n] = (dropout_mask[l] * scale).reshape(-1)

    def _check_mask(self, dropout_mask, training, nb):
        if dropout_mask is None:
            return None
        if self.dropout == 0.0:
            raise ValueError("dropout_mask was given but the network has dropout=0")
        if not training:
            raise ValueError("dropout_mask is used in training mode only; pass training=True")
        masks = list(dropout_mask)
        if len(masks) != self.n_layers - 1:
            raise ValueError(f"dropout_mask needs {self.n_layers - 1} arrays (one per hidden "
                             f"layer), got {len(masks)}")
        out = []
        for l, m in enumerate(masks):
            m = np.asarray(m)
            shape = (nb, self.sizes[l + 1])
            if m.shape != shape:
                raise ValueError(f"dropout_mask[{l}] must have shape {shape}, got {m.shape}")
            if not np.all((m == 0) | (m == 1)):
                raise ValueError(f"dropout_mask[{l}] must hold only 0 and 1 (1 = keep)")
            out.append(m.astype(self.dtype))
        return out

    def _run_forward(self, X, training, masks):
        if self.device == "cuda":
            from ._cuda_models import mlp_run_forward

            return mlp_run_forward(self, X, training, masks, self.dtype.type(BN_EPS))
        nb = X.shape[0]
        use_masks = training and self.dropout > 0
        ws = self._workspace(nb, use_masks)
        if use_masks:
            self._fill_masks(ws[5], nb, masks)
        out = _k.mlp_forward(self.layout, self.act_params, self.params, X, training,
                             self.dtype.type(BN_EPS), self.bn_state, *ws)
        return out, ws

    # ---------------------------------------------------------------------------- compute
    def forward(self, X, training=False, dropout_mask=None) -> np.ndarray:
        """Network output for inputs ``X``.

        Parameters
        ----------
        X : array_like, shape (batch, n_0)
            Inputs (a 1-D array is one sample); cast to the network's float type.
        training : bool
            Training mode: batch statistics for batch norm and dropout masks; inference mode
            (default): running statistics, no dropout.
        dropout_mask : sequence of array_like, optional
            Training mode only: one 0/1 array (1 = keep) of shape (batch, n_l) per hidden layer,
            used instead of random masks.

        Returns
        -------
        ndarray, shape (batch, n_L)
        """
        X = self._check_X(X)
        training = _check_bool("training", training)
        masks = self._check_mask(dropout_mask, training, X.shape[0])
        if training:
            return self._run_forward(X, True, masks)[0].copy()
        chunk = max(1, _FORWARD_CHUNK_VALUES // self._units)
        out = np.empty((X.shape[0], self.sizes[-1]), dtype=self.dtype)
        for start in range(0, X.shape[0], chunk):
            part = X[start:start + chunk]
            out[start:start + part.shape[0]] = self._run_forward(part, False, None)[0]
        return out

    __call__ = forward

    def layer_outputs(self, X, training=False, dropout_mask=None) -> tuple[list, list]:
        """Pre-activations and outputs of every layer.

        Returns
        -------
        pre : list of ndarray, shapes (batch, n_l)
            ``h_l`` (the input of phi; after batch norm where there is one), l = 1..L.
        post : list of ndarray, shapes (batch, n_l)
            ``a_l`` (after dropout and the skip, where there are).
        """
        X = self._check_X(X)
        training = _check_bool("training", training)
        masks = self._check_mask(dropout_mask, training, X.shape[0])
        nb = X.shape[0]
        _, (H, U, A, *_rest) = self._run_forward(X, training, masks)
        pre, post = [], []
        for l in range(self.n_layers):
            start = nb * self.layout[l, _k.UNIT_OFF]
            n = self.sizes[l + 1]
            pre.append(H[start:start + nb * n].reshape(nb, n).copy())
            post.append(A[start:start + nb * n].reshape(nb, n).copy())
        return pre, post

    def _forward_backward(self, X, Y, loss_code, training, masks):
        """(batch-mean loss, flat ``D`` workspace of the deltas, flat gradient) of checked
        inputs."""
        eps = self.dtype.type(BN_EPS)
        if self.device == "cuda":
            from ._cuda_models import mlp_forward_backward

            return mlp_forward_backward(self, X, Y, loss_code, training, masks, eps)
        nb = X.shape[0]
        use_masks = training and self.dropout > 0
        ws = self._workspace(nb, use_masks)
        if use_masks:
            self._fill_masks(ws[5], nb, masks)
        D, G0, G1, E = self._backward_workspace(nb)
        flat = np.zeros_like(self.params)
        value = _k.forward_backward(self.layout, self.act_params, self.params, X, Y, loss_code,
                                    training, eps, self.bn_state, *ws, D, G0, G1, E, flat)
        return value, D, flat

    def gradients(self, X, Y, loss="mse", training=True, dropout_mask=None):
        """Batch-mean loss and its gradient with respect to every parameter and ``h_l``.

        Parameters
        ----------
        X : array_like, shape (batch, n_0)
        Y : array_like, shape (batch, n_L)
        loss : {"mse", "cross_entropy"}
        training : bool
            Training mode (default, what :func:`neurosim.train` differentiates): batch
            statistics for batch norm and dropout; inference mode: running statistics, no
            dropout.
        dropout_mask : sequence of array_like, optional
            Fixed 0/1 masks, as in :meth:`forward`.

        Returns
        -------
        loss : float
        grads : Gradients
        """
        loss_fn = _losses.get(loss)
        X = self._check_X(X)
        Y = check_data("Y", Y, n_features=self.sizes[-1], dtype=self.dtype)
        check_same_batch("X", X, "Y", Y)
        training = _check_bool("training", training)
        masks = self._check_mask(dropout_mask, training, X.shape[0])
        nb = X.shape[0]
        value, D, flat = self._forward_backward(X, Y, loss_fn.code, training, masks)
        deltas = []
        for l in range(self.n_layers):
            start = nb * self.layout[l, _k.UNIT_OFF]
            n = self.sizes[l + 1]
            deltas.append(D[start:start + nb * n].reshape(nb, n))
        slopes = [None if v is None else float(v) for v in
                  (self._slope_view(flat, l) for l in range(self.n_layers))]
        grads = Gradients(
            weights=[self._w_view(flat, l) for l in range(self.n_layers)],
            biases=[self._b_view(flat, l) for l in range(self.n_layers)],
            deltas=deltas,
            slopes=slopes,
            gammas=[self._bn_views(flat, l, 0) for l in range(self.n_layers)],
            betas=[self._bn_views(flat, l, 1) for l in range(self.n_layers)],
            flat=flat,
        )
        return float(value), grads

    def __repr__(self) -> str:
        extras = []
        if self.activation.params:
            extras.append(f"activation_params={self.activation.params}")
        if self.output_activation.name != "linear":
            extras.append(f"output_activation={self.output_activation.name!r}")
        for name in ("residual", "batchnorm"):
            if getattr(self, name):
                extras.append(f"{name}=True")
        if self.dropout:
            extras.append(f"dropout={self.dropout}")
        if self.device != "cpu":
            extras.append(f"device={self.device!r}")
        tail = "".join(", " + e for e in extras)
        return (f"MLP({self.sizes}, activation={self.activation.name!r}, init={self.init!r}, "
                f"sigma_w={self.sigma_w}, sigma_b={self.sigma_b}, seed={self.seed}, "
                f"dtype={self.dtype.name!r}{tail})")
