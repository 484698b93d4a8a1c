"""Training: one entry point, :func:`train`, for MLPs (backprop) and rate networks (rules)."""

from __future__ import annotations

import atexit
import contextlib
import gc
import math
import sys
import types

import numpy as np

from . import losses as _losses
from . import optim as _optim
from ._validation import (
    check_data,
    check_int,
    check_nonnegative,
    check_positive,
    check_same_batch,
)
from .ann import _FORWARD_CHUNK_VALUES, BN_EPS, BN_MOMENTUM, MLP
from .history import History
from .kernels import dense as _dense
from .kernels import losses as _kloss
from .kernels import mlp_train as _kt
from .kernels import sync as _sync
from .tasks import as_task


@atexit.register
def _skip_exit_collections():
    """Freeze the garbage collector's generations when the interpreter exits.

    numba's type system keeps millions of live objects; the collections Python runs while it
    shuts down would traverse them all, about half a second per process (a third of a short
    script's run). Frozen objects are skipped. Python does not promise to finalize objects
    still alive at exit, so this changes nothing a program may rely on.
    """
    gc.freeze()


def train(model, task, *, rule=None, **kwargs) -> History:
    """Train a model on a task and record how the learning signal travels across depth.

    An :class:`~neurosim.ann.MLP` is trained by backpropagation (:func:`train_mlp`; ``rule``
    must be None or ``"backprop"``). Any other model goes to
    :func:`neurosim.rules.train_rate_network` with ``rule`` (default ``"backprop"``).

    Parameters
    ----------
    model : MLP or RateNetwork
    task : Task or (X, Y) tuple
    rule : str, optional
    **kwargs
        Passed on (see :func:`train_mlp` for MLPs).

    Returns
    -------
    History
    """
    if isinstance(model, MLP):
        if rule not in (None, "backprop"):
            raise ValueError(
                f"rule={rule!r} does not apply to an MLP, which trains by backprop; "
                "allowed: None or 'backprop' (other rules train rate networks)"
            )
        return train_mlp(model, task, **kwargs)
    from .rules import train_rate_network

    return train_rate_network(model, task, rule=rule or "backprop", **kwargs)


