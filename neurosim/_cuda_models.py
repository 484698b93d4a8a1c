"""The ``device="cuda"`` side of the models: device buffers, training runs and record transfers.

Imported only when a model runs on CUDA (it imports ``numba.cuda``). A training run uploads the
parameters, optimizer state, data and workspaces once; every step then runs on the device, and
only what :class:`~neurosim.history.History` records comes back, one epoch at a time. The trained
parameters are copied into the model's host buffers when the run ends (:meth:`sync`).

Single calls of an MLP (``forward``, ``layer_outputs``, ``gradients``) copy the parameters over,
run on the device and return host arrays; the host buffers stay the parameters' home. (Rate
networks route their single calls through ``neurosim.bio.Backend``.)
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from .kernels.cuda import dense as _gd
from .kernels.cuda import mlp_train as _gt
from .kernels.cuda._launch import BLOCK_1D, grid_1d
from .train import _MLPTrainerBase

# ------------------------------------------------------------------------------------ MLP


def _device_empty(size, dtype):
    return cuda.device_array(size, dtype)


def _mlp_workspace(net, nb, masks):
    """Device twins of ``net._workspace(nb, masks)`` and ``net._backward_workspace(nb)``."""
    return net._workspace(nb, masks, _device_empty), net._backward_workspace(nb, _device_empty)


def _upload_masks(net, ws, nb, training, masks):
    """Dropout masks for a single call: drawn (or taken) on the host as on the CPU, so both
    devices see the same masks, then sent over."""
    if training and net.dropout > 0:
        MK = np.empty(ws[5].shape[0], net.dtype)
        net._fill_masks(MK, nb, masks)
        ws[5].copy_to_device(MK)


def mlp_run_forward(net, X, training, masks, eps):
    """Device twin of ``MLP._run_forward``: (output, host copies of the forward workspaces)."""
    nb = X.shape[0]
    ws, _ = _mlp_workspace(net, nb, training and net.dropout > 0)
    _upload_masks(net, ws, nb, training, masks)
    out = _gd.mlp_forward(net.layout, net.act_params, cuda.to_device(net.params),
                          cuda.to_device(X), training, eps, cuda.to_device(net.bn_state), *ws)
    host = [w.copy_to_host() for w in ws]
    if ws[2] is ws[1]:  # A is U
        host[2] = host[1]
    return out.copy_to_host(), tuple(host)


def mlp_forward_backward(net, X, Y, loss_code, training, masks, eps):
    """Device twin of ``MLP._forward_backward``: (loss, host ``D``, host flat gradient)."""
    nb = X.shape[0]
    ws, back = _mlp_workspace(net, nb, training and net.dropout > 0)
    _upload_masks(net, ws, nb, training, masks)
    grad = cuda.device_array(net.n_params, net.dtype)
    loss = _gd.forward_backward(net.layout, net.act_params, cuda.to_device(net.params),
                                cuda.to_device(X), cuda.to_device(Y), loss_code, training, eps,
                                cuda.to_device(net.bn_state), *ws, *back, grad)
    return float(loss), back[0].copy_to_host(), grad.copy_to_host()


class CudaMLPTrainer(_MLPTrainerBase):
    """Minibatch training of one MLP on the device (the CUDA twin of ``MLPTrainer``).

    Same constructor, checks, sample order and interface as
    :class:`neurosim.train.MLPTrainer` (``threads`` is checked and ignored). Parameters,
    optimizer state, data and workspaces are uploaded once; :meth:`run_epoch` launches every
    step of an epoch without waiting for the device and reads back only the epoch's records
    and status. Dropout masks come from a device generator seeded from the run's seed (so they
    differ from the CPU's). :meth:`sync` copies the trained parameters and batch-norm
    statistics back into ``net`` (:func:`neurosim.train` does at the end).
    """

    def __init__(self, net, X, Y, optimizer="sgd", lr=0.01, batch_size=32, loss="mse",
                 clip_norm=None, clip_value=None, weight_decay=0.0, record_every=1, seed=0,
                 threads=None, **optimizer_params):
        from .ann import BN_EPS

        super().__init__(net, X, Y, optimizer, lr, batch_size, loss, clip_norm, clip_value,
                         weight_decay, record_every, seed, optimizer_params, threads)
        dt = net.dtype
        self.params = cuda.to_device(net.params)
        self.bn_state = cuda.to_device(net.bn_state)
        self._X = cuda.to_device(self.X)
        self._Y = cuda.to_device(self.Y)
        self._grad = cuda.device_array(net.n_params, dt)
        self._s1, self._s2 = (cuda.to_device(s) for s in
                              self.optimizer.init_state(net.n_params, dt))
        self._hyper = self.optimizer.hyper_array(dt)
        self._rng = _gd.device_rng(np.random.default_rng(self._dropout_seqs[0]))
        self._XB = cuda.device_array((self.batch, net.sizes[0]), dt)
        self._YB = cuda.device_array((self.batch, net.sizes[-1]), dt)
        self._ws, self._back = _mlp_workspace(net, self.batch, net.dropout > 0)
        self._work = _gt.train_workspace(net.layout, self.batch, dt)
        self._bn_eps = dt.type(BN_EPS)

    def run_epoch(self) -> int:
        """Run one epoch on the device; returns the steps applied (waits for the device once).

        Stops at a divergent step as :meth:`neurosim.train.MLPTrainer.run_epoch` does.
        """
        from .ann import BN_MOMENTUM

        if self.diverged:
            return 0
        net = self.net
        n_rec = self._records_this_epoch()
        L = net.n_layers
        dt = net.dtype
        rows = max(n_rec, 1)
        rec_steps = np.zeros(n_rec, np.int64)
        rec = (cuda.device_array(rows, dt), cuda.device_array((rows, L), dt),
               cuda.device_array((rows, L), dt))
        order = self._order_rng.permutation(self.X.shape[0]).astype(np.int64)
        done, recorded, status = _gt.train_epoch(
            net.layout, net.act_params, self.params, self._grad, self._X, self._Y, order,
            self.batch, self.loss.code, self.optimizer.code, self.lr, self._hyper, self._s1,
            self._s2, self.step, self.weight_decay, self.clip_norm or 0.0,
            self.clip_value or np.inf, net.dropout, self._rng, self._bn_eps, BN_MOMENTUM,
            self.bn_state, self.record_every, rec_steps, *rec, 0, self._XB, self._YB,
            *self._ws, *self._back, work=self._work)
        loss, grad, delta = (r.copy_to_host()[:recorded].astype(np.float64) for r in rec)
        self._records.append((rec_steps[:recorded], loss, grad, delta))
        return self._end_epoch(done, status != 0)

    def sync(self) -> None:
        """Copy the device parameters and batch-norm statistics into the model's buffers."""
        self.params.copy_to_host(self.net.params)
        if self.net.bn_state.size:
            self.bn_state.copy_to_host(self.net.bn_state)

    def evaluator(self, classify, n_max):
        """A callable ``(X, Y) -> (loss, accuracy)`` in inference mode on the device."""
        return _CudaEvaluator(self, classify, n_max)


class _CudaEvaluator:
    """Loss and accuracy of a whole data set on the device (twin of ``train._Evaluator``)."""

    def __init__(self, trainer, classify, n_max):
        from .ann import _FORWARD_CHUNK_VALUES

        net = trainer.net
        self.trainer = trainer
        self.classify = classify
        self.chunk = min(n_max, max(1, _FORWARD_CHUNK_VALUES // net._units))
        self.ws, _ = _mlp_workspace(net, self.chunk, False)
        self.G0 = cuda.device_array(self.chunk * net.sizes[-1], net.dtype)
        self.work = _gt.train_workspace(net.layout, self.chunk, net.dtype)
        # each data set crosses over once per run; the training set is already there
        self._data = {(id(trainer.X), id(trainer.Y)): (trainer.X, trainer.Y, trainer._X,
                                                       trainer._Y)}

    def _device(self, X, Y):
        key = (id(X), id(Y))
        if key not in self._data:  # the host arrays are kept too, so their ids stay unique
            self._data[key] = (X, Y, cuda.to_device(X), cuda.to_device(Y))
        return self._data[key][2:]

    def __call__(self, X, Y):
        tr = self.trainer
        net = tr.net
        dX, dY = self._device(X, Y)
        return _gt.evaluate(net.layout, net.act_params, tr.params, dX, dY, tr.loss.code,
                            self.classify, tr._bn_eps, tr.bn_state, self.chunk, *self.ws,
                            self.G0, work=self.work)


# ------------------------------------------------------------------------------ rate networks

class _RateRun:
    """Device buffers of one rate-network training run (feedforward network, BP / FA / DFA)."""

    def __init__(self, model, rule, loss_code, feedback, batch, lr_w):
        from .kernels import rules as _kr
        from .kernels.cuda import optim as _go
        from .kernels.cuda import reduce as _gred

        self.model = model
        self.loss_code = loss_code
        dt = model.dtype
        self.mode = {"backprop": _kr.BACKPROP, "feedback_alignment": _kr.FEEDBACK_ALIGNMENT,
                     "direct_feedback_alignment": _kr.DIRECT_FEEDBACK_ALIGNMENT}[rule]
        M, m_off = np.zeros(1, dt), np.zeros(model.n_layers, np.int64)
        if feedback is not None:
            M = np.ascontiguousarray(np.concatenate([m.ravel() for m in feedback]), dtype=dt)
            m_off = np.cumsum([0] + [m.size for m in feedback[:-1]]).astype(np.int64)
        self.M, self.m_off = cuda.to_device(M), m_off
        self.params = cuda.to_device(model._params)
        self.vel = cuda.to_device(np.zeros(model.n_params, dt))
        self.lo, self.hi = cuda.to_device(model._lo), cuda.to_device(model._hi)
        self.lr_w = lr_w
        units = sum(model.sizes[1:])
        self.H = cuda.device_array(batch * units, dt)
        self.R = cuda.device_array(batch * units, dt)
        self.delta = cuda.device_array(batch * units, dt)
        self.signals = cuda.device_array(batch * units, dt) if rule != "backprop" else None
        self.G = cuda.device_array(model.n_params, dt)
        self.U = cuda.device_array(model.n_params, dt) if rule != "backprop" else self.G
        self.E = cuda.device_array((batch, model.sizes[-1]), dt)
        self.XB = cuda.device_array((batch, model.sizes[0]), dt)
        self.YB = cuda.device_array((batch, model.sizes[-1]), dt)
        self.control = _go.new_control(dt)
        self.status = _go.new_status()
        self.sumsq_work = cuda.device_array((2, _go.SUMSQ_PARTS), dt)
        self.loss_work = cuda.device_array(batch, dt)
        self.scratch_loss = cuda.device_array(1, dt)
        w_off = np.asarray(model._w_off, np.int64)
        w_size = np.array([a * b for a, b in zip(model.sizes[:-1], model.sizes[1:],
                                                 strict=True)], np.int64)
        self.w_starts, self.w_stops = cuda.to_device(w_off), cuda.to_device(w_off + w_size)
        self.seg_work = _gred.segment_workspace(model.n_layers)
        self.unit_work = cuda.device_array((2 * model.n_layers, _gred.SEGMENT_PARTS), dt)
        self.row_work = cuda.device_array((model.n_layers, batch), dt)
        self.widths = cuda.to_device(np.asarray(model.sizes[1:], np.int64))
        self.state_starts = {}

    def starts(self, nb):
        if nb not in self.state_starts:
            from .kernels.cuda.rate import state_offsets

            self.state_starts[nb] = cuda.to_device(state_offsets(self.model._sizes, nb)[:-1])
        return self.state_starts[nb]


def _out_view(R, model, nb):
    n_L = model.sizes[-1]
    return R[R.shape[0] - nb * n_L:].reshape((nb, n_L))


def _rate_eval(run, X, Y, classify, chunk=4096):
    """(mean loss, accuracy) at the fixed point of a whole device data set (twin of _evaluate)."""
    from .kernels.cuda import losses as _gl
    from .kernels.cuda import rate as _gr

    m = run.model
    n = X.shape[0]
    n_chunks = math.ceil(n / chunk)
    losses = cuda.device_array(n_chunks, m.dtype)
    hits = cuda.to_device(np.zeros(1, np.int64))
    sizes = []
    units = sum(m.sizes[1:])
    H = cuda.device_array(min(chunk, n) * units, m.dtype)
    R = cuda.device_array(min(chunk, n) * units, m.dtype)
    for k, start in enumerate(range(0, n, chunk)):
        nb = min(chunk, n - start)
        Hc, Rc = H[:nb * units], R[:nb * units]
        _gr.feedforward(m.activation.code, m._ap, run.params, m._w_off, m._b_off, m._sizes,
                        X[start:start + nb], Hc, Rc)
        out = _out_view(Rc, m, nb)
        grad = cuda.device_array(out.shape, m.dtype)
        _gl.loss_and_output_grad(run.loss_code, out, Y[start:start + nb], grad, loss_out=losses,
                                 index=k)
        if classify:
            _gt._argmax_match_kernel[grid_1d(nb), BLOCK_1D](out, Y[start:start + nb], hits)
        sizes.append(nb)
    total = float(np.sum(losses.copy_to_host().astype(np.float64) * np.asarray(sizes, float)))
    acc = int(hits.copy_to_host()[0]) / n if classify else np.nan
    return total / n, acc


def _angles(minus, plus, nu, ng):
    """Degrees between update and gradient, ``2 atan2(|u' - g'|, |u' + g'|)`` of the unit
    vectors as on the CPU (NaN where a norm is 0 or not finite)."""
    out = np.degrees(2.0 * np.arctan2(minus, plus))
    bad = (nu == 0) | (ng == 0) | ~np.isfinite(nu) | ~np.isfinite(ng)
    out[bad] = np.nan
    return out


def train_rate_network(model, task, *, rule, lr, epochs, batch_size, loss, seed, record_every,
                       progress, momentum, rule_params):
    """Device twin of :func:`neurosim.rules.train_rate_network` (arguments already checked).

    Feedforward networks (``feedback=None``) with backprop, feedback alignment or direct
    feedback alignment; returns the same :class:`~neurosim.history.History`. Parameters,
    velocities, feedback matrices, data and workspaces stay on the device for the whole run; a
    step launches its kernels without waiting, divergence is decided on the device, and the
    records and the run's status come back once per epoch.
    """
    from .history import History
    from .kernels.cuda import losses as _gl
    from .kernels.cuda import optim as _go
    from .kernels.cuda import rate as _gr
    from .kernels.cuda import reduce as _gred
    from .kernels.cuda import rules as _gru
    from .rules import LOSSES

    Xtr, Ytr, Xte, Yte, kind = task
    dt = model.dtype
    feedback = None
    if rule != "backprop":
        feedback = model.feedback_matrices(rule, rule_params["feedback_scale"])
    rng = np.random.default_rng(seed)
    n = Xtr.shape[0]
    batch = min(batch_size, n)
    run = _RateRun(model, rule, LOSSES[loss], feedback, batch, np.asarray(lr))
    dXtr, dYtr, dXte, dYte = (cuda.to_device(a) for a in (Xtr, Ytr, Xte, Yte))
    L = model.n_layers
    classify = kind == "classification"
    per_epoch = {k: [] for k in ("loss", "test_loss", "accuracy", "test_accuracy")}
    parts = []  # per epoch: steps, loss, gn, dn, sn, un, dots
    step = 0
    diverged, diverged_step = False, None
    code, ap, sizes = model.activation.code, model._ap, model._sizes
    w_off, b_off = model._w_off, model._b_off
    epoch_iter = range(epochs)
    if progress:
        from tqdm.auto import tqdm

        epoch_iter = tqdm(epoch_iter, desc=f"{rule}", unit="epoch")
    for _epoch in epoch_iter:
        order = rng.permutation(n).astype(np.int64)
        dorder = cuda.to_device(order)
        n_rec = sum(1 for s in range(step, step + math.ceil(n / batch)) if s % record_every == 0)
        rows = max(n_rec, 1)
        rec_loss = cuda.device_array(rows, dt)
        rec = {k: cuda.device_array((rows, L), dt)
               for k in ("gn", "dn", "sn", "un", "minus", "plus")}
        rec_steps = []
        for start in range(0, n, batch):
            nb = min(batch, n - start)
            xb, yb = run.XB[:nb], run.YB[:nb]
            _gt._gather_kernel[grid_1d(nb * (xb.shape[1] + yb.shape[1])), BLOCK_1D](
                dXtr, dYtr, dorder, start, xb, yb)
            units = nb * sum(model.sizes[1:])
            H, R = run.H[:units], run.R[:units]
            _gr.feedforward(code, ap, run.params, w_off, b_off, sizes, xb, H, R)
            out = _out_view(R, model, nb)
            E = run.E[:nb]
            recording = step % record_every == 0
            r = len(rec_steps)
            if recording or rule == "backprop":
                losses, li = (rec_loss, r) if recording else (run.scratch_loss, 0)
                _gl.loss_and_output_grad(run.loss_code, out, yb, E, loss_out=losses, index=li,
                                         work=run.loss_work[:nb])
                _gru.backward(code, ap, run.params, w_off, b_off, sizes, run.M, run.m_off,
                              _gru.BACKPROP, xb, H, R, E, run.delta[:units], run.G)
            signals = run.delta[:units]
            if rule != "backprop":
                if not recording:
                    _gl.loss_and_output_grad(run.loss_code, out, yb, E,
                                             loss_out=run.scratch_loss, index=0,
                                             work=run.loss_work[:nb])
                signals = run.signals[:units]
                _gru.backward(code, ap, run.params, w_off, b_off, sizes, run.M, run.m_off,
                              run.mode, xb, H, R, E, signals, run.U)
            if recording:
                seg = (run.w_starts, run.w_stops)
                _gred.segment_sumsq(run.G, *seg, rec["gn"], index=r, work=run.seg_work)
                _gred.segment_sumsq(run.U, *seg, rec["un"], index=r, work=run.seg_work)
                _gred.segment_unit_distances(run.U, run.G, *seg, rec["un"], rec["gn"],
                                             rec["minus"], rec["plus"], index=r,
                                             work=run.unit_work)
                starts = run.starts(nb)
                _gt._delta_norms(run.delta[:units], starts, run.widths, nb, rec["dn"], r,
                                 run.row_work, None, 0)
                _gt._delta_norms(signals, starts, run.widths, nb, rec["sn"], r, run.row_work,
                                 None, 0)
                rec_steps.append(step)
            _go.clipped_sumsq(run.U, np.inf, control=run.control, work=run.sumsq_work)
            _go.stop_unless_finite(run.control, run.status, step)
            _gru.apply_update(run.params, run.U, run.vel, momentum, run.lr_w, run.lr_w, w_off,
                              b_off, sizes, run.lo, run.hi, model.bound_mode == "soft", True,
                              status=run.status)
            step += 1
        status = run.status.copy_to_host()
        keep = len(rec_steps)
        if status[_go.STOP]:
            diverged, diverged_step = True, int(status[_go.STOP_STEP])
            keep = sum(1 for s in rec_steps if s <= diverged_step)
            step = diverged_step
        host = {k: v.copy_to_host()[:keep].astype(np.float64) for k, v in rec.items()}
        parts.append((np.asarray(rec_steps[:keep], np.int64),
                      rec_loss.copy_to_host()[:keep].astype(np.float64), host))
        if diverged:
            break
        tr_loss, tr_acc = _rate_eval(run, dXtr, dYtr, classify)
        te_loss, te_acc = _rate_eval(run, dXte, dYte, classify)
        for key, value in zip(("loss", "test_loss", "accuracy", "test_accuracy"),
                              (tr_loss, te_loss, tr_acc, te_acc), strict=True):
            per_epoch[key].append(value)
        if not np.isfinite(tr_loss):
            diverged, diverged_step = True, step
            break
    run.params.copy_to_host(model._params)

    def cat(key):
        arrays = [p[2][key] for p in parts]
        return np.concatenate(arrays) if arrays else np.zeros((0, L))

    gn, un = cat("gn"), cat("un")
    steps = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    step_loss = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0)
    return History(
        loss=np.asarray(per_epoch["loss"], dtype=np.float64),
        test_loss=np.asarray(per_epoch["test_loss"], dtype=np.float64),
        accuracy=np.asarray(per_epoch["accuracy"], dtype=np.float64),
        test_accuracy=np.asarray(per_epoch["test_accuracy"], dtype=np.float64),
        steps=steps,
        step_loss=step_loss,
        grad_norms=gn,
        delta_norms=cat("dn"),
        signal_norms=cat("sn"),
        update_norms=un,
        angles=_angles(cat("minus"), cat("plus"), un, gn),
        diverged=diverged,
        diverged_step=diverged_step,
        epochs_run=len(per_epoch["loss"]),
        rule=rule,
    )