class _Evaluator:
    """Loss and accuracy of a whole data set in inference mode, in chunks, on ``threads``
    threads (chunk ``c`` on thread ``c % threads``, sums in chunk order: the result does not
    depend on the thread count)."""

    def __init__(self, net, loss_fn, classify, n_max, threads):
        self.net = net
        self.loss_code = loss_fn.code
        self.classify = classify
        self.chunk = min(n_max, max(1, _FORWARD_CHUNK_VALUES // net._units))
        self.threads = threads
        self.ws = [net._workspace(self.chunk, False) for _ in range(threads)]
        self.grad = [np.empty(self.chunk * net.sizes[-1], net.dtype) for _ in range(threads)]
        self.eps = net.dtype.type(BN_EPS)

    def __call__(self, X, Y):
        net = self.net
        starts = range(0, X.shape[0], self.chunk)
        losses = np.zeros(len(starts))
        correct = np.zeros(len(starts), np.int64)

        def work(tid):
            for c in range(tid, len(starts), self.threads):
                xb = X[starts[c]:starts[c] + self.chunk]
                yb = Y[starts[c]:starts[c] + self.chunk]
                out = _dense.mlp_forward(net.layout, net.act_params, net.params, xb, False,
                                         self.eps, net.bn_state, *self.ws[tid])
                grad = self.grad[tid][:out.size].reshape(out.shape)
                losses[c] = _kloss.loss_and_output_grad(self.loss_code, out, yb, grad) * len(xb)
                if self.classify:
                    correct[c] = np.count_nonzero(out.argmax(axis=1) == yb.argmax(axis=1))

        _run_team(self.threads, work)
        n = X.shape[0]
        return float(np.sum(losses)) / n, (correct.sum() / n if self.classify else np.nan)


MIN_SHARD_ROWS = 16  # a minibatch of at least 2 x 16 samples is split in two shards
# Below this many multiply-adds per step (batch x sum of fan_in x fan_out) one thread runs both
# shards: waking a second thread and meeting it at three barriers per step costs more than it
# saves (a 20 x 64 x 64 net on a batch of 32, 2.6 M: 0.5 ms per one-step call on one thread,
# 1.0 ms on two, on the 2-core reference machine; the numbers are the same either way).
MIN_MULTIPLY_ADDS_PER_THREAD = 8_000_000


def default_threads() -> int:
    """Threads used by training: numba's configured thread count (``NUMBA_NUM_THREADS``)."""
    from numba import config

    return max(1, int(config.NUMBA_NUM_THREADS))


def worth_threading(net, batch: int) -> bool:
    """True when a pass of ``net`` over ``batch`` samples has enough multiply-adds
    (``MIN_MULTIPLY_ADDS_PER_THREAD``) for a second thread to save more than it costs."""
    weights = sum(a * b for a, b in zip(net.sizes[:-1], net.sizes[1:], strict=True))
    return batch * weights >= MIN_MULTIPLY_ADDS_PER_THREAD


_POOLS: dict = {}
_BLAS = {}


def _blas_libraries():
    """threadpoolctl's controllers of the loaded BLAS libraries, including the one numba's
    ``np.dot`` calls (empty without threadpoolctl)."""
    if "libs" not in _BLAS:
        try:
            import scipy.linalg.cython_blas  # noqa: F401  (the BLAS numba's np.dot calls)
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _BLAS["libs"] = []
        else:
            _BLAS["libs"] = [lib for lib in ThreadpoolController().lib_controllers
                             if lib.user_api == "blas"]
    return _BLAS["libs"]


@contextlib.contextmanager
def _single_threaded_blas():
    """Context: BLAS on one thread (threads share the work; results independent of it).

    Talks to the libraries directly: ``threadpoolctl.ThreadpoolController.limit`` costs about
    0.1 ms per call, as much as a whole training step of a small network.
    """
    changed = []
    try:
        for lib in _blas_libraries():
            n = lib.get_num_threads()
            if n is not None and n != 1:
                lib.set_num_threads(1)
                changed.append((lib, n))
        yield
    finally:
        for lib, n in changed:
            lib.set_num_threads(n)


def _run_team(n_threads, work, sync=None):
    """Run ``work(tid)`` for tid = 0..n_threads-1, tid 0 on this thread; returns the results.

    ``work`` must spend its time in GIL-free compiled code. When one call raises, ``sync``
    (the kernels' barrier array) is flagged so that the others stop, and the error re-raised.
    """
    if n_threads == 1:
        with _single_threaded_blas():
            return [work(0)]
    from concurrent.futures import ThreadPoolExecutor

    pool = _POOLS.get(n_threads - 1)
    if pool is None:
        pool = _POOLS[n_threads - 1] = ThreadPoolExecutor(n_threads - 1,
                                                          thread_name_prefix="neurosim")

    def guarded(tid):
        try:
            return work(tid)
        except BaseException:
            if sync is not None:
                sync[_sync.SYNC_ABORT] = 1
            raise

    with _single_threaded_blas():
        futures = [pool.submit(guarded, tid) for tid in range(1, n_threads)]
        try:
            first = guarded(0)
        finally:
            results = [f.exception() or f.result() for f in futures]
    for f in futures:
        if f.exception() is not None:
            raise f.exception()
    return [first, *results]


def _entry_point(dispatcher, args):
    """The compiled function a numba dispatcher runs for ``args``, called without the
    dispatcher's per-call typing of every argument (about 20 us for the 45 arguments of the
    training loop, a tenth of a small net's step); the dispatcher itself when there is none."""
    try:
        signature = tuple(dispatcher.typeof_pyval(a) for a in args)
        return dispatcher.overloads[signature].entry_point
    except (KeyError, AttributeError, TypeError, ValueError):
        return dispatcher


def _optional_positive(param, value):
    return None if value is None else check_positive(param, value)


class _MLPTrainerBase:
    """What the CPU and CUDA trainers share: argument checks, the sample order, step and
    divergence bookkeeping and the records."""

    def __init__(self, net, X, Y, optimizer, lr, batch_size, loss, clip_norm, clip_value,
                 weight_decay, record_every, seed, optimizer_params, threads=None):
        if not isinstance(net, MLP):
            raise TypeError(f"net must be a neurosim MLP, got {type(net).__name__}")
        self.optimizer = _optim.get(optimizer, **optimizer_params)
        self.loss = _losses.get(loss)
        self.lr = check_positive("lr", lr)
        batch_size = check_int("batch_size", batch_size, minimum=1)
        self.clip_norm = _optional_positive("clip_norm", clip_norm)
        self.clip_value = _optional_positive("clip_value", clip_value)
        self.weight_decay = check_nonnegative("weight_decay", weight_decay)
        self.record_every = check_int("record_every", record_every, minimum=1)
        seed = check_int("seed", seed, minimum=0)
        self.threads = default_threads() if threads is None else check_int("threads", threads,
                                                                            minimum=1)
        X, Y = _checked_pair(net, X, Y, "X", "Y")
        self.net = net
        self.X = X
        self.Y = Y
        self.batch = min(batch_size, X.shape[0])
        order_seq, *self._dropout_seqs = np.random.SeedSequence(seed).spawn(1 + _kt.MAX_SHARDS)
        self._order_rng = np.random.default_rng(order_seq)
        self.step = 0
        self.diverged = False
        self.diverged_step = None
        self._records = []

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.X.shape[0] / self.batch)

    def _records_this_epoch(self) -> int:
        """Steps of the next epoch that are recorded (steps 0, k, 2k, ... with k record_every)."""
        first = -(-self.step // self.record_every) * self.record_every
        last = self.step + self.steps_per_epoch - 1
        return max(0, (last - first) // self.record_every + 1)

    def _end_epoch(self, done, diverged):
        self.step += done
        if diverged:
            self.diverged = True
            self.diverged_step = self.step
        return done

    def records(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Recorded ``steps``, ``step_loss``, ``grad_norms`` (n, L), ``delta_norms`` (n, L)."""
        L = self.net.n_layers
        if not self._records:
            return (np.zeros(0, np.int64), np.zeros(0), np.zeros((0, L)), np.zeros((0, L)))
        return tuple(np.concatenate(parts) for parts in zip(*self._records, strict=True))

    def sync(self) -> None:
        """Make ``net`` hold the trained parameters (a no-op here: the CPU trains in place)."""


class MLPTrainer(_MLPTrainerBase):
    """Compiled minibatch training of one MLP on one training set, epoch by epoch.

    :func:`train_mlp` drives it; it is also the way to run training one epoch at a time (for
    instance to interleave custom measurements). Buffers (gradient, optimizer state,
    workspaces) are allocated here, once; :meth:`run_epoch` runs every step of an epoch in one
    compiled call.

    Parameters
    ----------
    net : MLP
        Trained in place.
    X, Y : array_like, shapes (n, n_0), (n, n_L)
        Training set (cast to the network's float type).
    optimizer, lr, batch_size, loss, clip_norm, clip_value, weight_decay, record_every, seed,
    threads, **optimizer_params
        As in :func:`train_mlp`.
    shards : {1, 2}
        Parts each minibatch of at least ``2 * MIN_SHARD_ROWS`` samples (without batch norm)
        is split into, default 2. The numbers depend on ``shards`` and never on ``threads``
        (one thread runs two shards one after the other), so a run gives the same numbers on
        any machine and inside any sweep worker. ``shards=1`` computes the whole-batch
        gradient, 10-30% faster on one thread (a whole-batch matrix product beats two
        half-batch ones); for a net worth a second thread (without batch norm) its steps are
        chunked: every layer split by columns into two fixed chunks that the threads share
        (:mod:`neurosim.kernels.chunked`), with the same numbers on one thread or two.

    Attributes
    ----------
    step : int
        Optimizer steps applied so far.
    diverged : bool
    diverged_step : int or None
    shards : int
        Parts each minibatch is actually split into (1 for smaller batches and batch norm).
    chunked : bool
        Whether steps are chunked (``shards == 1``, no batch norm, and a net worth a second
        thread).
    threads : int
        Threads that run the shards or chunks: at most 2 (and at most ``shards`` unless
        chunked), and 1 for a net whose step has fewer than ``MIN_MULTIPLY_ADDS_PER_THREAD``
        multiply-adds (batch x weights), where a second thread costs more than it saves.
    """

    def __init__(self, net, X, Y, optimizer="sgd", lr=0.01, batch_size=32, loss="mse",
                 clip_norm=None, clip_value=None, weight_decay=0.0, record_every=1, seed=0,
                 threads=None, shards=_kt.MAX_SHARDS, **optimizer_params):
        super().__init__(net, X, Y, optimizer, lr, batch_size, loss, clip_norm, clip_value,
                         weight_decay, record_every, seed, optimizer_params, threads)
        shards = _check_shards(shards)
        if net.batchnorm or self.batch < 2 * MIN_SHARD_ROWS:
            shards = 1
        self.shards = shards
        wide = worth_threading(net, self.batch)
        self.chunked = shards == 1 and wide and not net.batchnorm
        self.threads = min(_kt.MAX_CHUNKS if self.chunked else self.shards, self.threads)
        if not wide:
            self.threads = 1
        self._dropout_rngs = ([np.random.default_rng(q) for q in self._dropout_seqs]
                              if net.dropout > 0 else [_kt.NO_RNG] * _kt.MAX_SHARDS)
        dt = net.dtype
        S = self.shards
        rows = -(-self.batch // S)
        self._grads = np.zeros((S, net.n_params), dt)
        self._s1, self._s2 = self.optimizer.init_state(net.n_params, dt)
        self._hyper = self.optimizer.hyper_array(dt)
        self._XB = np.empty((S, rows, net.sizes[0]), dt)
        self._YB = np.empty((S, rows, net.sizes[-1]), dt)
        proto = (*net._workspace(rows, net.dropout > 0), *net._backward_workspace(rows))
        stacked = [np.empty((S, a.size), dt) for a in proto]
        if proto[2] is proto[1]:  # A is U: no layer has a skip or dropout
            stacked[2] = stacked[1]
        self._work = stacked
        self._sync = np.zeros(_sync.SYNC_SIZE, np.int64)
        self._shared = np.zeros(_kt.shared_size(net.n_layers))
        self._bn_eps = dt.type(BN_EPS)
        self._epoch_kernel = _kt.train_epoch  # its compiled entry point after the first call

    def run_epoch(self) -> int:
        """Run one epoch (a fresh random sample order); returns the steps applied.

        Stops early, with :attr:`diverged` set, at a step whose loss, gradient or update is not
        finite; later calls then do nothing.
        """
        if self.diverged:
            return 0
        net = self.net
        n = self.X.shape[0]
        n_rec = self._records_this_epoch()
        L = net.n_layers
        rec = (np.zeros(n_rec, np.int64), np.zeros(n_rec), np.zeros((n_rec, L)),
               np.zeros((n_rec, L)))
        order = self._order_rng.permutation(n).astype(np.int64)
        self._sync[:] = 0

        args = (self._sync, self._shared, net.layout, net.act_params, net.params, self._grads,
                self.X, self.Y, order, self.batch, self.chunked, self.loss.code,
                self.optimizer.code, self.lr, self._hyper, self._s1, self._s2, self.step,
                self.weight_decay,
                self.clip_norm or 0.0, self.clip_value or np.inf, net.dropout,
                *self._dropout_rngs, self._bn_eps, BN_MOMENTUM, net.bn_state, self.record_every,
                *rec, 0, self._XB, self._YB, *self._work)
        kernel = self._epoch_kernel

        def work(tid):
            return kernel(tid, self.threads, *args)

        done, recorded, status = _run_team(self.threads, work, self._sync)[0]
        if kernel is _kt.train_epoch:
            self._epoch_kernel = _entry_point(kernel, (0, self.threads, *args))
        self._records.append(tuple(r[:recorded] for r in rec))
        return self._end_epoch(done, status != 0)

    def evaluator(self, classify, n_max):
        """A callable ``(X, Y) -> (loss, accuracy)`` over whole data sets in inference mode."""
        return _Evaluator(self.net, self.loss, classify, n_max, self.threads)


def _checked_pair(net, X, Y, x_name, y_name):
    X = check_data(x_name, X, n_features=net.sizes[0], dtype=net.dtype)
    Y = check_data(y_name, Y, dtype=net.dtype)
    if Y.shape[1] != net.sizes[-1]:
        raise ValueError(
            f"{y_name} has {Y.shape[1]} columns (shape {Y.shape}) but the network has "
            f"{net.sizes[-1]} outputs"
        )
    check_same_batch(x_name, X, y_name, Y)
    return X, Y


def _check_shards(shards):
    shards = check_int("shards", shards, minimum=1)
    if shards > _kt.MAX_SHARDS:
        raise ValueError(f"shards must be 1 or {_kt.MAX_SHARDS}, got {shards}")
    return shards


def train_mlp(net, task, optimizer="sgd", lr=0.01, epochs=10, batch_size=32, loss="mse",
              clip_norm=None, clip_value=None, weight_decay=0.0, record_every=1, seed=0,
              progress=False, threads=None, shards=_kt.MAX_SHARDS,
              **optimizer_params) -> History:
    """Train an MLP by minibatch backpropagation; the minibatch loop runs in compiled code.

    Parameters
    ----------
    net : MLP
        Trained in place.
    task : Task or (X, Y) tuple
        A tuple is used for both training and test statistics.
    optimizer : str
        sgd, momentum, nesterov, rmsprop, adagrad or adam (:mod:`neurosim.optim`).
    lr : float
        Learning rate, > 0.
    epochs : int
        Passes over the training set, >= 1.
    batch_size : int
        Minibatch size, >= 1 (capped at the training-set size; the last batch of an epoch may
        be smaller).
    loss : {"mse", "cross_entropy"}
    clip_norm : float, optional
        Rescale the gradient when its global Euclidean norm exceeds this.
    clip_value : float, optional
        Clip every gradient entry to ``[-clip_value, clip_value]`` (applied before
        ``clip_norm``).
    weight_decay : float
        L2 penalty coefficient added to the gradient as ``weight_decay * p``.
    record_every : int
        Record the step loss, ``||dL/dW_l||_F`` and batch-mean ``||delta_l||`` every this many
        optimizer steps (steps 0, k, 2k, ...).
    seed : int
        Seed of the sample order and dropout masks.
    progress : bool
        Show a tqdm progress bar over epochs.
    threads : int, optional
        Threads for the compiled loop (default :func:`default_threads`). A minibatch of at
        least 32 samples (without batch norm) is split into ``shards`` parts whose gradients
        are computed concurrently, each thread calling single-threaded BLAS; sums are formed in
        a fixed order, so the numbers never depend on ``threads`` or on BLAS thread settings.
    shards : {1, 2}
        See :class:`MLPTrainer` (default 2; ``shards=1``, the whole-batch gradient, is faster
        on a single thread, splits a wide net's layers by columns between threads, and gives
        slightly different rounding).
        ``threads`` and ``shards`` are checked but unused for a network on
        ``device="cuda"``, which trains on the GPU
        (:class:`neurosim._cuda_models.CudaMLPTrainer`).
    **optimizer_params
        Hyper-parameters of the optimizer (e.g. ``momentum=0.9``, ``beta1=0.9``).

    Returns
    -------
    History
        Per epoch: ``loss``, ``test_loss`` (inference mode, whole sets, after the epoch),
        ``accuracy``, ``test_accuracy`` (NaN for regression). Per record: ``steps``,
        ``step_loss``, ``grad_norms``, ``delta_norms`` (for backprop also ``signal_norms``
        = ``delta_norms``, ``update_norms`` = ``grad_norms``, ``angles`` = 0). A step with a
        NaN or infinite loss, gradient or update ends training: ``diverged`` is True,
        ``diverged_step`` its number, and the parameters keep their last finite values.
    """
    if not isinstance(net, MLP):
        raise TypeError(f"net must be a neurosim MLP, got {type(net).__name__}")
    epochs = check_int("epochs", epochs, minimum=1)
    if not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"progress must be True or False, got {progress!r}")
    task = as_task(task)
    X, Y = _checked_pair(net, task.X_train, task.Y_train, "task.X_train", "task.Y_train")
    X_test, Y_test = _checked_pair(net, task.X_test, task.Y_test, "task.X_test",
                                   "task.Y_test")
    shards = _check_shards(shards)
    trainer_class, extra = MLPTrainer, {"shards": shards}
    if net.device == "cuda":  # parameters, optimizer state and data stay on the device
        from ._cuda_models import CudaMLPTrainer as trainer_class

        extra = {}
    trainer = trainer_class(net, X, Y, optimizer=optimizer, lr=lr, batch_size=batch_size,
                            loss=loss, clip_norm=clip_norm, clip_value=clip_value,
                            weight_decay=weight_decay, record_every=record_every, seed=seed,
                            threads=threads, **extra, **optimizer_params)
    evaluator = trainer.evaluator(task.kind == "classification",
                                  max(X.shape[0], X_test.shape[0]))
    history = {"loss": [], "test_loss": [], "accuracy": [], "test_accuracy": []}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, desc="train", unit="epoch")
    try:
        for _ in range(epochs):
            trainer.run_epoch()
            for key, (Xs, Ys) in (("", (X, Y)), ("test_", (X_test, Y_test))):
                value, acc = evaluator(Xs, Ys)
                history[key + "loss"].append(value)
                history[key + "accuracy"].append(acc)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{history['loss'][-1]:.4g}",
                                test_loss=f"{history['test_loss'][-1]:.4g}")
            if trainer.diverged:
                break
    finally:
        trainer.sync()
        if bar is not None:
            bar.close()
    steps, step_loss, grad_norms, delta_norms = trainer.records()
    return History(
        loss=np.asarray(history["loss"]),
        test_loss=np.asarray(history["test_loss"]),
        accuracy=np.asarray(history["accuracy"]),
        test_accuracy=np.asarray(history["test_accuracy"]),
        steps=steps,
        step_loss=step_loss,
        grad_norms=grad_norms,
        delta_norms=delta_norms,
        signal_norms=delta_norms.copy(),
        update_norms=grad_norms.copy(),
        angles=np.zeros_like(grad_norms),
        diverged=trainer.diverged,
        diverged_step=trainer.diverged_step,
        epochs_run=len(history["loss"]),
        rule="backprop",
    )


class _CallableModule(types.ModuleType):
    """Importing ``neurosim.train`` (the module) rebinds ``neurosim.train`` from the function to
    the module; making the module callable keeps ``ns.train(model, task, ...)`` working."""

    def __call__(self, model, task, *, rule=None, **kwargs) -> History:
        return train(model, task, rule=rule, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
